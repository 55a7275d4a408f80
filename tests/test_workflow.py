"""Run orchestration details: per-phase credentials, selection, and runs without origin."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable

import pytest
from conftest import GitRepo

from gitops_push import config
from gitops_push.cli import run
from gitops_push.workflow import phase_env

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
    from gitops_push import yamlsafe
    from gitops_push.errors import ParseError

    with pytest.raises(ParseError) as info:
        yamlsafe.compose_all(b"a: " + b"x" * (yamlsafe.MAX_BYTES + 1), "big.yaml")
    assert info.value.path == "big.yaml" and "too large" in info.value.message
