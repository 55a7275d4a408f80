"""Per-stack locks: refs on a real bare origin (or the local repo), compare-and-swap by
``--force-with-lease`` / ``update-ref``, expiry and takeover, release on failure."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import GitRepo

from gitops_push.errors import ExitCode, LockError
from gitops_push.git import Repo
from gitops_push.lock import (
    LOCK_PREFIX,
    LockOwner,
    LockSet,
    LockStore,
    active_run_ids,
    lock_ref,
    utcnow,
)

ALICE = {"run_id": "20260101T000000Z-aaaaaaaa", "actor": "alice",
         "pipeline_url": "https://ci.example.com/acme/infra/-/pipelines/101", "host": "runner-1",
         "command": "apply"}
BOB = {"run_id": "20260101T000100Z-bbbbbbbb", "actor": "bob",
       "pipeline_url": "https://ci.example.com/acme/infra/-/pipelines/102", "host": "runner-2"}


def locks(g: GitRepo, owner: dict[str, str], **kw: object) -> LockSet:
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("timeout", 5.0)
    return LockSet(Repo(g.path), owner, **kw)  # type: ignore[arg-type]


def origin_refs(g: GitRepo) -> dict[str, str]:
    out = g.git("ls-remote", "origin", LOCK_PREFIX + "*")
    return {ref: sha for sha, ref in (line.split("\t") for line in out.splitlines())}


@pytest.fixture
def g(make_repo: Callable[..., GitRepo]) -> GitRepo:
    return make_repo({"README.md": "hello\n"})


def test_acquire_pushes_a_lock_ref_and_release_deletes_it(g: GitRepo) -> None:
    ls = locks(g, ALICE)
    with ls.hold("app") as got:
        assert [a.stack for a in got] == ["app"]
        refs = origin_refs(g)
        assert refs == {"refs/gitops-push/locks/app": got[0].sha}
        message = json.loads(g.git("log", "-1", "--format=%B", got[0].sha))
        assert message["owner"]["actor"] == "alice"
        assert message["owner"]["pipeline_url"] == ALICE["pipeline_url"]
        assert message["owner"]["pid"] > 0 and message["stack"] == "app"
        assert message["acquired_at"] < message["expires_at"]
        assert g.git("show", "-s", "--format=%T", got[0].sha) == g.git(
            "hash-object", "-t", "tree", "/dev/null")  # the empty tree: no content
        assert ls.held.keys() == {"app"}
    assert origin_refs(g) == {}
    assert ls.held == {} and ls.warnings == []
    assert g.git("status", "--porcelain") == ""


def test_second_acquirer_times_out_naming_the_holder(g: GitRepo) -> None:
    holder = locks(g, ALICE)
    with holder.hold("app"):
        waiter = locks(g, BOB, timeout=0.4)
        start = time.monotonic()
        with pytest.raises(LockError) as exc:
            waiter.acquire("app")
        assert time.monotonic() - start >= 0.4
    err = exc.value
    assert err.exit_code == ExitCode.LOCKED == 5
    assert "alice" in err.message and ALICE["pipeline_url"] in err.message
    assert "held since 20" in err.message and "gitops-push locks break app --force" in err.message
    assert "git push origin :refs/gitops-push/locks/app" in err.message
    assert waiter.held == {}


def test_waiter_gets_the_lock_once_it_is_released(g: GitRepo) -> None:
    holder = locks(g, ALICE)
    holder.acquire("app")
    waiter = locks(g, BOB, timeout=10)
    import threading

    threading.Timer(0.3, holder.release_all).start()
    got = waiter.acquire("app")
    assert got[0].waited >= 0.2 and got[0].took_over is None
    waiter.release_all()


def test_expired_lock_is_taken_over_and_reported(g: GitRepo) -> None:
    dead = locks(g, ALICE, heartbeat=False)  # stands for a SIGKILLed run
    old = dead.acquire("app")[0]
    later = locks(g, BOB, clock=lambda: utcnow() + timedelta(hours=2))
    got = later.acquire("app")[0]
    assert got.took_over is not None and got.took_over.sha == old.sha
    assert got.took_over.owner.actor == "alice"
    assert later.takeovers == [got.took_over]
    assert origin_refs(g)["refs/gitops-push/locks/app"] == got.sha
    # the dead run's late release must not delete the new holder's lock
    assert dead.release("app") is False
    assert "could not release" in dead.warnings[0]
    assert origin_refs(g)["refs/gitops-push/locks/app"] == got.sha
    later.release_all()
    assert origin_refs(g) == {}


def test_a_refused_takeover_fails_cleanly_instead_of_spinning(g: GitRepo) -> None:
    hook = g.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nwhile read old new ref; do\n"
                    "  case $old in *[!0]*) case $new in *[!0]*) echo 'no overwrites' >&2; "
                    "exit 1;; esac;; esac\ndone\n")
    hook.chmod(0o755)
    locks(g, ALICE, heartbeat=False).acquire("app")
    later = locks(g, BOB, timeout=30, clock=lambda: utcnow() + timedelta(hours=2))
    start = time.monotonic()
    with pytest.raises(LockError, match=r"(?s)cannot take the lock of stack 'app'.*no overwrites"):
        later.acquire("app")
    assert time.monotonic() - start < 15
    assert later.held == {}


def test_release_on_exception(g: GitRepo) -> None:
    ls = locks(g, ALICE)
    with pytest.raises(RuntimeError, match="apply failed"), ls.hold("app", "db"):
        assert set(origin_refs(g)) == {lock_ref("app"), lock_ref("db")}
        raise RuntimeError("apply failed")
    assert origin_refs(g) == {}


def test_several_stacks_in_sorted_order_and_all_or_nothing(g: GitRepo) -> None:
    other = locks(g, BOB)
    other.acquire("web")
    ls = locks(g, ALICE, timeout=0.2)
    with pytest.raises(LockError, match="'web' is locked by"):
        ls.acquire("web", "app", "db")  # app and db are taken first, then given back
    assert set(origin_refs(g)) == {lock_ref("web")}
    got = ls.acquire("db", "app")
    assert [a.stack for a in got] == ["app", "db"]
    ls.release_all()
    other.release_all()


CONTENDER = """
import os, sys, time
from pathlib import Path
from gitops_push.git import Repo
from gitops_push.lock import LockSet
path, inside, log, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
me = str(os.getpid())
locks = LockSet(Repo(path), {"run_id": "run-" + me, "actor": me}, timeout=120,
                poll_interval=0.02)
while not go.exists():
    time.sleep(0.005)
for _ in range(int(sys.argv[5])):
    with locks.hold("app"):
        if inside.exists():
            log.open("a").write(f"{me} entered while {inside.read_text()} was inside\\n")
        inside.write_text(me)
        time.sleep(0.05)
        if inside.read_text() != me:
            log.open("a").write(f"{me} saw {inside.read_text()} inside with it\\n")
        inside.unlink()
        log.open("a").write("ok\\n")
"""


def test_processes_contending_are_never_inside_together(g: GitRepo, tmp_path: Path) -> None:
    clones = []
    for i in range(3):
        dest = tmp_path / f"c{i}"
        subprocess.run(["git", "clone", "-q", str(g.origin), str(dest)], check=True)
        clones.append(dest)
    inside, log, go = tmp_path / "inside", tmp_path / "log", tmp_path / "go"
    rounds = 4
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(c), str(inside), str(log),
                               str(go), str(rounds)], stderr=subprocess.PIPE, text=True)
             for c in clones]
    time.sleep(0.5)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    lines = log.read_text().splitlines()
    assert lines == ["ok"] * (rounds * len(clones)), lines
    assert origin_refs(g) == {}


def test_no_origin_uses_local_compare_and_swap(make_repo: Callable[..., GitRepo]) -> None:
    g = make_repo({"README.md": "x\n"})
    g.git("remote", "remove", "origin")
    ls = locks(g, ALICE)
    got = ls.acquire("app")[0]
    assert got.local
    assert g.git("rev-parse", lock_ref("app")) == got.sha
    with pytest.raises(LockError, match="alice") as exc:
        locks(g, BOB, timeout=0.2).acquire("app")
    assert "gitops-push locks break app --force" in exc.value.message
    assert "git push" not in exc.value.message  # no origin: nothing to push
    taken = locks(g, BOB, clock=lambda: utcnow() + timedelta(hours=2)).acquire("app")[0]
    assert taken.took_over is not None and taken.took_over.sha == got.sha
    assert ls.release("app") is False  # no longer ours
    assert g.git("rev-parse", lock_ref("app")) == taken.sha


def test_heartbeat_renews_a_held_lock(g: GitRepo) -> None:
    ls = locks(g, ALICE, ttl=0.9)
    first = ls.acquire("app")[0]
    time.sleep(0.8)  # renewals every ttl/3
    now = LockStore(Repo(g.path)).read("app")
    assert now is not None and now.sha != first.sha
    assert now.expires_at > first.info.expires_at
    assert now.acquired_at == first.info.acquired_at and now.renewed_at is not None
    assert ls.release_all() == {"app": True}
    assert ls.lost == {} and origin_refs(g) == {}


def test_heartbeat_reports_a_lock_taken_over_as_lost(g: GitRepo) -> None:
    slow = locks(g, ALICE, ttl=0.6)
    slow.acquire("app")
    # bob's clock says the lock expired: he takes it over in one push (no moment without a
    # lock, so the heartbeat cannot see it merely deleted, however loaded the machine)
    thief = locks(g, BOB, clock=lambda: utcnow() + timedelta(hours=2))
    thief.acquire("app")
    deadline = time.monotonic() + 5
    while "app" not in slow.lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "bob" in slow.lost["app"] and slow.held == {}
    assert slow.release_all() == {}
    assert set(origin_refs(g)) == {lock_ref("app")}  # bob's lock is untouched
    thief.release_all()


def test_store_lists_and_breaks_locks(g: GitRepo) -> None:
    ls = locks(g, ALICE)
    ls.acquire("app", "db")
    store = LockStore(Repo(g.path))
    assert [i.stack for i in store.list()] == ["app", "db"]
    assert active_run_ids(Repo(g.path)) == {ALICE["run_id"]}
    assert active_run_ids(Repo(g.path), now=utcnow() + timedelta(hours=2)) == set()
    broken = store.break_lock("db")
    assert broken is not None and broken.owner.actor == "alice"
    assert store.read("db") is None and store.break_lock("db") is None
    ls.release_all()


def test_junk_on_a_lock_ref_blocks_no_longer_than_a_ttl(g: GitRepo) -> None:
    g.git("push", "-q", "origin", f"HEAD:{lock_ref('app')}")
    info = LockStore(Repo(g.path)).read("app")
    assert info is not None and info.owner.run_id.startswith("unknown")
    got = locks(g, BOB, clock=lambda: utcnow() + timedelta(hours=2)).acquire("app")[0]
    assert got.took_over is not None


def test_lock_ref_names() -> None:
    assert lock_ref("app") == "refs/gitops-push/locks/app"
    assert lock_ref("infra-network_v2.1") == "refs/gitops-push/locks/infra-network_v2.1"
    assert lock_ref("a..b") == "refs/gitops-push/locks/a%2E%2Eb"
    assert lock_ref("x.lock") == "refs/gitops-push/locks/x%2Elock"
    assert LockStore._stack_of(lock_ref("a..b")) == "a..b"
    with pytest.raises(LockError):
        lock_ref("")


def test_owner_from_the_ci_environment() -> None:
    env = {"GITLAB_CI": "true", "GITLAB_USER_LOGIN": "carol",
           "CI_PIPELINE_URL": "https://gitlab.example.com/p/1"}
    owner = LockOwner.current("run-1", env)
    assert owner.actor == "carol" and owner.pipeline_url == "https://gitlab.example.com/p/1"
    assert owner.pid and owner.host
    assert "carol" in owner.describe()


# -- the CLI: gitops-push locks list / break ---------------------------------------------------
def cli(g: GitRepo, *args: str) -> tuple[int, dict]:
    import contextlib
    import io

    from gitops_push.cli.app import run

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = run(["-C", str(g.path), "locks", *args, "--output", "json"])
    return code, json.loads(out.getvalue())


def test_locks_list_shows_holder_and_expiry(g: GitRepo) -> None:
    code, env = cli(g, "list")
    assert code == 0 and env["data"]["locks"] == []
    held = locks(g, ALICE, heartbeat=False)
    held.acquire("app", "db")
    code, env = cli(g, "list")
    assert code == 0
    rows = env["data"]["locks"]
    assert [r["stack"] for r in rows] == ["app", "db"]
    assert rows[0]["actor"] == "alice" and rows[0]["pipeline_url"] == ALICE["pipeline_url"]
    assert rows[0]["run_id"] == ALICE["run_id"] and rows[0]["expired"] is False


def test_locks_break_refuses_a_live_lock_without_force(g: GitRepo) -> None:
    held = locks(g, ALICE, heartbeat=False)
    held.acquire("app")
    code, env = cli(g, "break", "app")
    assert code == ExitCode.USAGE and env["status"] == "error"
    assert "alice" in env["errors"][0]["message"] and "--force" in env["errors"][0]["message"]
    assert lock_ref("app") in origin_refs(g)

    code, env = cli(g, "break", "app", "--force")
    assert code == 0 and env["data"]["broken"]["actor"] == "alice"
    assert origin_refs(g) == {}
    assert held.release("app") is False  # the holder notices it is no longer its lock


def test_locks_break_takes_an_expired_lock_without_force(g: GitRepo) -> None:
    dead = locks(g, ALICE, heartbeat=False, ttl=0.05)  # a SIGKILLed run's lock, expired
    dead.acquire("app")
    time.sleep(0.1)
    code, env = cli(g, "break", "app")
    assert code == 0 and env["data"]["broken"]["expired"] is True
    assert origin_refs(g) == {}
    code, env = cli(g, "break", "app")  # nothing left to break, and no stack 'app' here
    assert code == ExitCode.USAGE and "no stack 'app'" in env["errors"][0]["message"]


def test_a_lock_listed_but_unreadable_is_an_error_not_unlocked(g: GitRepo) -> None:
    # origin lists the ref but cannot serve its commit (a broken or half-written ref)
    ref = g.origin / "refs" / "gitops-push" / "locks" / "app"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text("1234567890123456789012345678901234567890\n")
    code, env = cli(g, "break", "app")
    assert code == ExitCode.LOCKED and env["status"] == "error"
    assert "could not be fetched" in env["errors"][0]["message"]
    assert ref.exists()  # nothing was deleted on a guess
