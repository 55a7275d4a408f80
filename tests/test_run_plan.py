"""Run orchestration details: per-phase credentials, selection, and runs without origin."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import GitRepo

from gitops_push import config
from gitops_push.cli.app import run
from gitops_push.run.context import phase_env, phase_secrets

CREDS = """version: 1
stacks:
  - name: app
    path: app
    type: terraform
    terraform:
      env: [TF_VAR_region]
    credentials:
      plan:
        env: {AWS_ROLE_ARN: PLAN_ROLE_ARN}
      apply:
        env: {AWS_ROLE_ARN: DEPLOY_ROLE_ARN, TF_VAR_db_password: DB_PASSWORD}
"""
ENVIRON = {"PATH": "/usr/bin", "HOME": "/home/ci", "PLAN_ROLE_ARN": "arn:read-only",
           "DEPLOY_ROLE_ARN": "arn:deployer", "DB_PASSWORD": "s3cr3t-value",
           "TF_VAR_region": "eu-west-1", "GITHUB_TOKEN": "ghs_never_passed",
           "AWS_SECRET_ACCESS_KEY": "god-mode-key"}


def stack() -> config.Stack:
    return config.parse(CREDS).stacks[0].stack


def test_plan_gets_only_the_plan_credentials() -> None:
    env, secrets = phase_env(stack(), "plan", ENVIRON)
    assert env == {"PATH": "/usr/bin", "HOME": "/home/ci", "TF_VAR_region": "eu-west-1",
                   "AWS_ROLE_ARN": "arn:read-only"}
    assert "arn:read-only" in secrets and "s3cr3t-value" not in env.values()


def test_apply_gets_only_the_apply_credentials() -> None:
    env, secrets = phase_env(stack(), "apply", ENVIRON)
    assert env["AWS_ROLE_ARN"] == "arn:deployer"
    assert env["TF_VAR_db_password"] == "s3cr3t-value"
    assert "s3cr3t-value" in secrets
    assert "GITHUB_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env


def test_secrets_are_credentials_and_env_values_never_a_kubeconfig_path() -> None:
    """A kubeconfig path, a cache directory or a namespace is not a secret: masking one
    masked parts of object names (issue 11). The kubeconfig's credentials are."""
    cfg = config.parse(
        "version: 1\nstacks:\n  - name: app\n    path: app\n    type: kubernetes\n"
        "    kubernetes:\n      kubeconfig_env: APP_KUBECONFIG\n      env: [AWS_PROFILE]\n"
        "    credentials:\n      apply:\n        env: {KUBECONFIG: DEPLOY_KUBECONFIG,"
        " API_TOKEN: DEPLOY_TOKEN}\n")
    environ = {"PATH": "/usr/bin", "APP_KUBECONFIG": "/ci/team-b/kubeconfig",
               "KUBECONFIG": "/home/ci/.kube/config", "KUBECACHEDIR": "/tmp/team-b",
               "DEPLOY_KUBECONFIG": "/ci/deploy/kubeconfig", "DEPLOY_TOKEN": "tok-0123456789",
               "AWS_PROFILE": "deployer-profile"}
    s = cfg.stacks[0].stack
    assert phase_secrets(s, "plan", environ) == {"deployer-profile": "$AWS_PROFILE"}
    env, values = phase_env(s, "apply", environ)
    assert env["KUBECONFIG"] == "/ci/deploy/kubeconfig" and env["API_TOKEN"] == "tok-0123456789"
    assert set(values) == {"deployer-profile", "tok-0123456789"}
    assert phase_secrets(s, "apply", environ)["tok-0123456789"] == "$DEPLOY_TOKEN"


def test_drift_uses_the_plan_credentials_by_default() -> None:
    env, _ = phase_env(stack(), "drift", ENVIRON)
    assert env["AWS_ROLE_ARN"] == "arn:read-only"


@pytest.mark.slow
def test_apply_without_an_origin_records_locally(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({".gitignore": "*.tfstate*\n.terraform*\n",
                   "gitops-push.yaml": "version: 1\nstacks:\n  - {name: a, path: a, "
                                       "type: terraform}\n",
                   "a/main.tf": 'resource "terraform_data" "r" {\n  input = "1"\n}\n'})
    r.git("remote", "remove", "origin")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = run(["-C", str(r.path), "apply", "--output", "json"])
    assert code == 0
    envelope = json.loads(out.getvalue())
    assert envelope["data"]["audit"]["pushed"] is True
    assert "local ref only" in envelope["data"]["audit"]["message"]
    assert r.git("rev-parse", "--verify", "refs/heads/gitops-push/audit")


def test_a_huge_yaml_file_is_refused_naming_it() -> None:
    from gitops_push.config import yamlsafe
    from gitops_push.errors import ParseError

    with pytest.raises(ParseError) as info:
        yamlsafe.compose_all(b"a: " + b"x" * (yamlsafe.MAX_BYTES + 1), "big.yaml")
    assert info.value.path == "big.yaml" and "too large" in info.value.message


# -- CPU sharing between stacks that run at once --------------------------------------------
def test_run_width_is_the_widest_wave_capped_by_parallel() -> None:
    from gitops_push.config import Stack
    from gitops_push.detect.changes import StackChange
    from gitops_push.run.waves import run_width

    def change(name: str, wave: int) -> StackChange:
        return StackChange(Stack(name, name, "terraform"), "changed", wave=wave)

    waves = [change("net", 1), change("a", 2), change("b", 2), change("c", 2)]
    assert run_width(waves, parallel=8) == 3
    assert run_width(waves, parallel=2) == 2
    assert run_width(waves[:1], parallel=8) == 1
    assert run_width([], parallel=4) == 1


def test_go_tools_share_the_cpus_only_when_stacks_run_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from gitops_push.run.waves import go_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert go_threads(1, {}) == {}  # one stack at a time: no limit
    assert go_threads(2, {}) == {"GOMAXPROCS": "4"}
    assert go_threads(16, {}) == {"GOMAXPROCS": "1"}
    assert go_threads(4, {"GOMAXPROCS": "8"}) == {}  # the user's setting wins


@pytest.mark.slow
def test_terraform_gets_a_cpu_share_when_stacks_plan_side_by_side(
        make_repo: Callable[..., GitRepo], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    import os
    import shutil

    log = tmp_path / "calls.log"
    wrapper = tmp_path / "tf-logged"
    wrapper.write_text(f'#!/bin/sh\necho "$1 ${{GOMAXPROCS-unset}}" >> {log}\n'
                       f'exec {shutil.which("terraform")} "$@"\n')
    wrapper.chmod(0o755)
    r = make_repo({".gitignore": "*.tfstate*\n.terraform*\n",
                   "gitops-push.yaml": "version: 1\nstacks:\n"
                                       "  - {name: a, path: a, type: terraform}\n"
                                       "  - {name: b, path: b, type: terraform}\n",
                   "a/main.tf": 'resource "terraform_data" "r" {\n  input = "1"\n}\n',
                   "b/main.tf": 'resource "terraform_data" "r" {\n  input = "2"\n}\n'})
    monkeypatch.setenv("GITOPS_PUSH_TERRAFORM_BIN", str(wrapper))
    monkeypatch.delenv("GOMAXPROCS", raising=False)

    def plans(parallel: str) -> set[str]:
        log.write_text("")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert run(["-C", str(r.path), "plan", "--all", "--parallel", parallel,
                        "--output", "json"]) == 0
        return {line.split()[1] for line in log.read_text().splitlines()
                if line.startswith("plan ")}

    assert plans("2") == {str(max(1, (os.cpu_count() or 1) // 2))}
    assert plans("1") == {"unset"}


# -- one stack's syntax error fails that stack only (issue 12) --------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("command", ["lint", "plan"])
def test_a_syntax_error_fails_its_stack_and_the_others_still_run(
        make_repo: Callable[..., GitRepo], tmp_path: Path, command: str) -> None:
    good = ('module "m" {\n  source = "../mod"\n}\n'
            'resource "terraform_data" "r" {\n  input = "1"\n}\n')
    r = make_repo({".gitignore": "*.tfstate*\n.terraform*\n",
                   "gitops-push.yaml": "version: 1\nstacks:\n"
                                       "  - {name: app, path: app, type: terraform}\n"
                                       "  - {name: db, path: db, type: terraform}\n",
                   "app/main.tf": good, "db/main.tf": good,
                   "mod/main.tf": 'resource "terraform_data" "m" {}\n'})
    base = r.head()
    r.commit("typo", {"db/main.tf": good.replace('"1"\n', '"1\n'),
                      "app/main.tf": good.replace('"1"', '"2"')})
    md = tmp_path / "summary.md"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(["-C", str(r.path), command, "--base", base, "--summary-md", str(md),
                    "--output", "json"])
    assert code == 1, err.getvalue()
    envelope = json.loads(out.getvalue())
    rows = {s["name"]: s for s in envelope["data"]["stacks"]}
    assert rows["db"]["result"] == "lint-failed" and "db/main.tf:5" in rows["db"]["message"]
    assert rows["app"]["result"] == ("clean" if command == "lint" else "planned")
    assert "`db`" in md.read_text() and "`app`" in md.read_text()
    assert any("db/main.tf:5" in w for w in envelope["warnings"])

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert run(["-C", str(r.path), "changed", "--base", base, "--output", "json"]) == 0
    assert [s["name"] for s in json.loads(out.getvalue())["data"]["stacks"]] == ["app", "db"]
