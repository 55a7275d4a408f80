"""The GitLab fan-out child pipeline, run for real with gitlab-ci-local's shell executor.

A repository with a dependency chain c1 <- c2 <- c3 and an independent stack x:
``gitops-push fan-out --platform gitlab --for apply`` writes the child pipeline, which
includes ci-templates/gitlab/gitops-push-fan-out-jobs.gitlab-ci.yml as a project would.
gitlab-ci-local runs it: one job per stack (concurrently where the DAG allows), then
``gitops-push:summary``. Each stack's Terraform appends its name to a log when it is
created, so the log shows the order; the audit trail must verify afterwards and show
one deployment of four jobs.

Each job applies the plans the parent's ``gitops-push:plan`` saved (``--plan-dir``),
never a plan of its own. On GitLab they arrive as that job's artifacts through
``needs: [{pipeline: $PARENT_PIPELINE_ID, job: gitops-push:plan}]``; gitlab-ci-local
runs one pipeline and ignores ``needs:pipeline`` ("pipeline key not supported"), so
these tests emulate the download: the test runs ``gitops-push plan --plan-dir`` as the
parent's plan job, and a test-only ``before_script`` step copies those plans to
``$GITOPS_PUSH_PLAN_DIR`` in each apply job before the shipped set-up runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_templates import (
    TEMPLATES,
    VENV_BIN,
    git,
    gitlab_ci_local,
    load_yaml,
    node,
    node_tools,
    run,
)

__all__ = ["gitlab_ci_local", "node", "node_tools"]  # fixtures used by name below

JOBS_FILE = TEMPLATES / "gitlab" / "gitops-push-fan-out-jobs.gitlab-ci.yml"
STACK_TF = """\
terraform {{
  backend "local" {{
    path = "{state}"
  }}
}}

resource "terraform_data" "app" {{
  input = "{name}"
  provisioner "local-exec" {{
    command = "sleep {delay}; echo {name} >> {order}"
  }}
}}
"""
CHAIN = {"c1": [], "c2": ["c1"], "c3": ["c2"], "x": []}


ENV_DROP = ("GITOPS_PUSH_", "CI_", "GITLAB_", "GITHUB_")
PARENT_CI = {"GITLAB_CI": "true", "CI_PIPELINE_ID": "321", "CI_DEFAULT_BRANCH": "main",
             "CI_COMMIT_BRANCH": "main", "CI_PIPELINE_SOURCE": "push"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_DROP) and k != "CI"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    return env


def _project(tmp_path: Path, include: bool) -> tuple[Path, Path, Path]:
    """The project (pushed to its origin) with the four stacks; the order log."""
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not installed")
    origin, repo = tmp_path / "origin.git", tmp_path / "project"
    state, order = tmp_path / "state", tmp_path / "order.log"
    state.mkdir()
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(repo, "remote", "add", "origin", str(origin))
    if include:
        (repo / "ci").mkdir()
        shutil.copy(JOBS_FILE, repo / "ci" / JOBS_FILE.name)
    lines = ["version: 1", "stacks:"]
    for name, deps in CHAIN.items():
        lines += [f"  - name: {name}", f"    path: stacks/{name}", "    type: terraform"]
        lines += [f"    depends_on: [{', '.join(deps)}]"] if deps else []
        (repo / "stacks" / name).mkdir(parents=True)
        # c1 is the slowest: c2 must still wait for it while x finishes early
        (repo / "stacks" / name / "main.tf").write_text(STACK_TF.format(
            state=state / f"{name}.tfstate", name=name, order=order,
            delay=3 if name == "c1" else 0))
    (repo / "gitops-push.yaml").write_text("\n".join(lines) + "\n")
    (repo / ".gitignore").write_text(".gitlab-ci-local/\n.terraform/\n.terraform.lock.hcl\n"
                                     "/gitops-push-fan-out.yml\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "Four stacks")
    git(repo, "push", "-q", "origin", "main")
    return repo, origin, order


def _parent_plan(repo: Path, plans: Path) -> str:
    """The parent pipeline's gitops-push:plan: saves the plans reviewers approve."""
    res = run([str(VENV_BIN / "gitops-push"), "plan", "--plan-dir", str(plans)], cwd=repo,
              env={**_env(), **PARENT_CI}, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(p.name for p in plans.iterdir()) == sorted(CHAIN)
    return res.stdout + res.stderr


def _run_child(gcl: Path, repo: Path, tmp_path: Path, include: bool, plans: Path
               ) -> subprocess.CompletedProcess[str]:
    """The parent's fan-out job writes the child pipeline (pipeline 321), and
    gitlab-ci-local runs it, with the parent's saved plans in each apply job."""
    env = _env()
    flags = ["--include", f"ci/{JOBS_FILE.name}"] if include else []
    gen = run([str(VENV_BIN / "gitops-push"), "fan-out", "--platform", "gitlab", "--for",
               "apply", *flags, "--out", "gitops-push-fan-out.yml"], cwd=repo,
              env={**env, **PARENT_CI})
    assert gen.returncode == 0, gen.stderr
    child = repo / "gitops-push-fan-out.yml"
    doc = yaml.safe_load(child.read_text())
    # Test only: the shell executor instead of Docker (as the template test does) ...
    if include:
        doc[".gitops-push-fan-out-job"] = {"image": None}
    else:
        assert doc[".gitops-push-fan-out-job"]["image"] == "python:3.12-slim"
        doc[".gitops-push-fan-out-job"]["image"] = None
    # ... and the download of the parent plan job's artifacts, emulated (see the top):
    # the copy runs first, then the shipped set-up.
    shipped = load_yaml(JOBS_FILE)[".gitops-push-fan-out-job"]["before_script"]
    copy = ('mkdir -p "$GITOPS_PUSH_PLAN_DIR" && '
            'cp -R "$TEST_PARENT_PLANS"/. "$GITOPS_PUSH_PLAN_DIR"/')
    doc.setdefault(".gitops-push-fan-out-apply", {})["before_script"] = [copy, *shipped]
    child.write_text(yaml.safe_dump(doc, sort_keys=False))
    git(repo, "checkout", "-q", "--detach")  # as a runner checks out

    home = tmp_path / "gcl-home"
    home.mkdir(exist_ok=True)
    variables = {"GITLAB_CI": "true", "CI_DEFAULT_BRANCH": "main", "CI_COMMIT_BRANCH": "main",
                 "CI_COMMIT_REF_NAME": "main", "CI_PIPELINE_SOURCE": "parent_pipeline",
                 "CI_PROJECT_ID": "42", "GITOPS_PUSH_PIP_SPEC": "",
                 "PARENT_PIPELINE_ID": "321", "TEST_PARENT_PLANS": str(plans)}
    cmd = [str(gcl), "--home", str(home), "--no-color",
           "--json-schema-validation=false", "--file", "gitops-push-fan-out.yml",
           "--shell-isolation", "--no-artifacts-to-source"]
    for k, v in variables.items():
        cmd += ["--variable", f"{k}={v}"]
    listed = run([*cmd, "--list-json"], cwd=repo, env=env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    names = [j["name"] for j in json.loads(listed.stdout)]
    assert sorted(names) == ["apply c1", "apply c2", "apply c3", "apply x",
                             "gitops-push:summary"]
    return run(cmd, cwd=repo, env=env, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("include", [False, True], ids=["embedded-jobs", "included-jobs"])
def test_the_child_pipeline_applies_each_stack_in_its_own_job_in_order(
        tmp_path: Path, gitlab_ci_local: Path, include: bool) -> None:
    """``include``: the project keeps a copy of the jobs file and fan-out includes it (as
    the fan-out template does); otherwise fan-out embeds the shipped definitions."""
    repo, origin, order = _project(tmp_path, include)
    env = _env()
    plans = tmp_path / "parent-plans"
    _parent_plan(repo, plans)
    assert not order.exists()  # planning applied nothing

    res = _run_child(gitlab_ci_local, repo, tmp_path, include, plans)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert order.read_text().split().index("c1") < order.read_text().split().index("c2") \
        < order.read_text().split().index("c3"), order.read_text()
    assert sorted(order.read_text().split()) == ["c1", "c2", "c3", "x"]
    # Every job applied its stack's saved plan, and planned nothing itself.
    for name in CHAIN:
        assert f"[{name}] load plan" in out, out
        assert f"[{name}] plan\n" not in out and f"[{name}] lint\n" not in out, out

    # The trail, read from a fresh clone of origin: it verifies, and the four jobs
    # are one deployment (the parent pipeline's id) with every stack applied.
    clone = tmp_path / "reader"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    gp = [str(VENV_BIN / "gitops-push"), "-C", str(clone)]
    verify = run([*gp, "audit", "verify", "--output", "json"], env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["data"]["records"] == 8
    log = json.loads(run([*gp, "audit", "log", "--output", "json"], env=env).stdout)
    (entry,) = log["data"]["runs"]
    assert entry["deployment_id"] == "321" and len(entry["runs"]) == 4
    assert {s["name"]: s["result"] for s in entry["stacks"]} == dict.fromkeys(CHAIN, "applied")
    assert "gitops-push:summary" in out and "4 of 4 stack(s) succeeded" in out


@pytest.mark.slow
def test_a_child_job_refuses_a_stale_or_missing_saved_plan(
        tmp_path: Path, gitlab_ci_local: Path) -> None:
    """The plans were saved at one commit; the child pipeline runs at the next (x
    changed), and x's plan never arrived: every job refuses with exit code 1, nothing is
    planned again or applied. (gitlab-ci-local ends the pipeline at the failed stage, so
    the summary job is not run here; the summary of failed jobs is test_deployment's.)"""
    repo, _origin, order = _project(tmp_path, include=False)
    plans = tmp_path / "parent-plans"
    _parent_plan(repo, plans)
    shutil.rmtree(plans / "x")
    main_tf = repo / "stacks" / "x" / "main.tf"
    main_tf.write_text(main_tf.read_text() + "# changed after the plan\n")
    git(repo, "commit", "-qam", "Change x after the plan")
    git(repo, "push", "-q", "origin", "main")

    res = _run_child(gitlab_ci_local, repo, tmp_path, False, plans)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert not order.exists(), order.read_text()  # nothing applied
    assert "stack 'c1': the saved plan was made at commit" in out, out
    assert "no saved plan for stack 'x' in .gitops-push/plans" in out, out
    assert "[c1] load plan" in out and "[c1] plan\n" not in out and "[x] plan\n" not in out
    # both jobs exit 1 (a stack failed); c2 and c3 need c1's job: they never start
    for job in ("apply c1", "apply x"):
        assert re.search(rf"^{job} +finished in [0-9.]+ m?s +FAIL 1 *$", out, re.M), out
    assert "[c2]" not in out and "[c3]" not in out, out
