"""The fan-out templates: wired to what ``gitops-push fan-out`` writes, and on the same
approval gate as the single-job templates. (actionlint and the schemas run on every
template in tests/test_templates.py; the child pipeline runs in test_run_fanout_gitlab.py.)"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_templates import ROOT, TEMPLATES, load_workflow, load_yaml, steps_using

from gitops_push.run import fanout_gitlab

GITHUB = "gitops-push-apply-fan-out.yml"
PARENT = TEMPLATES / "gitlab" / "gitops-push-fan-out.gitlab-ci.yml"
CHILD = TEMPLATES / "gitlab" / "gitops-push-fan-out-jobs.gitlab-ci.yml"


def test_github_waves_run_one_after_another_after_the_approval():
    wf = load_workflow(GITHUB)
    jobs = wf["jobs"]
    assert jobs["fan-out"]["environment"] == "production"  # the required reviewers
    assert jobs["fan-out"]["needs"] == "plan"
    (run_step,) = [s for s in jobs["fan-out"]["steps"] if "fan-out" in s.get("run", "")]
    max_waves = int(re.search(r"--max-waves (\d+)", run_step["run"]).group(1))
    waves = sorted(n for n in jobs if n.startswith("wave-"))
    assert len(waves) == max_waves  # one matrix job per level the fan-out may produce
    for n in range(1, max_waves + 1):
        job = jobs[f"wave-{n}"]
        assert job["needs"] == ["fan-out"] + ([f"wave-{n - 1}"] if n > 1 else [])
        assert job["if"].startswith("success() && ")  # never after a failed wave
        assert f"outputs.wave-{n}" in job["strategy"]["matrix"]
        assert job["strategy"]["fail-fast"] is False
        assert jobs["fan-out"]["outputs"][f"wave-{n}"] == \
            f"${{{{ steps.fan-out.outputs.wave-{n} }}}}"
        assert job["env"]["GITOPS_PUSH_STACK"] == "${{ matrix.stacks }}"
        assert job["environment"] == "production-fan-out"
        assert any("gitops-push apply" in s.get("run", "") for s in job["steps"])
    summary = jobs["summary"]
    assert summary["needs"] == ["fan-out", *waves]
    assert "!cancelled()" in summary["if"]
    run = " ".join(s.get("run", "") for s in summary["steps"])
    assert "gitops-push summary" in run and "gitops-push comment --platform github" in run
    assert summary["permissions"] == {"contents": "read", "pull-requests": "write"}
    for job in jobs.values():
        for checkout in steps_using(job, "actions/checkout"):
            assert checkout["with"]["fetch-depth"] == 0


def test_gitlab_parent_replaces_the_single_apply_with_a_child_pipeline():
    doc = load_yaml(PARENT)
    assert doc["include"] == [{"local": "ci/gitops-push.gitlab-ci.yml"}]
    assert doc["gitops-push:apply"]["rules"] == [{"when": "never"}]
    gen = doc["gitops-push:fan-out"]
    assert gen["environment"] == {"name": "$GITOPS_PUSH_ENVIRONMENT", "action": "start"}
    assert any("gitops-push fan-out --platform gitlab --for apply --include "
               f"ci/{CHILD.name} --out gitops-push-fan-out.yml" in line
               for line in gen["script"])
    assert gen["artifacts"]["paths"] == ["gitops-push-fan-out.yml"]
    trigger = doc["gitops-push:apply-jobs"]
    assert trigger["trigger"] == {"include": [{"artifact": "gitops-push-fan-out.yml",
                                               "job": "gitops-push:fan-out"}],
                                  "strategy": "depend"}
    # one deployment per environment at a time, shared with the plain drift job
    assert trigger["resource_group"] == "gitops-push-$GITOPS_PUSH_ENVIRONMENT"
    for job in (gen, trigger):  # never inside the child pipeline itself
        assert "parent_pipeline" in job["rules"][0]["if"]


def test_gitlab_child_jobs_are_what_fan_out_extends():
    doc = load_yaml(CHILD)
    assert f"ci/{CHILD.name}" == fanout_gitlab.GITLAB_INCLUDE
    for command in ("apply", "plan", "drift"):
        name = fanout_gitlab.GITLAB_EXTENDS.format(command=command)
        assert doc[name]["extends"] == ".gitops-push-fan-out-job"
        assert any(f"gitops-push {command}" in line for line in doc[name]["script"])
    assert doc[".gitops-push-fan-out-apply"]["environment"]["action"] == "access"
    summary = doc["gitops-push:summary"]
    assert summary["stage"] == ".post" and summary["when"] == "always"
    visible = [k for k in doc if not k.startswith(".") and k not in ("variables",)]
    assert visible == ["gitops-push:summary"]  # nothing else runs in the child



def _script_lines(doc: dict, job: dict) -> list[str]:
    """A job's script, following `extends:` as GitLab does (the nearest one wins)."""
    while "script" not in job and "extends" in job:
        job = doc[job["extends"]]
    return [str(line) for line in job.get("script", [])]


@pytest.mark.parametrize("path", sorted((TEMPLATES / "gitlab").glob("*.yml")),
                         ids=lambda p: p.name)
def test_every_gitlab_job_that_applies_applies_saved_plans(path):
    """Plain apply and the child's apply jobs: `apply --plan-dir "$GITOPS_PUSH_PLAN_DIR"`,
    never a plan of their own; the CLI refuses a missing or stale saved plan."""
    doc = load_yaml(path)
    for name, job in doc.items():
        if not isinstance(job, dict):
            continue
        lines = _script_lines(doc, job)
        applies = [line for line in lines if re.search(r"\bgitops-push apply\b", line)]
        if not applies:
            continue
        assert not any(re.search(r"\bgitops-push plan\b", line) for line in lines), name
        for line in applies:
            assert '--plan-dir "$GITOPS_PUSH_PLAN_DIR"' in line, f"{path.name}:{name}: {line}"


def test_gitlab_child_apply_jobs_take_the_parents_saved_plans():
    child = load_yaml(CHILD)
    assert child["variables"]["GITOPS_PUSH_PLAN_DIR"] == \
        load_yaml(TEMPLATES / "gitlab" / "gitops-push.gitlab-ci.yml")["variables"][
            "GITOPS_PUSH_PLAN_DIR"]
    apply = child[".gitops-push-fan-out-apply"]
    assert _script_lines(child, apply) == [
        'gitops-push apply --plan-dir "$GITOPS_PUSH_PLAN_DIR" --summary-md '
        '"$GITOPS_PUSH_SUMMARY_FILE"']
    # `needs:` would be replaced by every generated job's own (extends merges no lists)
    assert "needs" not in apply and "needs" not in child[".gitops-push-fan-out-job"]
    # the downloaded plans are not a change to deploy: apply refuses a dirty tree
    (exclude,) = [s for s in child[".gitops-push-fan-out-job"]["before_script"]
                  if "info/exclude" in s]
    assert '"${GITOPS_PUSH_PLAN_DIR%/}"' in exclude
    parent = load_yaml(PARENT)
    trigger = parent["gitops-push:apply-jobs"]
    assert trigger["variables"] == {"PARENT_PIPELINE_ID": "$CI_PIPELINE_ID"}
    # the parent's plan job (from the plain template it includes) saves them at this
    # commit on the default branch, as its artifacts
    plain = load_yaml(TEMPLATES / "gitlab" / "gitops-push.gitlab-ci.yml")
    plan = plain["gitops-push:plan"]
    assert "$GITOPS_PUSH_PLAN_DIR/" in plan["artifacts"]["paths"]
    assert any('plan --plan-dir "$GITOPS_PUSH_PLAN_DIR"' in s for s in plan["script"])
    assert {"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"} in plan["rules"]
    assert "gitops-push:plan" not in parent  # the plain template's, unchanged


PARENT_PLANS = {"pipeline": "$PARENT_PIPELINE_ID", "job": "gitops-push:plan",
                "artifacts": True}


def test_every_generated_apply_job_fetches_the_parents_saved_plans(make_repo):
    stacks = {"net": [], "app": ["net"], "solo": []}
    stacks.update({f"base{i:02d}": [] for i in range(55)})
    stacks["top"] = [f"base{i:02d}" for i in range(55)]  # past GitLab's 50 needs
    lines = ["version: 1", "stacks:"]
    repo_files = {}
    for name, deps in stacks.items():
        lines += [f"  - name: {name}", f"    path: stacks/{name}", "    type: terraform"]
        lines += [f"    depends_on: [{', '.join(deps)}]"] if deps else []
        repo_files[f"stacks/{name}/main.tf"] = "#\n"
    repo_files["gitops-push.yaml"] = "\n".join(lines) + "\n"
    r = make_repo(repo_files)
    res = subprocess.run([sys.executable, "-m", "gitops_push", "-C", str(r.path), "fan-out",
                          "--platform", "gitlab", "--for", "apply"], text=True,
                         capture_output=True, check=False, env={**os.environ, "NO_COLOR": "1"})
    assert res.returncode == 0, res.stderr
    doc = yaml.safe_load(res.stdout)
    jobs = {k: v for k, v in doc.items() if isinstance(v, dict)
            and v.get("extends") == ".gitops-push-fan-out-apply"}
    assert len(jobs) == len(stacks)
    for name, job in jobs.items():
        assert PARENT_PLANS in job.get("needs", []), name


@pytest.mark.parametrize(("variables", "says"), [
    ({"GITOPS_PUSH_FAN_OUT_JOBS": "0", "GITOPS_PUSH_FAN_OUT_FOR": "apply"},
     "nothing was fanned out"),
    ({"GITOPS_PUSH_FAN_OUT_JOBS": "3", "GITOPS_PUSH_FAN_OUT_FOR": "plan"},
     "plan records nothing in the audit trail"),
])
def test_the_summary_job_passes_when_there_is_no_deployment_to_summarize(variables, says):
    """No stack, or a plan fan-out (nothing recorded): `summary` would exit 2."""
    (first, *_) = load_yaml(CHILD)["gitops-push:summary"]["script"]
    res = subprocess.run(["bash", "-e", "-c", first + "\necho went-on\n"], text=True,
                         capture_output=True, env={"PATH": os.environ["PATH"], **variables},
                         check=False)
    assert res.returncode == 0 and says in res.stdout and "went-on" not in res.stdout
    apply = {"GITOPS_PUSH_FAN_OUT_JOBS": "3", "GITOPS_PUSH_FAN_OUT_FOR": "apply"}
    res = subprocess.run(["bash", "-e", "-c", first + "\necho went-on\n"], text=True,
                         capture_output=True, env={"PATH": os.environ["PATH"], **apply},
                         check=False)
    assert "went-on" in res.stdout


# ----------------------------- setting it up, as docs/scaling-out.md says (k16)


def _documented_set_up() -> list[str]:
    """The shell lines of the code blocks of docs/scaling-out.md's "Setting it up"."""
    doc = (ROOT / "docs" / "scaling-out.md").read_text()
    section = doc.split("## Setting it up", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines()
            if line.strip()]


def _run_documented(lines: list[str], cwd: Path) -> None:
    """Runs `gitops-push ... [> FILE]` lines with this checkout's CLI, no shell."""
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "gitops-push", line
        out = None
        if ">" in words:
            words, out = words[:words.index(">")], words[words.index(">") + 1]
        res = subprocess.run([sys.executable, "-m", "gitops_push", *words[1:]], cwd=cwd,
                             text=True, capture_output=True, check=False,
                             env={**os.environ, "NO_COLOR": "1"})
        assert res.returncode == 0, (line, res.stderr)
        if out:
            (cwd / out).write_text(res.stdout)


INIT_FILES = {"infra/prod/main.tf": "#\n"}


def test_the_documented_github_set_up_leaves_one_apply_workflow_the_fan_out(make_repo):
    r = make_repo(INIT_FILES)
    lines = [line for line in _documented_set_up() if "github" in line]
    assert lines[0] == "gitops-push init --ci github"
    _run_documented(lines, r.path)
    workflows = r.path / ".github" / "workflows"
    on_push = [p.name for p in sorted(workflows.glob("*.yml"))
               if "push" in load_yaml(p).get(True, {})]  # YAML 1.1 reads `on:` as true
    assert on_push == ["gitops-push-apply.yml"]  # never two applies per push
    assert (workflows / "gitops-push-apply.yml").read_text() == \
        (TEMPLATES / "github" / "workflows" / GITHUB).read_text()


def test_the_documented_gitlab_set_up_gives_a_complete_fan_out_pipeline(make_repo):
    r = make_repo(INIT_FILES)
    lines = [line for line in _documented_set_up() if "gitlab" in line]
    assert lines[0] == "gitops-push init --ci gitlab"
    _run_documented(lines, r.path)
    doc = (ROOT / "docs" / "scaling-out.md").read_text()
    old, new = ("- local: ci/gitops-push.gitlab-ci.yml",
                "- local: ci/gitops-push-fan-out.gitlab-ci.yml")
    assert f"replace `{old}` with\n`{new}`" in doc
    entry_path = r.path / ".gitlab-ci.yml"
    entry_path.write_text(entry_path.read_text().replace(old, new))
    # Every include resolves in the project, with the fan-out template's --include copy.
    entry = load_yaml(entry_path)
    parent = load_yaml(r.path / "ci" / PARENT.name)
    for include in [*entry["include"], *parent["include"]]:
        assert (r.path / include["local"]).is_file(), include
    assert (r.path / fanout_gitlab.GITLAB_INCLUDE).read_text() == CHILD.read_text()
    # ... and the entry declares every stage the included jobs use.
    plain = load_yaml(r.path / "ci" / "gitops-push.gitlab-ci.yml")
    used = {job["stage"] for d in (plain, parent) for job in d.values()
            if isinstance(job, dict) and "stage" in job}
    assert used <= set(entry["stages"])
