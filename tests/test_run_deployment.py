"""One deployment, many jobs (issue 15): every job of a pipeline records under the
pipeline's deployment id; ``audit log``, ``status`` and ``summary`` show one run.

The end-to-end tests run each "CI job" as its own process in its own fresh clone of a
bare origin, concurrently, with real terraform (``terraform_data``, local state outside
the clones, as a remote backend would be).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import GitRepo, git

from gitops_push.errors import ExitCode, UserError
from gitops_push.run.deployment import merge_log, summarize, summary_markdown


def rec(run_id: str, phase: str, stacks: list[tuple[str, str]], *, dep: str | None = "9",
        **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"run_id": run_id, "phase": phase, "command": "apply", "head": "a" * 40,
                         "started_at": f"2026-11-01T00:00:0{run_id[-1]}Z",
                         "stacks": [{"name": n, "result": res,
                                     "deployed": res in ("applied", "no-changes")}
                                    for n, res in stacks], **extra}
    if dep is not None:
        r["deployment_id"] = dep
    if phase == "finished":
        r["finished_at"] = f"2026-11-01T00:01:0{run_id[-1]}Z"
        r["outcome"] = "success" if all(res == "applied" for _, res in stacks) else "failed"
    return r


# -- folding records ---------------------------------------------------------------------
def test_the_runs_of_one_deployment_are_one_log_entry():
    entries = [rec("r1", "finished", [("net", "applied")]),
               rec("r2", "finished", [("app", "failed")]),
               rec("r3", "finished", [("app", "applied")]),  # the re-run of the failed job
               rec("x1", "finished", [("net", "applied")], dep=None)]
    merged = merge_log(entries)
    assert len(merged) == 2
    dep = merged[0]
    assert dep["deployment_id"] == "9" and dep["runs"] == ["r1", "r2", "r3"]
    assert [(s["name"], s["result"]) for s in dep["stacks"]] == [("net", "applied"),
                                                                  ("app", "applied")]
    assert dep["outcome"] == "success"
    assert dep["started_at"] == "2026-11-01T00:00:01Z"
    assert dep["finished_at"] == "2026-11-01T00:01:03Z"
    assert merged[1]["run_id"] == "x1" and "runs" not in merged[1]


def test_a_job_still_running_keeps_the_deployment_in_progress():
    merged = merge_log([rec("r1", "finished", [("net", "applied")]),
                        rec("r2", "started", [("app", "")])])
    assert merged[0]["outcome"] == "in progress" and merged[0]["finished_at"] is None


def test_summary_takes_each_stacks_newest_result_and_fails_on_any_failure():
    records = [rec("r1", "started", [("net", "")]), rec("r1", "finished", [("net", "applied")]),
               rec("r2", "started", [("app", "")]), rec("r2", "finished", [("app", "failed")])]
    s = summarize(records, "9")
    assert s.exit_code == ExitCode.FAILED and [x.name for x in s.failed] == ["app"]
    assert "❌ failed" in summary_markdown(s) and "1 of 2 stack(s)" in summary_markdown(s)
    records += [rec("r3", "started", [("app", "")]), rec("r3", "finished", [("app", "applied")])]
    s = summarize(records, "9")
    assert s.exit_code == ExitCode.OK and s.runs == ("r1", "r2", "r3")


def test_summary_counts_a_job_that_never_finished_as_failed():
    s = summarize([rec("r1", "started", [("net", "")])], "9")
    assert s.exit_code == ExitCode.FAILED
    assert s.stacks[0].result == "interrupted" and s.unfinished == ("r1",)


def test_summary_of_an_unknown_deployment_is_a_usage_error():
    with pytest.raises(UserError, match="no run in the audit trail was recorded under "
                                        "deployment '404'"):
        summarize([rec("r1", "finished", [("net", "applied")])], "404")


# -- end to end: concurrent jobs in separate clones ------------------------------------------
def tf(state: Path, flag: Path | None = None) -> str:
    body = f'terraform {{\n  backend "local" {{\n    path = "{state}"\n  }}\n}}\n' \
           'resource "terraform_data" "r" {\n  input = "v1"\n}\n'
    if flag is not None:  # fails until the flag file exists: a transient failure
        body += ('resource "terraform_data" "gate" {\n  provisioner "local-exec" {\n'
                 f'    command = "test -f {flag}"\n  }}\n}}\n')
    return body


STACKS = {"a1": [], "a2": [], "a3": [], "a4": [], "b": ["a1"]}


@pytest.fixture
def fleet(make_repo, tmp_path) -> GitRepo:
    if not any((Path(p) / "terraform").exists() for p in os.environ["PATH"].split(os.pathsep)):
        pytest.skip("terraform is not installed")
    state = tmp_path / "state"
    state.mkdir()
    lines = ["version: 1", "stacks:"]
    for name, deps in STACKS.items():
        lines += [f"  - name: {name}", f"    path: stacks/{name}", "    type: terraform"]
        if deps:
            lines.append(f"    depends_on: [{', '.join(deps)}]")
    files = {".gitignore": ".terraform*\n", "gitops-push.yaml": "\n".join(lines) + "\n"}
    files.update({f"stacks/{n}/main.tf": tf(state / f"{n}.tfstate") for n in STACKS})
    return make_repo(files)


def job(r: GitRepo, tmp_path: Path, name: str, deployment: str, *args: str
        ) -> subprocess.Popen[str]:
    """One CI job: a fresh clone of origin, then one gitops-push command."""
    clone = tmp_path / f"job-{name}-{len(list(tmp_path.glob('job-*')))}"
    git(tmp_path, "clone", "-q", str(r.origin), str(clone))
    env = {**os.environ, "GITOPS_PUSH_DEPLOYMENT_ID": deployment}
    return subprocess.Popen([sys.executable, "-m", "gitops_push", "-C", str(clone), *args,
                             "--output", "json"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(p: subprocess.Popen[str]) -> tuple[int, dict[str, Any]]:
    out, err = p.communicate(timeout=300)
    assert out.strip(), err
    return p.returncode, json.loads(out)


def cli(r: GitRepo, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    return finish(job(r, tmp_path, "read", "", *args))


@pytest.mark.slow
def test_concurrent_jobs_record_one_deployment_and_the_trail_verifies(fleet, tmp_path):
    wave1 = [job(fleet, tmp_path, n, "777", "apply", "--stack", n) for n in
             ("a1", "a2", "a3", "a4")]
    for p in wave1:
        code, env = finish(p)
        assert code == 0, env
    code, env = finish(job(fleet, tmp_path, "b", "777", "apply", "--stack", "b"))
    assert code == 0, env

    code, verify = cli(fleet, tmp_path, "audit", "verify")
    assert code == 0 and verify["data"]["ok"], verify
    names = git(fleet.origin, "ls-tree", "-r", "--name-only", "gitops-push/audit").split()
    records = [json.loads(git(fleet.origin, "show", f"gitops-push/audit:{n}")) for n in names]
    # a sibling job between its started record and its locks is not "interrupted"
    assert [r["interrupted_runs"] for r in records if r["phase"] == "started"] == [[]] * 5
    assert verify["data"]["records"] == 10  # started + finished of five concurrent jobs
    code, log = cli(fleet, tmp_path, "audit", "log")
    (entry,) = log["data"]["runs"]
    assert entry["deployment_id"] == "777" and len(entry["runs"]) == 5
    assert {s["name"]: s["result"] for s in entry["stacks"]} == dict.fromkeys(STACKS, "applied")
    assert entry["outcome"] == "success"
    code, status = cli(fleet, tmp_path, "status")
    assert {row["deployment_id"] for row in status["data"]["stacks"]} == {"777"}
    code, summary = cli(fleet, tmp_path, "summary", "--deployment", "777")
    assert code == 0 and summary["data"]["outcome"] == "success"
    assert len(summary["data"]["stacks"]) == 5


@pytest.mark.slow
def test_a_rerun_of_a_failed_job_continues_the_same_deployment(fleet, tmp_path):
    flag = tmp_path / "b-may-apply"
    state = tmp_path / "state"
    fleet.commit("b gets a gate", {"stacks/b/main.tf": tf(state / "b.tfstate", flag)},
                 push=True)
    code, env = finish(job(fleet, tmp_path, "b", "888", "apply", "--stack", "b"))
    assert code == ExitCode.FAILED, env
    code, summary = cli(fleet, tmp_path, "summary", "--deployment", "888")
    assert code == ExitCode.FAILED
    assert [(s["name"], s["result"]) for s in summary["data"]["stacks"]] == [("b", "failed")]

    flag.write_text("ok")  # the cause goes away; the job is re-run in the same pipeline
    code, env = finish(job(fleet, tmp_path, "b", "888", "apply", "--stack", "b"))
    assert code == 0, env
    code, summary = cli(fleet, tmp_path, "summary", "--deployment", "888")
    assert code == 0
    assert [(s["name"], s["result"]) for s in summary["data"]["stacks"]] == [("b", "applied")]
    assert len(summary["data"]["runs"]) == 2
    code, log = cli(fleet, tmp_path, "audit", "log")
    (entry,) = [e for e in log["data"]["runs"] if e["deployment_id"] == "888"]
    assert len(entry["runs"]) == 2 and entry["outcome"] == "success"


@pytest.mark.slow
def test_a_job_of_an_older_pipeline_never_rolls_a_stack_back(fleet, tmp_path):
    old = fleet.head()
    fleet.commit("newer", {"stacks/a2/main.tf": tf(tmp_path / "state" / "a2.tfstate")
                           + "# newer\n"}, push=True)
    code, env = finish(job(fleet, tmp_path, "a2", "900", "apply", "--stack", "a2"))
    assert code == 0, env
    clone = tmp_path / "old-job"
    git(tmp_path, "clone", "-q", str(fleet.origin), str(clone))
    git(clone, "reset", "-q", "--hard", old)  # an older pipeline's job, re-run late
    p = subprocess.run([sys.executable, "-m", "gitops_push", "-C", str(clone), "apply",
                        "--stack", "a2", "--output", "json"], capture_output=True, text=True,
                       env={**os.environ, "GITOPS_PUSH_DEPLOYMENT_ID": "899"}, check=False)
    assert p.returncode == 0, p.stderr
    (stack,) = json.loads(p.stdout)["data"]["stacks"]
    assert stack["result"] == "skipped" and "never rolls a stack back" in stack["message"]


def test_summary_outside_ci_needs_a_deployment(make_repo, capsys):
    from gitops_push.cli.app import run

    r = make_repo({"gitops-push.yaml": "version: 1\n"})
    assert run(["-C", str(r.path), "summary"]) == ExitCode.USAGE
    assert "--deployment: not given and not in CI" in capsys.readouterr().err
    assert run(["-C", str(r.path), "summary", "--deployment", "nope"]) == ExitCode.USAGE
    assert "no run in the audit trail was recorded under deployment 'nope'" in \
        capsys.readouterr().err


def test_the_audit_table_names_the_deployment_and_its_jobs(capsys):
    from gitops_push.output import audit_table

    merged = merge_log([rec("r1", "finished", [("net", "applied")]),
                        rec("r2", "finished", [("app", "applied")])])
    audit_table(merged)
    out = capsys.readouterr().out
    assert "9 (2 jobs)" in out and "net:applied" in out and "app:applied" in out


@pytest.mark.slow
def test_a_job_destroys_a_stack_removed_since_its_last_deployment(fleet, tmp_path):
    code, env = finish(job(fleet, tmp_path, "a4", "950", "apply", "--stack", "a4"))
    assert code == 0, env
    state = tmp_path / "state" / "a4.tfstate"
    assert json.loads(state.read_text())["resources"]
    text = (fleet.path / "gitops-push.yaml").read_text()
    fleet.commit("remove a4", {"stacks/a4": None, "gitops-push.yaml": text.replace(
        "  - name: a4\n    path: stacks/a4\n    type: terraform\n", "")}, push=True)
    code, env = finish(job(fleet, tmp_path, "a4", "951", "apply", "--stack", "a4"))
    assert code == ExitCode.USAGE
    assert "would be DESTROYED: a4" in env["errors"][0]["message"]
    code, env = finish(job(fleet, tmp_path, "a4", "951", "apply", "--stack", "a4",
                           "--allow-destroy"))
    assert code == 0, env
    assert [(s["name"], s["result"]) for s in env["data"]["stacks"]] == [("a4", "destroyed")]
    assert json.loads(state.read_text())["resources"] == []
    code, env = finish(job(fleet, tmp_path, "zz", "951", "apply", "--stack", "zz"))
    assert code == ExitCode.USAGE and "unknown stack(s): zz" in env["errors"][0]["message"]
