"""The audit trail: stored in git without touching the checkout, hash-chained, verified,
never lost (spool), safe under concurrent writers. Real git, a bare origin, no mocks."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import GitRepo, git
from test_git_repo import spy_git

from gitops_push import audit
from gitops_push.audit.record import SpoolUnwritable
from gitops_push.audit.trail import Trail
from gitops_push.config import AuditSettings
from gitops_push.errors import AuditError, ExitCode, UserError
from gitops_push.git import Repo

BRANCH_REF = "refs/heads/gitops-push/audit"
HEAD_SHA = "a" * 40


def trail(g: GitRepo, mode: str = "branch", **kw: Any) -> Trail:
    kw.setdefault("sleep", lambda s: None)
    return Trail(Repo(g.path), AuditSettings(mode=mode), **kw)


def record(run_id: str, phase: str = "started", *, head: str = HEAD_SHA,
           stacks: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"schema_version": 1, "run_id": run_id, "phase": phase, "command": "apply",
            "head": head, "stacks": stacks if stacks is not None else [{"name": "app"}],
            **extra}


def run_ids(n: int) -> list[str]:
    return [f"20260101T0000{i:02d}Z-{i:08x}" for i in range(n)]


def clone(g: GitRepo, dest: Path) -> GitRepo:
    subprocess.run(["git", "clone", "-q", str(g.origin), str(dest)], check=True)
    return GitRepo(dest, g.origin)


def git_env(cwd: Path, *args: str, env: Mapping[str, str] | None = None,
            input: bytes | None = None) -> str:
    res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, input=input,
                         env={**os.environ, **(env or {})}, check=True)
    return res.stdout.decode().strip()


def rewrite(g: GitRepo, ref: str, edits: Mapping[str, bytes | None]) -> str:
    """Replay ``ref``'s history with files replaced (bytes) or removed (None) in every
    commit that has them — what someone covering their tracks would do."""
    parent: str | None = None
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        for c in git(g.path, "rev-list", "--reverse", ref).split():
            git_env(g.path, "read-tree", c, env=env)
            present = set(git(g.path, "ls-tree", "-r", "--name-only", c).splitlines())
            for path, content in edits.items():
                if path not in present:
                    continue
                if content is None:
                    git_env(g.path, "update-index", "--force-remove", path, env=env)
                else:
                    blob = git_env(g.path, "hash-object", "-w", "--stdin", input=content)
                    git_env(g.path, "update-index", "--cacheinfo", f"100644,{blob},{path}",
                            env=env)
            tree = git_env(g.path, "write-tree", env=env)
            msg = git(g.path, "log", "-1", "--format=%B", c)
            parent = git_env(g.path, "commit-tree", tree, *(["-p", parent] if parent else []),
                             "-m", msg)
    assert parent is not None
    return parent


def stored(g: GitRepo, ref: str = "origin/gitops-push/audit") -> dict[int, tuple[str, bytes]]:
    """seq -> (path, exact bytes) read with plain git, as docs/audit.md does by hand."""
    out = {}
    for path in git(g.path, "ls-tree", "-r", "--name-only", ref).splitlines():
        raw = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=g.path, capture_output=True,
                             check=True).stdout
        out[json.loads(raw)["seq"]] = (path, raw)
    return out


@pytest.fixture
def g(make_repo: Callable[..., GitRepo]) -> GitRepo:
    return make_repo({"README.md": "hello\n"})


# -- branch mode: append, read back, verify ------------------------------------------------
def test_append_reads_back_in_order_without_touching_the_checkout(g: GitRepo) -> None:
    head_before = g.head()
    (g.path / "untracked.txt").write_text("mine\n")
    t = trail(g)
    ids = run_ids(3)
    for rid in ids:
        for phase in ("started", "finished"):
            res = t.append(record(rid, phase))
            assert res.pushed and not res.local_only and res.spool_path is None
            assert res.path and res.path.startswith(".gitops-push/audit/2026/01/")
    got = t.records()
    assert [(r["run_id"], r["phase"]) for r in got] == [
        (rid, p) for rid in ids for p in ("started", "finished")]
    assert [r["seq"] for r in got] == list(range(6))
    assert got[0]["prev_sha256"] is None
    # the checkout is untouched: same HEAD, clean index, our untracked file alone
    assert g.head() == head_before
    assert g.git("status", "--porcelain") == "?? untracked.txt"
    assert g.git("ls-remote", "origin", BRANCH_REF)
    # by hand: each record's prev_sha256 is sha256 of the previous file's exact bytes
    files = stored(g)
    for seq in range(1, 6):
        prev_bytes = files[seq - 1][1]
        assert json.loads(files[seq][1])["prev_sha256"] == hashlib.sha256(prev_bytes).hexdigest()
    # one commit per record, each with [skip ci] so a push never starts a pipeline
    subjects = g.git("log", "--format=%s", "origin/gitops-push/audit").splitlines()
    assert len(subjects) == 6 and all(s.endswith("[skip ci]") for s in subjects)
    result = t.verify()
    assert result.ok and result.count == 6 and result.problems == ()
    assert result.error() is None


def test_second_clone_reads_the_same_trail(g: GitRepo, tmp_path: Path) -> None:
    t = trail(g)
    t.append(record(run_ids(1)[0]))
    other = clone(g, tmp_path / "other")
    assert [r["seq"] for r in trail(other).records()] == [0]
    trail(other).append(record(run_ids(2)[1]))
    assert [r["seq"] for r in t.records()] == [0, 1]


def test_append_builds_on_the_tip_it_last_saw_and_retries_when_another_run_got_there_first(
        g: GitRepo, tmp_path: Path) -> None:
    t = trail(g)
    first = t.append(record(run_ids(1)[0]))
    second = t.append(record(run_ids(2)[1]))  # this process pushed the tip: no fetch needed
    assert (first.attempts, second.attempts) == (1, 1)

    other = clone(g, tmp_path / "other")
    trail(other).append(record(run_ids(3)[2]))  # another pipeline moves origin's tip
    third = t.append(record(run_ids(4)[3]))  # built on a stale tip: refused, then rebuilt
    assert third.pushed and third.attempts == 2 and third.seq == 3
    assert [r["seq"] for r in t.records()] == [0, 1, 2, 3]
    assert t.verify().ok


@pytest.mark.parametrize("mode", ["branch", "notes", "commit"])
def test_a_writer_knows_the_trail_it_pushed_exactly_as_git_holds_it(
        g: GitRepo, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """After an append the writer knows the new tip's trail without reading it back (a run
    checks it under each stack's lock, issue 14); a reader of that commit finds the same."""
    t = trail(g, mode)
    for i, rid in enumerate(run_ids(3)):  # files beside each other; a note growing by a line
        assert t.append(record(rid, head=HEAD_SHA if i < 2 else "b" * 40)).pushed
    calls = spy_git(monkeypatch)
    known = t.seen_records()
    assert calls == []
    fresh = trail(g, mode)
    assert known == fresh.records() and [r["seq"] for r in known] == [0, 1, 2]
    tip = fresh._known_tip
    assert tip is not None and tip[0] is not None
    mine, theirs = t._snapshot(tip[0]), fresh._snapshot(tip[0])
    assert mine is not theirs
    assert [(r, r.data, r.raw) for r in mine.records] == [(r, r.data, r.raw)
                                                          for r in theirs.records]
    assert (mine.paths, mine.notes, mine.invalid) == (theirs.paths, theirs.notes,
                                                      theirs.invalid)


# -- tampering -------------------------------------------------------------------------------
def _four(g: GitRepo) -> Trail:
    t = trail(g)
    for rid in run_ids(4):
        t.append(record(rid))
    return t


def test_edited_record_in_rewritten_history_names_the_first_broken_link(
        g: GitRepo, tmp_path: Path) -> None:
    t = _four(g)
    path1, raw1 = stored(g)[1]
    data = json.loads(raw1)
    data["command"] = "rollback"  # seq and prev_sha256 kept: only the chain can tell
    forged = audit.encode(data)
    attacker = clone(g, tmp_path / "attacker")
    attacker.git("fetch", "-q", "origin", f"{BRANCH_REF}:refs/remotes/origin/gitops-push/audit")
    new = rewrite(attacker, "origin/gitops-push/audit", {path1: forged})
    attacker.git("push", "-q", "-f", "origin", f"{new}:{BRANCH_REF}")

    result = t.verify()
    assert not result.ok
    first = result.first
    assert first is not None and first.kind == "broken-link"
    assert first.seq == 1 and first.location == path1
    assert "seq 1" in first.message and path1 in first.message
    # this clone had seen the old tip: the force-push itself is reported too
    assert any(p.kind == "rewritten" for p in result.problems)
    err = result.error()
    assert err is not None and err.exit_code == ExitCode.AUDIT_INVALID
    # a fresh clone, with no memory of the old tip, still finds the broken link
    fresh = trail(clone(g, tmp_path / "fresh")).verify()
    assert fresh.first is not None and fresh.first.kind == "broken-link"
    assert fresh.first.seq == 1


def test_record_removed_from_history_is_a_missing_link(g: GitRepo, tmp_path: Path) -> None:
    _four(g)
    path2, _ = stored(g)[2]
    attacker = clone(g, tmp_path / "attacker")
    attacker.git("fetch", "-q", "origin", f"{BRANCH_REF}:refs/remotes/origin/gitops-push/audit")
    new = rewrite(attacker, "origin/gitops-push/audit", {path2: None})
    attacker.git("push", "-q", "-f", "origin", f"{new}:{BRANCH_REF}")

    result = trail(clone(g, tmp_path / "auditor")).verify()
    assert not result.ok and result.first is not None
    assert result.first.kind == "missing-link" and result.first.seq == 2
    assert "missing link: no record with seq 2" in result.first.message
    assert result.count == 3


def _audit_checkout(g: GitRepo, tmp_path: Path) -> GitRepo:
    other = clone(g, tmp_path / "editor")
    other.git("checkout", "-q", "gitops-push/audit")
    return other


def test_commit_editing_the_newest_record_is_reported(g: GitRepo, tmp_path: Path) -> None:
    t = _four(g)
    path3, raw3 = stored(g)[3]
    editor = _audit_checkout(g, tmp_path)
    data = json.loads(raw3)
    data["stacks"] = []
    editor.commit("tidy up", {path3: audit.encode(data).decode()}, push=True)

    result = t.verify()
    assert not result.ok
    kinds = [p.kind for p in result.problems]
    assert kinds == ["edited"]  # no later record links to it: only history can tell
    problem = result.problems[0]
    assert problem.location == path3 and problem.commit == editor.head()
    assert "edited the record" in problem.message and editor.head()[:12] in problem.message


def test_commit_deleting_a_record_is_reported(g: GitRepo, tmp_path: Path) -> None:
    t = _four(g)
    path1, _ = stored(g)[1]
    editor = _audit_checkout(g, tmp_path)
    editor.commit("remove", {path1: None}, push=True)

    result = t.verify()
    kinds = {p.kind for p in result.problems}
    assert kinds == {"missing-link", "deleted"}
    assert result.first is not None and result.first.seq == 1
    deleted = next(p for p in result.problems if p.kind == "deleted")
    assert deleted.location == path1 and deleted.commit == editor.head()


def test_invalid_record_file_is_reported(g: GitRepo, tmp_path: Path) -> None:
    t = _four(g)
    editor = _audit_checkout(g, tmp_path)
    editor.commit("junk", {".gitops-push/audit/2026/01/junk.json": "{not json"}, push=True)
    result = t.verify()
    assert [p.kind for p in result.problems] == ["invalid"]
    assert "junk.json" in result.problems[0].message


# -- concurrency -----------------------------------------------------------------------------
WRITER = """
import sys, time
from pathlib import Path
from gitops_push.audit import Trail, new_run_id
from gitops_push.config import AuditSettings
from gitops_push.git import Repo
path, go, mode, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
trail = Trail(Repo(path), AuditSettings(mode=mode))
rid = new_run_id() + "-" + n
while not go.exists():
    time.sleep(0.005)
for phase in ("started", "finished"):
    res = trail.append({"schema_version": 1, "run_id": rid, "phase": phase, "command": "apply",
                        "head": "a" * 40, "stacks": [{"name": "app", "result": "success"}]})
    assert res.pushed and not res.local_only, res.message
print(rid)
"""


@pytest.mark.parametrize(("mode", "writers"), [("branch", 8), ("notes", 4)])
def test_concurrent_processes_all_land_with_a_valid_chain(
        g: GitRepo, tmp_path: Path, mode: str, writers: int) -> None:
    clones = [clone(g, tmp_path / f"w{i}") for i in range(writers)]
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(c.path), str(go), mode, str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, c in enumerate(clones)]
    time.sleep(0.5)  # let every writer reach the starting line
    go.touch()
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        ids.append(out.strip())
    t = trail(g, mode)
    got = t.records()
    assert sorted({r["run_id"] for r in got}) == sorted(ids)
    assert len(got) == 2 * writers
    assert [r["seq"] for r in got] == list(range(2 * writers))
    result = t.verify()
    assert result.ok, [str(p) for p in result.problems]


# -- never lost: the spool -------------------------------------------------------------------
def _reject_hook(origin: Path) -> Path:
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'audit pushes are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    return hook


def test_rejected_push_keeps_the_record_in_the_spool_then_flushes_it(
        g: GitRepo, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    t = trail(g, spool_dir=spool)
    hook = _reject_hook(g.origin)
    first, second = run_ids(2)
    res = t.append(record(first))
    assert not res.pushed and res.spool_path is not None
    assert res.spool_path.parent == spool and res.spool_path.is_file()
    assert "pre-receive hook declined" in (res.reason or "")
    saved = json.loads(res.spool_path.read_text())
    assert saved["record"]["run_id"] == first and "seq" not in saved["record"]
    err = res.error()
    assert isinstance(err, AuditError) and err.exit_code == ExitCode.AUDIT_NOT_PUSHED == 6
    assert str(res.spool_path) in err.message
    assert not g.git("ls-remote", "origin", BRANCH_REF)
    assert t.spooled() == [res.spool_path]

    hook.unlink()
    res2 = t.append(record(second))
    assert res2.pushed and res2.flushed == 1
    assert t.spooled() == [] and not list(spool.glob("*"))
    assert [(r["run_id"], r["seq"]) for r in t.records()] == [(first, 0), (second, 1)]
    assert t.verify().ok


def test_unreachable_origin_spools_and_flush_spool_pushes_later(g: GitRepo,
                                                                tmp_path: Path) -> None:
    t = trail(g, environ={**os.environ, "GITOPS_PUSH_SPOOL_DIR": "spool-here"})
    assert t.spool_dir == g.path / "spool-here"  # relative: to the repository root
    moved = g.origin.with_name("gone.git")
    g.origin.rename(moved)
    res = t.append(record(run_ids(1)[0]))
    assert not res.pushed and res.spool_path is not None
    assert "cannot fetch" in (res.reason or "")
    # while origin is down, a second record queues behind the first, in order
    res_b = t.append(record(run_ids(2)[1]))
    assert not res_b.pushed and "still waiting in the spool" in (res_b.reason or "")
    assert len(t.spooled()) == 2
    with pytest.raises(AuditError, match="2 spooled audit record"):
        t.flush_spool()
    moved.rename(g.origin)
    pushed = t.flush_spool()
    assert [p.seq for p in pushed] == [0, 1] and t.spooled() == []
    assert [r["run_id"] for r in t.records()] == run_ids(2)


def test_default_spool_is_in_the_git_dir(g: GitRepo) -> None:
    assert trail(g).spool_dir == (g.path / ".git" / "gitops-push" / "spool").resolve()


def test_flush_does_not_push_a_record_twice(g: GitRepo, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    t = trail(g, spool_dir=spool)
    hook = _reject_hook(g.origin)
    res = t.append(record(run_ids(1)[0]))
    assert res.spool_path is not None
    copy = res.spool_path.read_bytes()
    hook.unlink()
    assert len(t.flush_spool()) == 1
    # the spool file comes back (deleting it failed after a successful push, say)
    res.spool_path.write_bytes(copy)
    again = t.flush_spool()
    assert len(again) == 1 and again[0].already_present
    assert len(t.records()) == 1


def test_unreadable_spool_file_is_set_aside_not_blocking(g: GitRepo, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "20260101T000000000000Z-x-started.json").write_text("{truncated")
    t = trail(g, spool_dir=spool)
    res = t.append(record(run_ids(1)[0]))
    assert res.pushed and res.flushed == 0
    assert (spool / "20260101T000000000000Z-x-started.unreadable").is_file()
    assert any("unreadable" in w for w in t.warnings)


def test_unwritable_spool_is_a_clear_error(g: GitRepo, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    t = trail(g, spool_dir=blocker / "spool")
    _reject_hook(g.origin)
    with pytest.raises(SpoolUnwritable) as exc:
        t.append(record(run_ids(1)[0]))
    assert "could not be kept in the spool" in exc.value.message
    assert "GITOPS_PUSH_SPOOL_DIR" in exc.value.message
    assert exc.value.record["run_id"] == run_ids(1)[0]  # the caller can still log it
    assert blocker.read_text() == "not a directory\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_spool_directory_is_a_clear_error(g: GitRepo, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    spool.chmod(0o555)
    try:
        _reject_hook(g.origin)
        with pytest.raises(SpoolUnwritable, match="could not be kept in the spool"):
            trail(g, spool_dir=spool).append(record(run_ids(1)[0]))
        assert list(spool.iterdir()) == []
    finally:
        spool.chmod(0o755)


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from gitops_push.audit.trail import Trail, SpoolUnwritable
from gitops_push.config import AuditSettings
from gitops_push.git import Repo
trail = Trail(Repo(sys.argv[1]), AuditSettings(), spool_dir=sys.argv[2], sleep=lambda s: None)
rec = {"run_id": "20260101T000000Z-0000000f", "phase": "started", "pad": "x" * 20000}
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    trail.append(rec)
except SpoolUnwritable as exc:
    print("refused:", exc.message)
else:
    print("stored?!")
"""


def test_full_disk_leaves_no_partial_spool_file(g: GitRepo, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    _reject_hook(g.origin)
    out = subprocess.run([sys.executable, "-c", FULL_DISK, str(g.path), str(spool)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused:"), out.stdout
    assert list(spool.iterdir()) == []  # no partial record, no temp file


# -- notes mode ------------------------------------------------------------------------------
def test_notes_mode_round_trip_and_append_only(g: GitRepo, tmp_path: Path) -> None:
    first_commit = g.head()
    second_commit = g.commit("next", {"b.txt": "b\n"}, push=True)
    t = trail(g, "notes")
    ids = run_ids(3)
    t.append(record(ids[0], head=first_commit))
    t.append(record(ids[0], "finished", head=first_commit))
    res = t.append(record(ids[1], head=second_commit))
    assert res.pushed and res.path == f"notes:{second_commit}:1"
    note = g.git("notes", "--ref", "gitops-push", "show", first_commit).splitlines()
    assert [json.loads(line)["phase"] for line in note] == ["started", "finished"]
    assert [r["seq"] for r in t.records()] == [0, 1, 2]
    assert g.git("status", "--porcelain") == ""
    assert t.verify().ok

    # someone rewrites a line of the note with an ordinary commit on the notes ref
    other = clone(g, tmp_path / "other")
    other.git("fetch", "-q", "origin", "refs/notes/gitops-push:refs/notes/gitops-push")
    edited = note[0].replace('"apply"', '"rollback"') + "\n" + note[1] + "\n"
    other.git("notes", "--ref", "gitops-push", "add", "-f", "-m", edited.rstrip("\n"),
              first_commit)
    other.git("push", "-q", "origin", "refs/notes/gitops-push")
    result = t.verify()
    kinds = [p.kind for p in result.problems]
    assert "broken-link" in kinds and "edited" in kinds
    assert result.first is not None and result.first.seq == 0


# -- commit mode -----------------------------------------------------------------------------
def test_commit_mode_commits_to_the_deployed_branch_with_skip_ci(g: GitRepo,
                                                                   tmp_path: Path) -> None:
    head_before = g.head()
    t = trail(g, "commit")
    ids = run_ids(2)
    assert t.append(record(ids[0])).pushed
    # a developer pushes to main in between: the next record is rebuilt on their commit
    dev = clone(g, tmp_path / "dev")
    dev_commit = dev.commit("feature", {"feature.txt": "x\n"}, push=True)
    res = t.append(record(ids[1]))
    assert res.pushed and res.ref == "refs/heads/main"
    log = g.git("log", "--format=%H %s", "origin/main").splitlines()
    assert dev_commit in log[1]
    assert all("[skip ci]" in line for line in log[:1] + log[2:3])
    assert g.git("ls-tree", "-r", "--name-only", "origin/main", "--",
                 ".gitops-push/audit").count(".json") == 2
    # the checkout did not move and is clean
    assert g.head() == head_before and g.git("status", "--porcelain") == ""
    assert not (g.path / ".gitops-push").exists()
    assert [r["seq"] for r in t.records()] == [0, 1]
    assert t.verify().ok


def test_a_record_never_brings_back_commits_removed_from_origin(g: GitRepo,
                                                                 tmp_path: Path) -> None:
    # A leaked secret lands on main while its pipeline applies; incident response
    # force-pushes main back. The run's next record must build on the rewound tip.
    g.commit("leaked secret", {"secret.txt": "hunter2\n"}, push=True)
    t = trail(g, "commit")
    rid = run_ids(1)[0]
    assert t.append(record(rid, "started")).pushed
    ops = clone(g, tmp_path / "ops")
    ops.git("reset", "-q", "--hard", "HEAD~2")
    ops.git("push", "-q", "-f", "origin", "HEAD:main")

    res = t.append(record(rid, "finished"))

    assert res.pushed and res.attempts == 2  # the stale tip was refused, then rebuilt
    ops.git("fetch", "-q", "origin")
    assert "leaked secret" not in ops.git("log", "--format=%s", "origin/main")
    assert ops.git("ls-tree", "--name-only", "origin/main", "secret.txt") == ""


# -- reading helpers -------------------------------------------------------------------------
def test_last_successful_and_log(g: GitRepo) -> None:
    t = trail(g)
    a, b, c, d = run_ids(4)
    sha = {x: f"{i:x}" * 40 for i, x in enumerate((a, b, c, d), 1)}
    t.append(record(a, "finished", head=sha[a], finished_at="2026-01-01T00:00:00Z",
                    stacks=[{"name": "app", "result": "success"},
                            {"name": "db", "result": "success"}]))
    t.append(record(b, "finished", head=sha[b], finished_at="2026-02-01T00:00:00Z",
                    stacks=[{"name": "app", "result": "success"},
                            {"name": "db", "result": "failed"}]))
    t.append(record(c, "finished", head=sha[c], finished_at="2026-03-01T00:00:00Z",
                    stacks=[{"name": "app", "result": "failed"}]))
    t.append(record(d, "started", head=sha[d], started_at="2026-04-01T00:00:00Z"))
    app, db = t.last_successful("app"), t.last_successful("db")
    assert app is not None and app.head == sha[b] and app.run_id == b
    assert db is not None and db.head == sha[a]
    assert t.last_successful("nope") is None
    # log: one entry per run, oldest first; --stack and --since filter
    assert [e["run_id"] for e in t.log()] == [a, b, c, d]
    assert [e["run_id"] for e in t.log(stack="db")] == [a, b]
    assert [e["run_id"] for e in t.log(since="2026-02-15")] == [c, d]
    with pytest.raises(UserError, match="--since"):
        t.log(since="last tuesday")


def test_interrupted_runs() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    recs = [
        record("r1", "started", started_at="2026-01-01T10:00:00Z"),
        record("r1", "finished"),
        record("r2", "started", started_at="2026-01-01T10:00:00Z"),  # killed
        record("r3", "started", started_at="2026-01-01T11:59:00Z"),  # just began elsewhere
        record("r4", "started", started_at="2026-01-01T10:00:00Z"),  # holds a live lock
        record("me", "started", started_at="2026-01-01T12:00:00Z"),
    ]
    assert [r["run_id"] for r in audit.interrupted_runs(recs, "me")] == ["r2", "r3", "r4"]
    assert [r["run_id"] for r in audit.interrupted_runs(
        recs, "me", active_run_ids={"r4"}, min_age=timedelta(minutes=10), now=now)] == ["r2"]
    # a later record that reported r2 acknowledges it: each interruption is reported once
    acked = [*recs, record("r5", "started", interrupted_runs=["r2"])]
    assert "r2" not in [r["run_id"] for r in audit.interrupted_runs(acked, "me")]


def test_status_counts_spool_and_interrupted(g: GitRepo, tmp_path: Path) -> None:
    t = trail(g, spool_dir=tmp_path / "spool")
    t.append(record("20260101T000000Z-00000001"))
    st = t.status()
    assert st.count == 1 and st.remote == "origin" and st.spooled == ()
    assert st.interrupted == ("20260101T000000Z-00000001",)


# -- secrets ---------------------------------------------------------------------------------
def test_a_record_quoting_a_secret_is_stored_redacted_never_dropped(g: GitRepo) -> None:
    secret = "hunter2-s3cr3t"
    rec = record("20260101T000000Z-00000001",
                 stacks=[{"name": "app", "error": f"login failed with password {secret}"}])
    clean = audit.scrub(rec, {secret: "$DB_PASSWORD", "ab": "$SHORT"})
    assert clean["stacks"][0]["error"] == ("login failed with password "
                                           "(redacted: $DB_PASSWORD)")
    assert clean["redactions"] == [{"field": "stacks[0].error", "secret": "$DB_PASSWORD"}]
    assert audit.scrub(rec, ["ab", ""]) == rec  # too short to mean anything: not replaced
    t = trail(g, secrets={secret: "$DB_PASSWORD"})
    assert t.append(rec).pushed
    stored = t.records()
    assert len(stored) == 1 and stored[0]["redactions"][0]["secret"] == "$DB_PASSWORD"
    assert "(redacted: $DB_PASSWORD)" in stored[0]["stacks"][0]["error"]
    history = g.git("log", "-p", "--all", "--format=%B")
    assert secret not in history and t.verify().ok


# -- no origin -------------------------------------------------------------------------------
def test_no_origin_records_in_the_local_ref(make_repo: Callable[..., GitRepo]) -> None:
    g = make_repo({"README.md": "x\n"})
    g.git("remote", "remove", "origin")
    t = trail(g)
    res = t.append(record(run_ids(1)[0]))
    assert res.pushed and res.local_only and "no origin remote" in res.message
    assert g.git("rev-parse", "--verify", BRANCH_REF)
    assert t.records()[0]["seq"] == 0 and t.verify().ok
    assert g.git("status", "--porcelain") == ""
    # commit mode would move the checked-out branch: the record waits in the spool
    c = trail(g, "commit")
    spooled = c.append(record(run_ids(2)[1]))
    assert not spooled.pushed and "checked-out branch" in (spooled.reason or "")


def test_run_ids_sort_by_time_and_use_safe_characters() -> None:
    a = audit.new_run_id()
    assert set(a) <= set("0123456789abcdefghijklmnopqrstuvwxyzTZ-")
    assert audit.parse_time(a) is not None
    assert audit.now_utc().endswith("Z")
    assert audit.record_time({"run_id": "20260102T030405Z-x"}) == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
