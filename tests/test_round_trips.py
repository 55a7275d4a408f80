"""Round trips to origin stay constant as the stack count grows (issue 14), and the
lock and record guarantees hold with batched pushes; when ``drift`` records (issue 12).

The origin is reached through bench/_remote.py's fake ssh with 0 ms latency: a script
standing in for ssh that logs each connection, then runs git-upload-pack or
git-receive-pack locally. Connection counts are counts, not timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import GitRepo, git
from test_git_repo import spy_git
from test_run_apply import audit_records, config, gp, gp_proc, results, tf

from gitops_push.audit.trail import Trail
from gitops_push.errors import ExitCode
from gitops_push.git import Repo
from gitops_push.lock import LockSet, RunGate, RunLocks, lock_ref

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from _remote import FakeRemote

pytestmark = pytest.mark.slow

OLD_TRAIL = Path(__file__).parent / "data" / "trail-before-issue-14.bundle"


def stacks_repo(make_repo: Callable[..., GitRepo], n: int) -> GitRepo:
    names = [f"s{i}" for i in range(n)]
    files = {".gitignore": "*.tfstate*\n.terraform*\n",
             "gitops-push.yaml": config(*((name, []) for name in names))}
    files.update({f"stacks/{name}/main.tf": tf(name) for name in names})
    return make_repo(files)


def via_fake_ssh(r: GitRepo, tmp_path: Path) -> tuple[FakeRemote, dict[str, str]]:
    remote = FakeRemote.create(tmp_path / f"fake-{r.path.name}")
    r.git("remote", "set-url", "origin", FakeRemote.url(r.origin))
    return remote, remote.env()


def change(r: GitRepo, n: int, value: str) -> None:
    """A new commit changing every stack, pushed straight to the bare origin."""
    r.commit(value, {f"stacks/s{i}/main.tf": tf(f"s{i}-{value}") for i in range(n)})
    r.git("push", "-q", str(r.origin), "HEAD:main")


# -- constant round trips --------------------------------------------------------------
def test_apply_costs_the_same_connections_whatever_the_stack_count(
        make_repo: Callable[..., GitRepo], tmp_path: Path) -> None:
    counts = {}
    for n in (1, 5):
        r = stacks_repo(make_repo, n)
        remote, env = via_fake_ssh(r, tmp_path)
        for round_ in ("first", "second"):  # the first creates the trail
            if round_ == "second":
                change(r, n, "v2")
            remote.reset()
            code, out = gp(r, "apply", "--parallel", "2", env=env)
            assert code == 0, out
            assert set(results(out).values()) == {"applied"} and len(results(out)) == n
            counts[(n, round_)] = remote.connections()
    assert {len(c) for c in counts.values()} == {3}, counts
    # one fetch, the push that locks and records started, the one that releases
    assert [c.split()[0] for c in counts[(5, "second")]] == [
        "git-upload-pack", "git-receive-pack", "git-receive-pack"]
    code, env_ = gp(r, "audit", "verify")
    assert code == 0 and env_["data"]["ok"] is True


def test_drift_fix_and_rollback_cost_constant_connections(
        make_repo: Callable[..., GitRepo], tmp_path: Path) -> None:
    for n in (1, 4):
        r = stacks_repo(make_repo, n)
        remote, env = via_fake_ssh(r, tmp_path)
        assert gp(r, "apply", env=env)[0] == 0
        good = r.head()
        change(r, n, "bad")
        assert gp(r, "apply", env=env)[0] == 0
        remote.reset()
        code, out = gp(r, "drift", "--fix", env=env)
        assert code == 0 and set(results(out).values()) == {"clean"}
        assert remote.count() == 3
        remote.reset()
        code, out = gp(r, "rollback", "--to", good, env=env)
        assert code == 0 and set(results(out).values()) == {"applied"}
        # the trail fetch, the rollback commit, then apply's two pushes (no second fetch)
        assert remote.count() == 4, remote.connections()
        remote.reset()
        code, out = gp(r, "plan", "--all", env=env)
        assert code == 0 and remote.count() <= 1  # reads the trail at most, never pushes
        assert not any("receive-pack" in c for c in remote.connections())


@pytest.mark.parametrize(("variable", "value"), [
    ("GIT_SSH_COMMAND", "{wrapper}"),
    ("GIT_SSH_COMMAND", "{wrapper} -o BatchMode=yes"),  # shell syntax: run through sh
    ("GIT_SSH", "{wrapper}"),
])
def test_a_custom_ssh_command_is_probed_once_per_run_not_per_connection(
        make_repo: Callable[..., GitRepo], tmp_path: Path, variable: str, value: str) -> None:
    r = stacks_repo(make_repo, 2)
    remote, env = via_fake_ssh(r, tmp_path)
    env.pop("GIT_SSH_VARIANT")  # git would run the command with -G before each connection
    env.pop("GIT_SSH_COMMAND")
    probes = tmp_path / "probes.log"
    wrapper = tmp_path / "my-transport"
    wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" -G "*) echo probe >> {probes};; esac\n'
                       f'exec {remote.script} "$@"\n')
    wrapper.chmod(0o755)
    env[variable] = value.format(wrapper=wrapper)
    code, out = gp(r, "apply", env=env)
    assert code == 0, out
    assert remote.count() == 3
    assert probes.read_text().splitlines() == ["probe"]


def test_ssh_hosts_of_remote_urls() -> None:
    from gitops_push.git.ssh import _ssh_host

    assert _ssh_host("ssh://git@example.com:2222/acme/infra.git") == "example.com"
    assert _ssh_host("ssh://[::1]/repo") == "::1"
    assert _ssh_host("git@github.com:acme/infra.git") == "github.com"
    assert _ssh_host("https://github.com/acme/infra.git") is None
    assert _ssh_host("/srv/git/infra.git") is None
    assert _ssh_host("file:///srv/git/infra.git") is None
    assert _ssh_host("C:/repos/infra") is None


# -- guarantees with batched pushes ------------------------------------------------------
MARKED_TF = ('resource "terraform_data" "x" {{\n  triggers_replace = timestamp()\n'
             '  provisioner "local-exec" {{\n'
             '    command = "test ! -e {m} && touch {m} && sleep 1 && rm {m}"\n  }}\n}}\n')


@pytest.mark.parametrize("first", ["forward", "reverse"])
def test_overlapping_runs_in_opposite_orders_never_deadlock_or_overlap(
        make_repo: Callable[..., GitRepo], tmp_path: Path, first: str) -> None:
    """Run A lists x then y, run B y then x (one at a time each): both finish, and no
    stack is ever applied by both at once (the provisioner fails if its marker exists)."""
    files = {".gitignore": "*.tfstate*\n.terraform*\n",
             "gitops-push.yaml": config(("x", []), ("y", [])),
             "stacks/x/main.tf": MARKED_TF.format(m=tmp_path / "in-x"),
             "stacks/y/main.tf": MARKED_TF.format(m=tmp_path / "in-y")}
    r = make_repo(files)
    clones = {}
    # sibling commits: neither pipeline is older than the other, so both must apply
    for name, cfg in (("forward", config(("x", []), ("y", []))),
                      ("reverse", config(("y", []), ("x", [])))):
        c = tmp_path / name
        git(tmp_path, "clone", "-q", str(r.origin), str(c))
        clones[name] = GitRepo(c, r.origin)
        clones[name].commit(name, {"gitops-push.yaml": cfg, "README.md": name})
    order = [first, "reverse" if first == "forward" else "forward"]
    procs = []
    for name in order:
        procs.append(gp_proc(clones[name], "apply", "--stack", "x", "--stack", "y",
                             "--parallel", "1", "--lock-timeout", "90s", "--output", "json"))
        time.sleep(0.3)
    outs = [p.communicate(timeout=150) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert results(json.loads(out)) == {"x": "applied", "y": "applied"}
    finished = [rec for rec in audit_records(r) if rec["phase"] == "finished"]
    assert len(finished) == 2 and {f["outcome"] for f in finished} == {"success"}
    assert r.git("ls-remote", "origin", "refs/gitops-push/locks/*") == ""


def gate(r: GitRepo, run: str, stacks: list[str], **kw: object) -> RunGate:
    repo = Repo(r.path)
    locks = RunLocks(repo, {"run_id": run, "actor": run}, poll_interval=0.05,
                    timeout=kw.pop("timeout", 20.0))  # type: ignore[arg-type]
    return RunGate(locks, Trail(repo), stacks)


def rec(run: str, phase: str) -> dict[str, object]:
    return {"schema_version": 1, "run_id": run, "phase": phase, "command": "apply",
            "head": "0" * 40, "stacks": []}


def test_a_run_takes_the_free_locks_at_once_and_waits_for_a_held_one(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({"README.md": "x\n"})
    holder = LockSet(Repo(r.path), "holder-run", heartbeat=False)
    holder.acquire("b")
    g = gate(r, "run-a", ["a", "b", "c"])
    assert g.start(rec("run-a", "started")).pushed
    assert set(g.locks.held) == {"a", "c"}  # b is held by a live run: not taken
    g.enter("b")
    threading.Timer(0.5, holder.release_all).start()
    start = time.monotonic()
    g.acquire("b", threading.Event())  # gets it once the holder is done
    assert time.monotonic() - start >= 0.3
    # while b waited, the locks of stacks not running (a, c) were given back
    assert set(g.locks.held) == {"b"}
    g.leave("b")
    assert g.finish(rec("run-a", "finished")).pushed
    assert r.git("ls-remote", "origin", "refs/gitops-push/locks/*") == ""
    assert [x["phase"] for x in Trail(Repo(r.path)).records()] == ["started", "finished"]


def test_under_its_lock_a_stack_reads_the_trail_again_only_if_it_waited_for_the_lock(
        make_repo: Callable[..., GitRepo], monkeypatch: pytest.MonkeyPatch) -> None:
    """The check that an older pipeline never rolls back a newer deploy reads the trail
    under each stack's lock. A lock taken in the push with ``started`` was free, and that
    push's lease proved the trail unchanged: no git at all. A lock waited for: a fetch,
    since its holder's ``finished`` record went in the push that released it."""
    r = make_repo({"README.md": "x\n"})
    holder = LockSet(Repo(r.path), "holder-run", heartbeat=False)
    holder.acquire("b")
    g = gate(r, "run-a", ["a", "b"])
    assert g.start(rec("run-a", "started")).pushed and set(g.locks.held) == {"a"}
    calls = spy_git(monkeypatch)
    assert [(x["run_id"], x["phase"]) for x in g.records_under_lock("a")] == [
        ("run-a", "started")]
    assert calls == []
    assert Trail(Repo(r.path)).append(rec("holder-run", "finished")).pushed
    holder.release_all()
    g.enter("b")
    g.acquire("b", threading.Event())
    del calls[:]
    assert [(x["run_id"], x["phase"]) for x in g.records_under_lock("b")] == [
        ("run-a", "started"), ("holder-run", "finished")]
    assert [c[0] for c in calls if c[0] in ("fetch", "push")] == ["fetch"]
    g.leave("b")
    assert g.finish(rec("run-a", "finished")).pushed


def test_two_runs_each_holding_the_lock_the_other_needs_next_do_not_deadlock(
        make_repo: Callable[..., GitRepo]) -> None:
    """The classic cycle: A is done with x and needs y, B is done with y and needs x.
    Whichever starts waiting gives back what it is not running, so both go on."""
    r = make_repo({"README.md": "x\n"})
    third = LockSet(Repo(r.path), "third-run", heartbeat=False)
    third.acquire("y")
    a, b = gate(r, "run-a", ["x", "y"], timeout=30.0), gate(r, "run-b", ["x", "y"],
                                                            timeout=30.0)
    assert a.start(rec("run-a", "started")).pushed and set(a.locks.held) == {"x"}
    a.enter("x")
    a.leave("x")  # x applied; nobody of A waits, so A keeps its lock for the final push
    third.release_all()
    assert b.start(rec("run-b", "started")).pushed and set(b.locks.held) == {"y"}
    b.enter("y")
    b.leave("y")
    done: dict[str, float] = {}

    def wants(g: RunGate, stack: str) -> None:
        g.enter(stack)
        g.acquire(stack, threading.Event())
        done[g.locks.owner.run_id] = time.monotonic()
        g.leave(stack)
        g.finish(rec(g.locks.owner.run_id, "finished"))

    threads = [threading.Thread(target=wants, args=(a, "y")),
               threading.Thread(target=wants, args=(b, "x"))]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert set(done) == {"run-a", "run-b"}, "deadlock: a run never got its next lock"
    assert max(done.values()) - start < 25  # well within the 30 s lock timeout
    assert r.git("ls-remote", "origin", "refs/gitops-push/locks/*") == ""
    phases = [(x["run_id"], x["phase"]) for x in Trail(Repo(r.path)).records()]
    assert sorted(phases) == [("run-a", "finished"), ("run-a", "started"),
                              ("run-b", "finished"), ("run-b", "started")]


def test_an_expired_lock_is_taken_over_in_the_batched_push(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({"README.md": "x\n"})
    dead = LockSet(Repo(r.path), "dead-run", heartbeat=False, ttl=0.05)
    old = dead.acquire("a")[0]
    time.sleep(0.1)
    g = gate(r, "run-b", ["a", "b"])
    assert g.start(rec("run-b", "started")).pushed
    assert set(g.locks.held) == {"a", "b"}
    assert [t.sha for t in g.locks.takeovers] == [old.sha]
    assert g.finish(rec("run-b", "finished")).pushed
    assert r.git("ls-remote", "origin", "refs/gitops-push/locks/*") == ""


def test_a_lock_broken_during_the_run_is_not_released_by_the_final_push(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({"README.md": "x\n"})
    g = gate(r, "run-a", ["a", "b"])
    assert g.start(rec("run-a", "started")).pushed
    # an operator breaks a's lock and another run takes it
    r.git("push", "-q", "origin", f":{lock_ref('a')}")
    other = LockSet(Repo(r.path), "run-b", heartbeat=False)
    other.acquire("a")
    assert g.finish(rec("run-a", "finished")).pushed
    assert "a" in g.locks.lost
    left = r.git("ls-remote", "origin", "refs/gitops-push/locks/*")
    assert lock_ref("a") in left and lock_ref("b") not in left  # b released, a untouched
    other.release_all()


def test_heartbeat_renews_every_held_lock_in_one_push(
        make_repo: Callable[..., GitRepo], tmp_path: Path) -> None:
    r = make_repo({"README.md": "x\n"})
    remote = FakeRemote.create(tmp_path / "fake")
    r.git("remote", "set-url", "origin", FakeRemote.url(r.origin))
    repo = Repo(r.path, {**__import__("os").environ, **remote.env()})
    locks = RunLocks(repo, "run-a", ttl=1.5)
    g = RunGate(locks, Trail(repo), ["a", "b", "c", "d"])
    assert g.start(rec("run-a", "started")).pushed
    first = {s: a.sha for s, a in locks.held.items()}
    remote.reset()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            a.sha == first[s] for s, a in locks.held.items()):
        time.sleep(0.05)  # a beat every ttl/3 = 0.5 s
    locks.stop_heartbeat()
    assert all(a.sha != first[s] for s, a in locks.held.items())
    # all four renewed together: one push per beat (one or two beats), never one per lock
    assert 1 <= remote.count() < 4, remote.connections()
    assert locks.lost == {} and locks.warnings == []
    assert g.finish(rec("run-a", "finished")).pushed


# -- records written before this change ------------------------------------------------------
def test_a_trail_written_before_batched_pushes_still_verifies_and_grows(
        make_repo: Callable[..., GitRepo]) -> None:
    r = stacks_repo(make_repo, 1)
    r.git("fetch", "-q", str(OLD_TRAIL), "+refs/heads/gitops-push/audit:refs/old-trail")
    r.git("push", "-q", "origin", "refs/old-trail:refs/heads/gitops-push/audit")
    code, out = gp(r, "audit", "verify")
    assert code == 0 and out["data"]["ok"] is True and out["data"]["records"] == 4
    change(r, 1, "v2")
    assert gp(r, "apply")[0] == 0
    code, out = gp(r, "audit", "verify")
    assert code == 0 and out["data"]["ok"] is True and out["data"]["records"] == 6


# -- drift: when a check records (issue 12) ---------------------------------------------------
CI_ENV = {"GITLAB_CI": "true", "CI_PIPELINE_URL": "https://ci.example/p/7"}


def refuse_audit(r: GitRepo) -> None:
    hook = r.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'read-only token' >&2\nexit 1\n")
    hook.chmod(0o755)


def test_a_local_drift_check_writes_nothing_to_origin(make_repo: Callable[..., GitRepo],
                                                      tmp_path: Path) -> None:
    r = stacks_repo(make_repo, 2)
    assert gp(r, "apply")[0] == 0
    before = len(audit_records(r))
    remote, env = via_fake_ssh(r, tmp_path)
    code, out = gp(r, "drift", env=env)
    assert code == 0 and set(results(out).values()) == {"clean"}
    assert remote.count() == 0  # no lock, no record, not even a fetch
    assert any("not recorded" in n for n in out["data"]["notes"])
    r.git("remote", "set-url", "origin", str(r.origin))
    assert len(audit_records(r)) == before


@pytest.mark.parametrize(("args", "env", "recorded"), [
    (("--record",), {}, True),
    ((), CI_ENV, True),
    (("--no-record",), CI_ENV, False),
])
def test_drift_records_when_asked_or_in_ci(make_repo: Callable[..., GitRepo],
                                           args: tuple[str, ...], env: dict[str, str],
                                           recorded: bool) -> None:
    r = stacks_repo(make_repo, 1)
    assert gp(r, "apply")[0] == 0
    before = len(audit_records(r))
    code, _ = gp(r, "drift", *args, env=env)
    assert code == 0
    records = audit_records(r)
    assert len(records) == before + (2 if recorded else 0)
    if recorded:
        assert [x["command"] for x in records[-2:]] == ["drift", "drift"]
        assert records[-1]["outcome"] == "success"


def drift_by_hand(r: GitRepo, stack: str) -> None:
    """Someone applies a hand edit, then puts the file back: live state differs from git."""
    d = r.path / "stacks" / stack
    (d / "main.tf").write_text(tf("hand-edited"))
    for cmd in (["terraform", "init", "-input=false"],
                ["terraform", "apply", "-auto-approve", "-input=false"]):
        subprocess.run(cmd, cwd=d, check=True, capture_output=True)
    r.git("checkout", "--", f"stacks/{stack}/main.tf")


@pytest.mark.parametrize("drifted", [False, True])
def test_a_drift_check_that_cannot_push_keeps_its_exit_code_and_spools(
        make_repo: Callable[..., GitRepo], drifted: bool) -> None:
    r = stacks_repo(make_repo, 1)
    assert gp(r, "apply")[0] == 0
    if drifted:
        drift_by_hand(r, "s0")
    refuse_audit(r)
    code, out = gp(r, "drift", env=CI_ENV)
    assert code == (ExitCode.DRIFT_DETECTED if drifted else ExitCode.OK)
    assert out["data"]["audit"]["pushed"] is False
    assert Path(out["data"]["audit"]["spool"]).is_file()
    assert any("kept in the spool" in w or "spool" in w for w in out["warnings"])


def test_drift_fix_that_cannot_push_its_record_exits_6(make_repo: Callable[..., GitRepo]
                                                        ) -> None:
    r = stacks_repo(make_repo, 1)
    assert gp(r, "apply")[0] == 0
    refuse_audit(r)
    code, out = gp(r, "drift", "--fix")
    assert code == ExitCode.AUDIT_NOT_PUSHED == 6
    assert out["data"]["audit"]["pushed"] is False


# -- the post-apply check, per stack -------------------------------------------------------
def test_a_stack_can_turn_the_post_apply_check_off(make_repo: Callable[..., GitRepo]) -> None:
    cfg = (config(("checked", []), ("trusted", [])) +
           "defaults:\n  terraform:\n    lock_timeout: 1m\n").replace(
        "    path: stacks/trusted\n", "    path: stacks/trusted\n    terraform:\n"
        "      verify_after_apply: false\n")
    r = make_repo({".gitignore": "*.tfstate*\n.terraform*\n", "gitops-push.yaml": cfg,
                   "stacks/checked/main.tf": tf("checked"),
                   "stacks/trusted/main.tf": tf("trusted")})
    code, out = gp(r, "apply")
    assert code == 0 and results(out) == {"checked": "applied", "trusted": "applied"}
    finished = [x for x in audit_records(r) if x["phase"] == "finished"][-1]
    by_name = {st["name"]: st for st in finished["stacks"]}
    assert by_name["checked"]["verify"] == {"drifted": False, "items": []}
    assert "verify" not in by_name["trusted"]


def test_verify_after_apply_must_be_a_boolean(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({"gitops-push.yaml": config(("a", [])).replace(
        "    path: stacks/a\n", "    path: stacks/a\n    terraform:\n"
        "      verify_after_apply: sometimes\n"), "stacks/a/main.tf": tf("a")})
    code, out = gp(r, "changed")
    assert code == ExitCode.USAGE
    assert "gitops-push.yaml:6" in json.dumps(out["errors"][0]), out["errors"]
    assert "verify_after_apply" in out["errors"][0]["message"]


def test_a_run_that_waited_does_not_roll_back_what_a_newer_run_deployed_meanwhile(
        make_repo: Callable[..., GitRepo], tmp_path: Path) -> None:
    r = stacks_repo(make_repo, 1)
    assert gp(r, "apply")[0] == 0
    old = r.commit("old", {"stacks/s0/main.tf": tf("old")}, push=True)
    newer = r.commit("newer", {"stacks/s0/main.tf": tf("newer")}, push=True)
    older = tmp_path / "older"
    git(tmp_path, "clone", "-q", str(r.origin), str(older))
    git(older, "reset", "-q", "--hard", old)
    # the newer pipeline holds the lock; the older one chooses s0 and waits for it
    holder = LockSet(Repo(r.path), "newer-run", heartbeat=False)
    holder.acquire("s0")
    p = gp_proc(GitRepo(older, r.origin), "apply", "--lock-timeout", "60s", "--output", "json")
    time.sleep(3)
    # the newer run deploys s0 and records it, then lets go of the lock
    Trail(Repo(r.path)).append({
        "schema_version": 1, "run_id": "20260101T000000Z-newer", "phase": "finished",
        "command": "apply", "head": newer, "outcome": "success",
        "stacks": [{"name": "s0", "result": "applied", "deployed": True}]})
    holder.release_all()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    (row,) = json.loads(out)["data"]["stacks"]
    assert row["result"] == "skipped" and "newer commit" in row["message"], row
    assert not (older / "stacks/s0/terraform.tfstate").exists()  # nothing was applied
