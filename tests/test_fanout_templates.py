"""The fan-out templates: wired to what ``gitops-push fan-out`` writes, and on the same
approval gate as the single-job templates. (actionlint and the schemas run on every
template in tests/test_templates.py; the child pipeline runs in test_fanout_gitlab.py.)"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from test_templates import TEMPLATES, load_workflow, load_yaml, steps_using

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
