"""The deploy workflow end to end: real git with a bare origin, real terraform.

Stacks use only ``terraform_data`` and the local backend (state in the stack directory,
git-ignored), so nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import GitRepo, git

from gitops_push.cli.app import run
from gitops_push.errors import ExitCode

pytestmark = pytest.mark.slow


def tf(value: str = "1", *, extra: str = "") -> str:
    return (f'resource "terraform_data" "r" {{\n  input = "{value}"\n}}\n'
            f'{extra}')


FAIL_TF = ('resource "terraform_data" "boom" {\n  provisioner "local-exec" {\n'
           '    command = "echo provisioner failing >&2; exit 1"\n  }\n}\n')
SLOW_TF = ('resource "terraform_data" "slow" {\n  provisioner "local-exec" {\n'
           '    command = "sleep 30"\n  }\n}\n')


def config(*stacks: tuple[str, list[str]]) -> str:
    lines = ["version: 1", "stacks:"]
    for name, deps in stacks:
        lines += [f"  - name: {name}", f"    path: stacks/{name}", "    type: terraform"]
        if deps:
            lines.append(f"    depends_on: [{', '.join(deps)}]")
    return "\n".join(lines) + "\n"


@pytest.fixture
def deploy_repo(make_repo: Callable[..., GitRepo]) -> GitRepo:
    """net <- app <- web, and an independent solo stack."""
    return make_repo({
        ".gitignore": "*.tfstate\n*.tfstate.*\n.terraform*\n",
        "gitops-push.yaml": config(("net", []), ("app", ["net"]), ("web", ["app"]),
                                   ("solo", [])),
        "stacks/net/main.tf": tf("n1"),
        "stacks/app/main.tf": tf("a1"),
        "stacks/web/main.tf": tf("w1"),
        "stacks/solo/main.tf": tf("s1"),
    })


def gp(r: GitRepo, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    """Run gitops-push in-process with --output json: (exit code, envelope)."""
    import contextlib
    import io

    out = io.StringIO()
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = run(["-C", str(r.path), *args, "--output", "json"])
    finally:
        os.environ.clear()
        os.environ.update(old)
    text = out.getvalue()
    return code, json.loads(text) if text.strip() else {}


def gp_proc(r: GitRepo, *args: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gitops_push", "-C", str(r.path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@contextlib.contextmanager
def lock_held(r: GitRepo, stack: str, owner: dict[str, str] | str = "other-run"
              ) -> Iterator[None]:
    """Another run holding ``stack``'s lock on origin (no heartbeat) for the block."""
    from gitops_push.git import Repo
    from gitops_push.lock import LockSet

    holder = LockSet(Repo(r.path), owner, heartbeat=False)
    holder.acquire(stack)
    try:
        yield
    finally:
        holder.release_all()


def results(envelope: dict) -> dict[str, str]:
    return {s["name"]: s["result"] for s in envelope["data"]["stacks"]}


def audit_records(r: GitRepo) -> list[dict]:
    r.git("fetch", "-q", "origin", "+refs/heads/gitops-push/audit:refs/remotes/origin/gp-audit")
    files = r.git("ls-tree", "-r", "--name-only", "origin/gp-audit").split("\n")
    records = [json.loads(r.git("show", f"origin/gp-audit:{f}")) for f in files
               if f.endswith(".json")]
    return sorted(records, key=lambda rec: rec["seq"])  # trail order (names: per second)


# -- plan ----------------------------------------------------------------------------------
def test_plan_on_a_branch_plans_only_changed_stacks(deploy_repo: GitRepo) -> None:
    deploy_repo.git("checkout", "-q", "-b", "feature")
    deploy_repo.commit("x", {"stacks/app/main.tf": tf("a2")})
    code, env = gp(deploy_repo, "plan", "--detailed-exitcode")
    assert code == ExitCode.CHANGES_PENDING
    assert results(env) == {"app": "planned"}
    assert env["data"]["stacks"][0]["counts"] == {"add": 1, "change": 0, "destroy": 0,
                                                  "replace": 0}


def test_plan_writes_a_markdown_summary(deploy_repo: GitRepo, tmp_path: Path) -> None:
    md = tmp_path / "plan.md"
    code, _ = gp(deploy_repo, "plan", "--all", "--summary-md", str(md),
                 env={"GITHUB_STEP_SUMMARY": str(tmp_path / "step.md")})
    assert code == 0
    text = md.read_text()
    assert "| `net` | ✅ planned |" in text and "terraform\\_data.r" not in text
    assert "`terraform_data.r`" in text
    assert (tmp_path / "step.md").read_text() == text + "\n"


# -- apply: waves, failures, dependents -----------------------------------------------------
def test_a_failing_stack_skips_its_dependents_while_independent_stacks_go_on(
        deploy_repo: GitRepo) -> None:
    deploy_repo.commit("break net", {"stacks/net/main.tf": FAIL_TF}, push=True)
    code, env = gp(deploy_repo, "apply", "--parallel", "2")
    assert code == ExitCode.FAILED
    assert results(env) == {"net": "failed", "solo": "applied", "app": "skipped",
                            "web": "skipped"}
    by_name = {s["name"]: s for s in env["data"]["stacks"]}
    assert by_name["app"]["message"] == "skipped: dependency failed (net)"
    assert "provisioner failing" in by_name["net"]["error"]
    assert env["status"] == "partial"


def test_the_next_run_retries_what_failed_using_the_audit_trail(deploy_repo: GitRepo) -> None:
    deploy_repo.commit("break net", {"stacks/net/main.tf": FAIL_TF}, push=True)
    assert gp(deploy_repo, "apply")[0] == ExitCode.FAILED
    deploy_repo.commit("fix net", {"stacks/net/main.tf": tf("n2")}, push=True)
    code, env = gp(deploy_repo, "apply")
    assert code == 0
    # solo was deployed by the failed run and has not changed since: not selected again
    assert results(env) == {"net": "applied", "app": "applied", "web": "applied"}
    code, env = gp(deploy_repo, "apply")
    assert code == 0 and results(env) == {}


def test_saved_plans_are_applied_by_a_second_process(deploy_repo: GitRepo, tmp_path: Path
                                                      ) -> None:
    plans = tmp_path / "plans"
    p = gp_proc(deploy_repo, "plan", "--plan-dir", str(plans))
    assert p.wait(timeout=120) == 0, p.stderr.read() if p.stderr else ""
    assert (plans / "net" / "gitops-push-plan.json").is_file()
    p = gp_proc(deploy_repo, "apply", "--plan-dir", str(plans), "--output", "json")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert set(results(json.loads(out)).values()) == {"applied"}


def test_a_plan_saved_for_another_commit_is_refused(deploy_repo: GitRepo, tmp_path: Path
                                                    ) -> None:
    plans = tmp_path / "plans"
    assert gp(deploy_repo, "plan", "--stack", "solo", "--plan-dir", str(plans))[0] == 0
    deploy_repo.commit("move on", {"README.md": "x\n"}, push=True)
    code, env = gp(deploy_repo, "apply", "--stack", "solo", "--plan-dir", str(plans))
    assert code == ExitCode.FAILED
    assert "re-run plan for this commit" in env["data"]["stacks"][0]["message"]


def test_a_plan_whose_files_changed_is_refused(deploy_repo: GitRepo, tmp_path: Path) -> None:
    plans = tmp_path / "plans"
    assert gp(deploy_repo, "plan", "--stack", "solo", "--plan-dir", str(plans))[0] == 0
    meta = plans / "solo" / "gitops-push-plan.json"
    data = json.loads(meta.read_text())
    data["files_hash"] = "0" * 64
    meta.write_text(json.dumps(data))
    code, env = gp(deploy_repo, "apply", "--stack", "solo", "--plan-dir", str(plans))
    assert code == ExitCode.FAILED
    assert "file hash differs" in env["data"]["stacks"][0]["message"]


# -- guards ---------------------------------------------------------------------------------
def test_apply_is_refused_off_the_default_branch(deploy_repo: GitRepo) -> None:
    deploy_repo.git("checkout", "-q", "-b", "feature")
    code, env = gp(deploy_repo, "apply")
    assert code == ExitCode.USAGE
    assert "only the default branch 'main'" in env["errors"][0]["message"]


def test_allow_branch_overrides_and_is_recorded(deploy_repo: GitRepo) -> None:
    deploy_repo.git("checkout", "-q", "-b", "hotfix")
    code, _ = gp(deploy_repo, "apply", "--stack", "solo", "--allow-branch")
    assert code == 0
    finished = [r for r in audit_records(deploy_repo) if r["phase"] == "finished"]
    assert finished[-1]["allow_branch"] is True and finished[-1]["branch"] == "hotfix"


def test_apply_is_refused_on_a_dirty_tree(deploy_repo: GitRepo) -> None:
    (deploy_repo.path / "stacks/net/extra.tf").write_text("# not committed\n")
    code, env = gp(deploy_repo, "apply")
    assert code == ExitCode.USAGE
    assert "dirty working tree" in env["errors"][0]["message"]
    assert "stacks/net/extra.tf" in env["errors"][0]["message"]


def test_an_older_pipeline_never_rolls_back_a_newer_deployment(deploy_repo: GitRepo,
                                                               tmp_path: Path) -> None:
    old = deploy_repo.head()
    deploy_repo.commit("newer", {"stacks/solo/main.tf": tf("s2")}, push=True)
    assert gp(deploy_repo, "apply")[0] == 0
    older = tmp_path / "older"
    git(tmp_path, "clone", "-q", str(deploy_repo.origin), str(older))
    git(older, "checkout", "-q", "-B", "main", old)
    code, env = gp(GitRepo(older, deploy_repo.origin), "apply")
    assert code == 0
    assert set(results(env).values()) == {"skipped"}
    assert "already deployed from newer commit" in env["data"]["stacks"][0]["message"]


def test_an_older_pipeline_that_waited_for_the_lock_never_rolls_back_what_the_holder_deployed(
        deploy_repo: GitRepo, tmp_path: Path) -> None:
    """The older run chose the stack before the newer one deployed it: the trail is read
    again once the lock it waited for is held, and the stack is skipped, not rolled back."""
    from gitops_push.audit.trail import Trail
    from gitops_push.git import Repo

    assert gp(deploy_repo, "apply")[0] == 0
    older = deploy_repo.commit("older", {"stacks/solo/main.tf": tf("s2")}, push=True)
    newer = deploy_repo.commit("newer", {"stacks/solo/main.tf": tf("s3")}, push=True)
    clone = tmp_path / "older"
    git(tmp_path, "clone", "-q", str(deploy_repo.origin), str(clone))
    git(clone, "checkout", "-q", "-B", "main", older)
    with lock_held(deploy_repo, "solo", "newer-run"):
        proc = gp_proc(GitRepo(clone, deploy_repo.origin), "apply", "--lock-timeout", "90s",
                       "--output", "json")
        deadline = time.monotonic() + 60
        while not any(r["phase"] == "started" and r["head"] == older
                      for r in audit_records(deploy_repo)):  # it has started, and waits
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        # the holder deploys solo from the newer commit and records it before letting go
        done = {"schema_version": 1, "run_id": "newer-run", "phase": "finished",
                "command": "apply", "head": newer, "outcome": "success",
                "stacks": [{"name": "solo", "result": "applied", "deployed": True}]}
        assert Trail(Repo(deploy_repo.path)).append(done).pushed
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    (row,) = json.loads(out)["data"]["stacks"]
    assert (row["name"], row["result"]) == ("solo", "skipped"), row
    assert "while this one waited" in row["message"] and newer[:12] in row["message"]


def test_a_removed_stack_is_destroyed_only_with_allow_destroy(deploy_repo: GitRepo) -> None:
    assert gp(deploy_repo, "apply")[0] == 0
    cfg = config(("net", []), ("app", ["net"]), ("web", ["app"]))
    deploy_repo.commit("remove solo", {"stacks/solo/main.tf": None, "gitops-push.yaml": cfg},
                       push=True)
    code, env = gp(deploy_repo, "apply")
    assert code == ExitCode.USAGE
    assert "would be DESTROYED: solo" in env["errors"][0]["message"]
    code, env = gp(deploy_repo, "apply", "--allow-destroy")
    assert code == 0 and results(env) == {"solo": "destroyed"}


# -- locks ------------------------------------------------------------------------------------
def test_a_held_lock_makes_apply_wait_then_fail_naming_the_holder(deploy_repo: GitRepo) -> None:
    alice = {"run_id": "other-run", "actor": "alice", "pipeline_url": "https://ci.example/p/1"}
    with lock_held(deploy_repo, "solo", alice):
        code, env = gp(deploy_repo, "apply", "--stack", "solo", "--lock-timeout", "1s")
    assert code == ExitCode.LOCKED
    error = env["data"]["stacks"][0]["error"]
    assert "alice" in error and "https://ci.example/p/1" in error


def test_a_stack_is_planned_only_once_its_lock_is_held(deploy_repo: GitRepo) -> None:
    # So a run that applied meanwhile is in the plan, instead of a stale plan failing.
    with lock_held(deploy_repo, "solo"):
        code, env = gp(deploy_repo, "apply", "--stack", "solo", "--lock-timeout", "1s")
    assert code == ExitCode.LOCKED
    (row,) = env["data"]["stacks"]
    assert row["counts"] is None and not row["changes"]  # nothing was planned


def test_a_stack_failing_lint_does_not_wait_for_a_held_lock(deploy_repo: GitRepo) -> None:
    deploy_repo.commit("unformatted", {"stacks/solo/main.tf": 'resource "terraform_data" "r" {\n'
                                       'input= "x"\n}\n'}, push=True)
    start = time.monotonic()
    with lock_held(deploy_repo, "solo"):
        code, env = gp(deploy_repo, "apply", "--stack", "solo", "--lock-timeout", "120s")
    assert code == ExitCode.FAILED and results(env) == {"solo": "lint-failed"}
    assert time.monotonic() - start < 60  # gave up the lock request instead of waiting 120s


def test_two_concurrent_applies_of_one_stack_never_overlap(deploy_repo: GitRepo,
                                                           tmp_path: Path) -> None:
    """Both pipelines apply (each clone has its own local state), one after the other:
    each apply logs when it starts and ends, and the windows must not intersect."""
    log = tmp_path / "applies.log"
    body = ('resource "terraform_data" "x" {\n  input = "v2"\n  provisioner "local-exec" {\n'
            f'    command = "echo start $(date +%s%N) >> {log} && sleep 2 && '
            f'echo end $(date +%s%N) >> {log}"\n'
            "  }\n}\n")
    deploy_repo.commit("v2", {"stacks/solo/main.tf": body}, push=True)
    clone = tmp_path / "clone2"
    git(tmp_path, "clone", "-q", str(deploy_repo.origin), str(clone))
    procs = [gp_proc(deploy_repo, "apply", "--stack", "solo", "--lock-timeout", "60s"),
             gp_proc(GitRepo(clone, deploy_repo.origin), "apply", "--stack", "solo",
                     "--lock-timeout", "60s")]
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 0], [p.stderr.read() for p in procs if p.stderr]
    events = [line.split() for line in log.read_text().splitlines()]
    assert [kind for kind, _ in events] == ["start", "end"] * (len(events) // 2), events
    windows = [(int(events[i][1]), int(events[i + 1][1])) for i in range(0, len(events), 2)]
    assert len(windows) == 2, windows
    (_, first_end), (second_start, _) = sorted(windows)
    assert first_end <= second_start, windows


# -- audit --------------------------------------------------------------------------------------
def test_eight_concurrent_applies_all_leave_records_and_the_chain_verifies(
        make_repo: Callable[..., GitRepo], tmp_path: Path) -> None:
    names = [f"s{i}" for i in range(8)]
    files = {".gitignore": "*.tfstate*\n.terraform*\n",
             "gitops-push.yaml": config(*((n, []) for n in names))}
    files.update({f"stacks/{n}/main.tf": tf(n) for n in names})
    r = make_repo(files)
    clones = []
    for n in names:
        c = tmp_path / f"clone-{n}"
        git(tmp_path, "clone", "-q", str(r.origin), str(c))
        clones.append(GitRepo(c, r.origin))
    procs = [gp_proc(c, "apply", "--stack", n) for c, n in zip(clones, names, strict=True)]
    codes = [p.wait(timeout=240) for p in procs]
    assert codes == [0] * 8, [p.stderr.read()[-2000:] for p in procs if p.stderr]
    records = audit_records(r)
    finished = {r_["run_id"] for r_ in records if r_["phase"] == "finished"}
    assert len(finished) == 8 and len(records) == 16
    code, env = gp(r, "audit", "verify")
    assert code == 0 and env["data"]["ok"] is True


def test_a_tampered_record_fails_verification(deploy_repo: GitRepo, tmp_path: Path) -> None:
    assert gp(deploy_repo, "apply", "--stack", "solo")[0] == 0
    work = tmp_path / "tamper"
    git(tmp_path, "clone", "-q", "-b", "gitops-push/audit", str(deploy_repo.origin), str(work))
    record = next(p for p in work.rglob("*.json") if "finished" in p.name)
    data = json.loads(record.read_text())
    data["actor"] = "mallory"
    record.write_text(json.dumps(data))
    git(work, "commit", "-qam", "innocent")
    git(work, "push", "-q", "origin", "gitops-push/audit")
    code, env = gp(deploy_repo, "audit", "verify")
    assert code == ExitCode.AUDIT_INVALID
    assert env["data"]["ok"] is False and env["data"]["problems"]


def test_a_rejected_push_keeps_the_record_in_the_spool_until_the_next_run(
        deploy_repo: GitRepo) -> None:
    hook = deploy_repo.origin / "hooks" / "pre-receive"
    # origin refuses the audit branch only (locks still work): the record must survive
    hook.write_text("#!/bin/sh\nwhile read old new ref; do\n"
                    "  [ \"$ref\" = refs/heads/gitops-push/audit ] && "
                    "{ echo 'audit pushes disabled' >&2; exit 1; }\ndone\nexit 0\n")
    hook.chmod(0o755)
    code, env = gp(deploy_repo, "apply", "--stack", "solo")
    assert code == ExitCode.AUDIT_NOT_PUSHED
    assert env["data"]["audit"]["pushed"] is False
    spool = Path(env["data"]["audit"]["spool"])
    assert spool.is_file()
    hook.unlink()
    deploy_repo.commit("next", {"stacks/solo/main.tf": tf("s3")}, push=True)
    code, env = gp(deploy_repo, "apply", "--stack", "solo")
    assert code == 0
    assert any("left in the spool" in w for w in env["warnings"])
    assert not spool.exists()
    run_ids = {r["run_id"] for r in audit_records(deploy_repo)}
    assert len(run_ids) == 2


def test_a_killed_run_is_reported_by_the_next_one_and_its_lock_expires(
        deploy_repo: GitRepo) -> None:
    deploy_repo.commit("slow", {"stacks/solo/main.tf": SLOW_TF}, push=True)
    p = gp_proc(deploy_repo, "apply", "--stack", "solo", "--lock-ttl", "4s")
    wait_until_started(deploy_repo, 1.0)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    # terraform runs in its own process group and outlives a SIGKILLed parent: stop it
    subprocess.run(["pkill", "-f", "sleep 30"], check=False)
    deploy_repo.commit("fast", {"stacks/solo/main.tf": tf("s9")}, push=True)
    time.sleep(4.5)  # the dead run's lock expires; it is not renewed any more
    code, env = gp(deploy_repo, "apply", "--stack", "solo", "--lock-timeout", "10s")
    assert code == 0, env
    assert any("never finished: it was interrupted" in w for w in env["warnings"])
    assert any("took over an expired lock" in w for w in env["warnings"])
    # reported once: the next run does not repeat it
    deploy_repo.commit("again", {"stacks/solo/main.tf": tf("s10")}, push=True)
    code, env = gp(deploy_repo, "apply", "--stack", "solo")
    assert code == 0 and not any("interrupted" in w for w in env["warnings"])


def _try_records(r: GitRepo) -> list[dict]:
    try:
        return audit_records(r)
    except AssertionError:
        return []


def wait_until_started(r: GitRepo, settle: float) -> None:
    """Until the run's started record is on origin, then ``settle`` s more (it is applying)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            rec["phase"] == "started" for rec in _try_records(r)):
        time.sleep(0.2)
    time.sleep(settle)


def test_sigterm_stops_terraform_and_records_the_interruption(deploy_repo: GitRepo) -> None:
    deploy_repo.commit("slow", {"stacks/solo/main.tf": SLOW_TF}, push=True)
    p = gp_proc(deploy_repo, "apply", "--stack", "solo", "--output", "json")
    wait_until_started(deploy_repo, 1.5)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == ExitCode.TERMINATED
    assert json.loads(out)["data"]["interrupted"] is True
    finished = [r for r in audit_records(deploy_repo) if r["phase"] == "finished"]
    assert finished[-1]["outcome"] == "interrupted"
    # the lock was released: a new run can take it at once
    deploy_repo.commit("fast", {"stacks/solo/main.tf": tf("s9")}, push=True)
    assert gp(deploy_repo, "apply", "--stack", "solo", "--lock-timeout", "1s")[0] == 0


def test_sigterm_while_waiting_for_a_lock_stops_at_once_and_records_it(
        deploy_repo: GitRepo) -> None:
    with lock_held(deploy_repo, "solo"):
        p = gp_proc(deploy_repo, "apply", "--stack", "solo", "--lock-timeout", "120s",
                    "--output", "json")
        wait_until_started(deploy_repo, 1)
        sent = time.monotonic()
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
        waited = time.monotonic() - sent
    assert p.returncode == ExitCode.TERMINATED
    assert waited < 30  # not the 120 s lock timeout
    (row,) = json.loads(out)["data"]["stacks"]
    assert row["result"] == "interrupted"
    finished = [r for r in audit_records(deploy_repo) if r["phase"] == "finished"]
    assert finished[-1]["outcome"] == "interrupted"


def test_ctrl_c_during_a_run_records_an_interruption_not_a_success(
        deploy_repo: GitRepo) -> None:
    deploy_repo.commit("slow", {"stacks/solo/main.tf": SLOW_TF}, push=True)
    p = gp_proc(deploy_repo, "apply", "--stack", "solo")
    wait_until_started(deploy_repo, 1.5)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=60)
    assert p.returncode == ExitCode.INTERRUPTED
    finished = [r for r in audit_records(deploy_repo) if r["phase"] == "finished"]
    assert finished[-1]["outcome"] == "interrupted"
    assert [(st["name"], st["result"]) for st in finished[-1]["stacks"]] == [
        ("solo", "interrupted")]


def test_bad_lock_settings_fail_before_anything_is_recorded(deploy_repo: GitRepo) -> None:
    code, _ = gp(deploy_repo, "apply", "--lock-ttl", "0s")
    assert code != 0
    assert _try_records(deploy_repo) == []  # no started record left to look interrupted


def test_nothing_is_applied_when_the_started_record_can_be_neither_pushed_nor_spooled(
        deploy_repo: GitRepo, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool directory should be\n")
    hook = deploy_repo.origin / "hooks" / "pre-receive"  # origin refuses audit records
    hook.write_text("#!/bin/sh\nwhile read old new ref; do\n"
                    '  [ "$ref" = refs/heads/gitops-push/audit ] && exit 1\ndone\nexit 0\n')
    hook.chmod(0o755)
    code, env = gp(deploy_repo, "apply", "--stack", "solo",
                   env={"GITOPS_PUSH_SPOOL_DIR": str(blocker / "spool")})
    assert code == ExitCode.FAILED
    (row,) = env["data"]["stacks"]
    assert row["result"] == "failed" and "neither pushed nor kept in the spool" in row["message"]
    assert not (deploy_repo.path / "stacks/solo/terraform.tfstate").exists()


# -- drift and rollback ---------------------------------------------------------------------------
def test_drift_is_detected_with_its_exit_code_and_fixed(deploy_repo: GitRepo) -> None:
    assert gp(deploy_repo, "apply")[0] == 0
    subprocess.run(["terraform", "apply", "-auto-approve", "-input=false", "-no-color",
                    "-replace=terraform_data.r"], cwd=deploy_repo.path / "stacks/solo",
                   check=True, capture_output=True, env={**os.environ, "TF_DATA_DIR": str(
                       deploy_repo.path.parent / "manual-tf")})
    (deploy_repo.path / "stacks/net/main.tf").write_text(tf("hand-edited"))
    subprocess.run(["terraform", "init", "-input=false"], cwd=deploy_repo.path / "stacks/net",
                   check=True, capture_output=True)
    subprocess.run(["terraform", "apply", "-auto-approve", "-input=false"],
                   cwd=deploy_repo.path / "stacks/net", check=True, capture_output=True)
    deploy_repo.git("checkout", "--", "stacks/net/main.tf")
    code, env = gp(deploy_repo, "drift")
    assert code == ExitCode.DRIFT_DETECTED
    assert results(env)["net"] == "drifted"
    assert env["data"]["stacks"][[s["name"] for s in env["data"]["stacks"]].index("net")][
        "drift"]["items"]
    code, env = gp(deploy_repo, "drift", "--fix")
    assert code == 0 and results(env)["net"] == "fixed"
    assert gp(deploy_repo, "drift")[0] == 0


def test_rollback_commits_pushes_and_applies(deploy_repo: GitRepo) -> None:
    assert gp(deploy_repo, "apply")[0] == 0
    good = deploy_repo.head()
    deploy_repo.commit("bad change", {"stacks/solo/main.tf": tf("bad")}, push=True)
    assert gp(deploy_repo, "apply")[0] == 0
    code, env = gp(deploy_repo, "rollback", "--to", good, "--dry-run")
    assert code == 0 and results(env) == {"solo": "planned"}
    assert deploy_repo.head() != good and "bad" in (deploy_repo.path / "stacks/solo/main.tf"
                                                    ).read_text()
    code, env = gp(deploy_repo, "rollback", "--to", good)
    assert code == 0 and results(env) == {"solo": "applied"}
    assert (deploy_repo.path / "stacks/solo/main.tf").read_text() == tf("s1")
    assert deploy_repo.git("rev-parse", "origin/main") == deploy_repo.head()
    assert "Rollback-To: " + good in deploy_repo.git("log", "-1", "--format=%B")
    last = [r for r in audit_records(deploy_repo) if r["phase"] == "finished"][-1]
    assert last["command"] == "rollback" and last["rollback_to"] == good


def test_no_secret_reaches_any_record(make_repo: Callable[..., GitRepo], tmp_path: Path) -> None:
    secret = "hunter2-very-secret-value"
    body = ('variable "password" {\n  type      = string\n  sensitive = true\n}\n'
            'resource "terraform_data" "db" {\n  input = var.password\n}\n'
            'output "pw" {\n  value     = var.password\n  sensitive = true\n}\n')
    r = make_repo({".gitignore": "*.tfstate*\n.terraform*\n",
                   "gitops-push.yaml": ("version: 1\nstacks:\n  - name: db\n    path: db\n"
                                        "    type: terraform\n    terraform:\n"
                                        "      env: [TF_VAR_password]\n"),
                   "db/main.tf": body})
    md = tmp_path / "summary.md"
    p = gp_proc(r, "apply", "--output", "json", "--summary-md", str(md),
                env={**os.environ, "TF_VAR_password": secret})
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert secret not in out and secret not in err and secret not in md.read_text()
    for rec in audit_records(r):
        assert secret not in json.dumps(rec)


def test_status_shows_the_last_deployment_and_pending_changes(deploy_repo: GitRepo) -> None:
    code, env = gp(deploy_repo, "status")
    assert code == 0 and {s["state"] for s in env["data"]["stacks"]} == {"never deployed"}
    assert gp(deploy_repo, "apply")[0] == 0
    deployed = deploy_repo.head()
    deploy_repo.commit("solo v2", {"stacks/solo/main.tf": tf("s2")}, push=True)
    code, env = gp(deploy_repo, "status")
    rows = {s["name"]: s for s in env["data"]["stacks"]}
    assert rows["solo"]["state"] == "HEAD is ahead: changes pending"
    assert rows["net"]["state"] == "HEAD is ahead: no changes for this stack"
    assert rows["net"]["deployed_commit"] == deployed and rows["net"]["deployed_by"]


def test_pruning_a_namespace_is_refused_without_allow_destroy(
        make_repo: Callable[..., GitRepo], kube: Any) -> None:
    ns = f"{kube.namespace}-team"
    config = ("version: 1\nstacks:\n  - name: web\n    path: web\n    type: kubernetes\n"
              f"    kubernetes:\n      kubeconfig_env: WEB_KUBECONFIG\n      context: "
              f"{kube.context}\n      namespace: {kube.namespace}\n      wait: false\n")
    namespace = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  a: '1'\n"
    r = make_repo({"gitops-push.yaml": config, "web/ns.yaml": namespace, "web/cm.yaml": cm})
    env = {"WEB_KUBECONFIG": str(kube.kubeconfig), "KUBECACHEDIR": str(kube.cache_dir)}
    assert gp(r, "apply", env=env)[0] == 0
    assert kube.get("namespace", ns) is not None
    r.commit("drop the namespace", {"web/ns.yaml": None}, push=True)

    code, envelope = gp(r, "apply", env=env)
    assert code == ExitCode.FAILED and results(envelope) == {"web": "refused"}
    (row,) = envelope["data"]["stacks"]
    assert "--allow-destroy" in row["message"] and row["needs_consent"]
    assert kube.get("namespace", ns) is not None  # nothing was deleted

    code, envelope = gp(r, "apply", "--allow-destroy", env=env)
    assert code == 0 and results(envelope) == {"web": "applied"}
    gone = kube.get("namespace", ns)
    assert gone is None or gone.get("status", {}).get("phase") == "Terminating"


@pytest.mark.parametrize("mode", ["notes", "commit"])
def test_every_audit_mode_records_runs_that_verify(deploy_repo: GitRepo, mode: str) -> None:
    config = (deploy_repo.path / "gitops-push.yaml").read_text()
    deploy_repo.commit("audit mode", {"gitops-push.yaml": config + f"audit:\n  mode: {mode}\n"},
                       push=True)
    assert gp(deploy_repo, "apply")[0] == 0
    if mode == "commit":  # the records are commits on main itself, marked [skip ci]
        subjects = deploy_repo.git("log", "--format=%s", "HEAD..origin/main").splitlines()
        assert len(subjects) == 2 and all("[skip ci]" in s for s in subjects)
        deploy_repo.git("pull", "-q", "--ff-only")
    else:  # one note per deployed commit, on origin
        assert "refs/notes/gitops-push" in deploy_repo.git("ls-remote", "origin")
        assert deploy_repo.git("rev-parse", "origin/main") == deploy_repo.head()

    deploy_repo.commit("solo v2", {"stacks/solo/main.tf": tf("s2")}, push=True)
    code, env = gp(deploy_repo, "apply")
    assert code == 0 and results(env) == {"solo": "applied"}  # audit files change no stack
    code, env = gp(deploy_repo, "audit", "verify")
    assert code == 0 and env["data"]["ok"] and env["data"]["records"] == 4
    code, env = gp(deploy_repo, "audit", "log")
    assert code == 0 and [r["phase"] for r in env["data"]["runs"]] == ["finished", "finished"]
