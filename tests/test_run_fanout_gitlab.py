"""The GitLab fan-out child pipeline, run for real with gitlab-ci-local's shell executor.

A repository with a dependency chain c1 <- c2 <- c3 and an independent stack x:
``gitops-push fan-out --platform gitlab --for apply`` writes the child pipeline, which
includes ci-templates/gitlab/gitops-push-fan-out-jobs.gitlab-ci.yml as a project would.
gitlab-ci-local runs it: one job per stack (concurrently where the DAG allows), then
``gitops-push:summary``. Each stack's Terraform appends its name to a log when it is
created, so the log shows the order; the audit trail must verify afterwards and show
one deployment of four jobs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_templates import TEMPLATES, VENV_BIN, git, gitlab_ci_local, node, node_tools, run

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


@pytest.mark.slow
@pytest.mark.parametrize("include", [False, True], ids=["embedded-jobs", "included-jobs"])
def test_the_child_pipeline_applies_each_stack_in_its_own_job_in_order(
        tmp_path: Path, gitlab_ci_local: Path, include: bool) -> None:
    """``include``: the project keeps a copy of the jobs file and fan-out includes it (as
    the fan-out template does); otherwise fan-out embeds the shipped definitions."""
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

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITOPS_PUSH_", "CI_", "GITLAB_", "GITHUB_")) and k != "CI"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    # The parent pipeline's fan-out job (pipeline 321) writes the child pipeline.
    flags = ["--include", f"ci/{JOBS_FILE.name}"] if include else []
    gen = run([str(VENV_BIN / "gitops-push"), "fan-out", "--platform", "gitlab", "--for",
               "apply", *flags, "--out", "gitops-push-fan-out.yml"], cwd=repo,
              env={**env, "GITLAB_CI": "true", "CI_PIPELINE_ID": "321",
                   "CI_DEFAULT_BRANCH": "main"})
    assert gen.returncode == 0, gen.stderr
    child = repo / "gitops-push-fan-out.yml"
    # Test only: the shell executor instead of Docker (as the template test does).
    text = child.read_text()
    if include:
        text += "\n.gitops-push-fan-out-job:\n  image: null\n"
    else:
        assert 'image: "python:3.12-slim"' in text
        text = text.replace('image: "python:3.12-slim"', "image: null")
    child.write_text(text)
    git(repo, "checkout", "-q", "--detach")  # as a runner checks out

    home = tmp_path / "gcl-home"
    home.mkdir()
    variables = {"GITLAB_CI": "true", "CI_DEFAULT_BRANCH": "main", "CI_COMMIT_BRANCH": "main",
                 "CI_COMMIT_REF_NAME": "main", "CI_PIPELINE_SOURCE": "parent_pipeline",
                 "CI_PROJECT_ID": "42", "GITOPS_PUSH_PIP_SPEC": ""}
    cmd = [str(gitlab_ci_local), "--home", str(home), "--no-color",
           "--json-schema-validation=false", "--file", "gitops-push-fan-out.yml",
           "--shell-isolation", "--no-artifacts-to-source"]
    for k, v in variables.items():
        cmd += ["--variable", f"{k}={v}"]
    listed = run([*cmd, "--list-json"], cwd=repo, env=env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    names = [j["name"] for j in json.loads(listed.stdout)]
    assert sorted(names) == ["apply c1", "apply c2", "apply c3", "apply x",
                             "gitops-push:summary"]

    res = run(cmd, cwd=repo, env=env, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert order.read_text().split().index("c1") < order.read_text().split().index("c2") \
        < order.read_text().split().index("c3"), order.read_text()
    assert sorted(order.read_text().split()) == ["c1", "c2", "c3", "x"]

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
