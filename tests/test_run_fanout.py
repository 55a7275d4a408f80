"""``gitops-push fan-out``: job plans for GitHub and GitLab, in dependency order.

Selection runs against real git repositories (and a real audit trail for ``apply``);
the grouping invariants are checked on random dependency graphs with hypothesis.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from conftest import GitRepo
from hypothesis import given, settings
from hypothesis import strategies as st

from gitops_push.cli.app import run
from gitops_push.config import PhaseCredentials, Stack
from gitops_push.detect.changes import ChangeSet, StackChange, order
from gitops_push.detect.range import Range
from gitops_push.errors import ExitCode
from gitops_push.run import fanout, fanout_gitlab

TF = 'resource "terraform_data" "r" {\n  input = "1"\n}\n'


def config(stacks: dict[str, list[str]], creds: dict[str, str] | None = None) -> str:
    lines = ["version: 1", "stacks:"]
    for name, deps in stacks.items():
        lines += [f"  - name: {name}", f"    path: stacks/{name}", "    type: terraform"]
        if deps:
            lines.append(f"    depends_on: [{', '.join(deps)}]")
        if creds and name in creds:
            lines += ["    credentials:", "      apply:", "        env:",
                      f"          AWS_ACCESS_KEY_ID: {creds[name]}"]
    return "\n".join(lines) + "\n"


def files(stacks: dict[str, list[str]], **kw: Any) -> dict[str, str]:
    out = {"gitops-push.yaml": config(stacks, **kw)}
    out.update({f"stacks/{n}/main.tf": TF for n in stacks})
    return out


CHAIN = {"net": [], "app": ["net"], "web": ["app"], "solo": []}


def fan(r: GitRepo, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run(["-C", str(r.path), "fan-out", *args])
    finally:
        os.environ.clear()
        os.environ.update(old)
    return code, out.getvalue(), err.getvalue()


def schema_errors(path: Path) -> str:
    res = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                          "vendor.gitlab-ci", "--data-transform", "gitlab-ci", str(path)],
                         capture_output=True, text=True, check=False)
    return "" if res.returncode == 0 else res.stdout + res.stderr


# -- GitLab ------------------------------------------------------------------------------
def test_gitlab_child_pipeline_encodes_depends_on_as_needs(make_repo, tmp_path):
    r = make_repo(files(CHAIN, creds={"net": "NET_AWS_KEY"}))
    secret = "AKIA-very-secret-value"
    code, out, err = fan(r, "--platform", "gitlab", "--for", "apply",
                         env={"NET_AWS_KEY": secret, "GITOPS_PUSH_DEPLOYMENT_ID": "4711"})
    assert code == 0, err
    assert secret not in out + err
    doc = yaml.safe_load(out)
    jobs = {k: v for k, v in doc.items() if isinstance(v, dict)
            and "GITOPS_PUSH_STACK" in v.get("variables", {})}
    assert set(jobs) == {"apply net", "apply app", "apply web", "apply solo"}
    # every apply job also fetches the plans the parent's plan job saved (reviewed plans)
    plans = {"pipeline": "$PARENT_PIPELINE_ID", "job": "gitops-push:plan", "artifacts": True}
    assert jobs["apply net"]["needs"] == [plans] and jobs["apply solo"]["needs"] == [plans]
    assert jobs["apply app"]["needs"] == [{"job": "apply net", "artifacts": False}, plans]
    assert jobs["apply web"]["needs"] == [{"job": "apply app", "artifacts": False}, plans]
    assert jobs["apply web"]["stage"] == "gitops-push-3"
    assert jobs["apply app"]["resource_group"] == "gitops-push-$GITOPS_PUSH_ENVIRONMENT-app"
    assert jobs["apply net"]["variables"]["GITOPS_PUSH_CREDENTIAL_VARIABLES"] == "NET_AWS_KEY"
    assert jobs["apply web"]["variables"]["GITOPS_PUSH_STACK"] == "web"
    assert doc["variables"]["GITOPS_PUSH_DEPLOYMENT_ID"] == "4711"
    assert all(v["extends"] == ".gitops-push-fan-out-apply" for v in jobs.values())
    # the shipped job definitions are embedded: the pipeline needs no file in the project
    assert "include" not in doc
    assert "gitops-push apply" in doc[".gitops-push-fan-out-apply"]["script"][0]
    assert doc["gitops-push:summary"]["stage"] == ".post"
    # nothing published to default to (issue 12, item 2): the parent passes its spec on
    assert doc["variables"]["GITOPS_PUSH_PIP_SPEC"] == ""
    assert doc["variables"]["GITOPS_PUSH_FAN_OUT_FOR"] == "apply"
    assert doc["variables"]["GITOPS_PUSH_FAN_OUT_JOBS"] == "4"
    path = tmp_path / "child.yml"
    path.write_text(out)
    assert schema_errors(path) == ""
    # --include: the project's own copy of the job definitions instead
    code, out, err = fan(r, "--platform", "gitlab", "--for", "apply", "--include",
                         "ci/jobs.yml")
    assert code == 0, err
    doc = yaml.safe_load(out)
    assert doc["include"] == [{"local": "ci/jobs.yml"}]
    assert ".gitops-push-fan-out-apply" not in doc
    path.write_text(out)
    assert schema_errors(path) == ""


def test_gitlab_jobs_beyond_the_needs_limit_wait_for_the_earlier_stages(make_repo):
    stacks = {f"base{i:02d}": [] for i in range(60)}
    stacks["top"] = list(stacks)
    r = make_repo(files(stacks))
    code, out, err = fan(r, "--platform", "gitlab", "--for", "apply")
    assert code == 0, err
    doc = yaml.safe_load(out)
    top = doc["apply top"]
    # 60 > GitLab's 50: it needs a barrier of its stage, which has no needs and so waits
    # for every earlier stage; and the parent's saved plans
    barrier = doc["gitops-push level 2 barrier"]
    assert top["needs"] == [{"job": "gitops-push level 2 barrier", "artifacts": False},
                            {"pipeline": "$PARENT_PIPELINE_ID", "job": "gitops-push:plan",
                             "artifacts": True}]
    assert top["stage"] == barrier["stage"] == "gitops-push-2"
    assert "needs" not in barrier
    code, out, err = fan(r, "--platform", "gitlab", "--for", "drift")
    assert code == 0, err
    doc = yaml.safe_load(out)
    assert doc["drift top"]["needs"] == [{"job": "gitops-push level 2 barrier",
                                          "artifacts": False}]
    assert doc["drift base00"]["needs"] == []  # drift reads no saved plan


def test_gitlab_job_names_are_unique_and_within_the_limit():
    long = "x" * 300
    a, b = (Stack(f"{long}{c}", f"s/{c}", "terraform") for c in "ab")
    cs = ChangeSet(Range(None, "0" * 40, "all"), tuple(order(
        [StackChange(s, "changed") for s in (a, b)], [a, b])), (a, b))
    plan = fanout.FanOut("apply", "0" * 40, tuple(fanout.group(cs, 256)[0]), 1, None,
                         {a.name: (), b.name: ()})
    names = list(fanout_gitlab.gitlab_job_names(plan).values())
    assert len(set(names)) == 2
    assert all(len(n) <= fanout_gitlab.GITLAB_JOB_NAME_MAX for n in names)


# -- GitHub ------------------------------------------------------------------------------
def test_github_matrix_is_grouped_into_max_jobs(make_repo):
    stacks = {f"s{i}": ([f"s{i - 1}"] if i % 3 else []) for i in range(12)}
    r = make_repo(files(stacks))
    code, out, err = fan(r, "--platform", "github", "--for", "apply", "--max-jobs", "3")
    assert code == 0, err
    matrix = json.loads(out)
    assert list(matrix) == ["include"]
    entries = matrix["include"]
    assert len(entries) <= 3
    named = [n for e in entries for n in e["stacks"].split()]
    assert sorted(named) == sorted(stacks)
    for e in entries:
        assert {"stacks", "wave", "type", "count", "parallel"} <= set(e)
        assert e["type"] == "terraform" and e["count"] == len(e["stacks"].split())
    assert "3 job(s)" in err or f"{len(entries)} job(s)" in err


def test_github_output_has_one_matrix_per_wave(make_repo, tmp_path):
    r = make_repo(files(CHAIN))
    out_file = tmp_path / "github_output"
    code, _, err = fan(r, "--platform", "github", "--for", "apply", "--max-waves", "2",
                       "--github-output", env={"GITHUB_OUTPUT": str(out_file)})
    assert code == 0, err
    values = dict(line.split("=", 1) for line in out_file.read_text().splitlines())
    assert values["waves"] == "2"
    first = [e["stacks"] for e in json.loads(values["wave-1"])["include"]]
    second = [e["stacks"] for e in json.loads(values["wave-2"])["include"]]
    assert sorted(first) == ["net", "solo"]
    assert second == ["app web"]  # waves 2 and 3 folded: the chain runs in one job
    assert json.loads(values["wave-2"])["include"][0]["parallel"] == 1


def test_github_output_without_github_output_is_a_usage_error(make_repo):
    r = make_repo(files(CHAIN))
    code, _, err = fan(r, "--platform", "github", "--for", "apply", "--github-output")
    assert code == ExitCode.USAGE
    assert "GITHUB_OUTPUT is not set" in err


# -- selection as the command ------------------------------------------------------------
def _record(r: GitRepo, stacks: list[str], head: str) -> None:
    from gitops_push.audit.trail import Trail
    from gitops_push.git import Repo

    Trail(Repo(r.path)).append({
        "run_id": "20260101T000000Z-aaaaaaaa", "phase": "finished", "command": "apply",
        "head": head, "deployment_id": "1", "stacks": [
            {"name": n, "result": "applied", "deployed": True} for n in stacks]})


def test_apply_selects_each_stack_against_its_last_deployment(make_repo):
    r = make_repo(files(CHAIN))
    _record(r, list(CHAIN), r.head())
    r.commit("change app", {"stacks/app/main.tf": TF + "# v2\n"}, push=True)
    code, out, err = fan(r, "--platform", "github", "--for", "apply")
    assert code == 0, err
    assert [e["stacks"] for e in json.loads(out)["include"]] == ["app"]
    # drift: every stack, whatever changed
    code, out, _ = fan(r, "--platform", "github", "--for", "drift")
    assert sorted(e["stacks"] for e in json.loads(out)["include"]) == sorted(CHAIN)
    # --stack / --all as the commands
    code, out, _ = fan(r, "--platform", "github", "--for", "plan", "--stack", "web")
    assert [e["stacks"] for e in json.loads(out)["include"]] == ["web"]


def test_a_removed_stack_needs_allow_destroy(make_repo):
    r = make_repo(files(CHAIN))
    _record(r, list(CHAIN), r.head())
    r.commit("remove solo", {"stacks/solo": None,
                             "gitops-push.yaml": config({k: v for k, v in CHAIN.items()
                                                         if k != "solo"})}, push=True)
    code, out, err = fan(r, "--platform", "gitlab", "--for", "apply")
    assert code == ExitCode.USAGE
    assert "would be DESTROYED: solo" in err and "--allow-destroy" in err
    assert out == ""
    code, out, err = fan(r, "--platform", "gitlab", "--for", "apply", "--allow-destroy")
    assert code == 0, err
    job = yaml.safe_load(out)["apply solo"]
    assert job["variables"]["GITOPS_PUSH_ALLOW_DESTROY"] == "true"


def test_nothing_to_do_is_still_a_valid_pipeline(make_repo, tmp_path):
    r = make_repo(files(CHAIN))
    _record(r, list(CHAIN), r.head())
    code, out, err = fan(r, "--platform", "gitlab", "--for", "apply", "--out",
                         str(tmp_path / "child.yml"))
    assert code == 0, err
    assert out == ""
    assert "0 job(s)" in err
    assert schema_errors(tmp_path / "child.yml") == ""


def test_max_jobs_must_be_positive(make_repo):
    r = make_repo(files(CHAIN))
    code, _, err = fan(r, "--platform", "github", "--for", "apply", "--max-jobs", "0")
    assert code == ExitCode.USAGE
    assert "--max-jobs" in err


# -- grouping invariants on random graphs ---------------------------------------------------
@st.composite
def graphs(draw: Callable[..., Any]) -> tuple[list[Stack], set[str]]:
    n = draw(st.integers(1, 40))
    stacks = []
    for i in range(n):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        stacks.append(Stack(f"s{i:02d}", f"s/{i}", "terraform",
                            depends_on=tuple(f"s{d:02d}" for d in sorted(deps)),
                            credentials={"apply": PhaseCredentials({"X": f"V{i}"})}))
    chosen = draw(st.sets(st.sampled_from([s.name for s in stacks]), min_size=1))
    return stacks, chosen


@settings(max_examples=150, deadline=None)
@given(graphs(), st.integers(1, 12), st.integers(0, 5))
def test_grouping_keeps_dependency_order(graph, max_jobs, max_levels):
    stacks, chosen = graph
    changes = order([StackChange(s, "changed") for s in stacks if s.name in chosen], stacks)
    cs = ChangeSet(Range(None, "0" * 40, "all"), tuple(changes), tuple(stacks))
    jobs, levels = fanout.group(cs, max_jobs, max_levels)
    assert len(jobs) <= max_jobs
    if max_levels:
        assert levels <= max_levels
    job_of = {n: j for j in jobs for n in j.names}
    assert sorted(job_of) == sorted(chosen)  # every selected stack exactly once
    by_key = {j.key: j for j in jobs}
    near = fanout.near_deps_fn(cs)
    for j in jobs:
        for k in j.needs:  # needs point to lower levels only: no cycle, one wave after another
            assert by_key[k].level < j.level
        for n in j.names:
            for d in near(n):
                dj = job_of[d]
                # a dependency runs earlier in the same job, or in a job this one needs
                assert dj is j or dj.key in j.needs
                if dj is j:
                    assert cs_wave(cs, d) < cs_wave(cs, n)


def cs_wave(cs: ChangeSet, name: str) -> int:
    return next(c.wave for c in cs.stacks if c.stack.name == name)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=6, unique=True))
def test_the_child_pipeline_text_parses_back_to_the_same_document(names):
    """Stack names (discovered from paths) cannot change the YAML's structure."""
    stacks = [Stack(n, f"s/{i}", "terraform") for i, n in enumerate(names)]
    cs = ChangeSet(Range(None, "0" * 40, "all"),
                   tuple(order([StackChange(s, "changed") for s in stacks], stacks)),
                   tuple(stacks))
    jobs, levels = fanout.group(cs, 3)
    plan = fanout.FanOut("apply", "0" * 40, tuple(jobs), levels, "7: yes",
                         dict.fromkeys(names, ("A_B",)))
    assert yaml.safe_load(fanout_gitlab.gitlab_yaml(plan)) == fanout_gitlab.gitlab_pipeline(plan)
