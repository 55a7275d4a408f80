"""One run's locks and its two audit records in a constant number of round trips.

Why (issue 14): every push or fetch to a hosted origin is a network round trip of
0.3-1 s. Taking, renewing and releasing each stack's lock on its own made a run's cost
grow by about four round trips per stack. Here a run costs three, however many stacks
it touches: the fetch that reads the trail, then

- ``start``: one atomic push (``git push --atomic``) that takes the lock of every
  stack of the run and stores the ``started`` record. Each ref has its own
  ``--force-with-lease``: a lock ref must be absent (or still be the expired lock that
  was read, for a takeover), the trail ref must be at the tip the record was built on;
- ``finish``: one atomic push that deletes the run's locks (each leased on the run's
  own lock commit, so a lock taken over meanwhile is left alone) and stores the
  ``finished`` record.

The heartbeat renews every held lock in one push too (``RunLocks._renew_batch``).

**Contention.** When the start push fails because a lock is held, one fetch reads
the trail and every lock. The run takes at once, in one push, every lock that is free
(expired ones are taken over), and only the stacks whose lock a live run holds wait
for it, one by one, polling until ``--lock-timeout`` (``LockSet.acquire_one``). Stacks
of this run that hold their lock go on meanwhile, so overlapping runs still share the
work, and runs on disjoint stacks never wait for each other at all.

**No deadlock.** Two runs must never wait for each other in a cycle, whatever order
they list their stacks in. So whenever a stack of this run starts waiting, the run
first gives back, in one push, every lock whose stack is not running at that moment
(finished, or not started: a later wave, or queued behind ``--parallel``); and while
any stack waits, a stack that finishes releases its lock at once. A waiting run
therefore holds only the locks of stacks that are running, and a running stack never
waits for a lock: every wait ends when the holder's running stacks end.

Anything that is not a lost race (a hook or missing rights refusing the push, origin
unreachable) falls back to the one-ref-at-a-time path: ``LockSet`` for the locks and
``Trail.append`` for the record, which retries and spools, so a record is never lost.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from gitops_push.audit.results import AppendResult
from gitops_push.audit.trail import PendingRecord, Trail
from gitops_push.errors import LockError
from gitops_push.git import push
from gitops_push.lock.set import LockSet
from gitops_push.lock.store import Acquired, LockInfo

MAX_ROUNDS = 30  # lost races in a row (other runs' records and locks) before falling back


class RunLocks(LockSet):
    """A ``LockSet`` whose locks can be taken, renewed and released many at a time."""

    def new_info(self, stack: str) -> LockInfo:
        """A lock commit for ``stack`` owned by this run, not pushed yet (RunGate)."""
        return self._new_info(stack)

    def adopt(self, info: LockInfo, took_over: LockInfo | None = None) -> Acquired:
        """Record a lock that a batched push (RunGate) just took for this run."""
        if took_over is not None:
            with self._mutex:
                self.takeovers.append(took_over)
        return self._got(info, took_over, time.monotonic())

    def forget(self, stack: str) -> None:
        """Drop a lock a batched push just deleted (or found not ours any more)."""
        with self._mutex:
            self._held.pop(stack, None)
            if not self._held:
                self._stop.set()

    def mark_lost(self, stack: str, why: str) -> None:
        """A lock this run held turned out not to be its own any more (RunGate)."""
        with self._mutex:
            self._held.pop(stack, None)
            self.lost.setdefault(stack, why)

    def release_many(self, stacks: list[str]) -> None:
        """Release several locks in one atomic push (leased on our own lock commits);
        if that is refused, one by one (``release`` says what could not be released)."""
        with self._mutex:
            held = [self._held[s] for s in stacks if s in self._held]
        if len(held) > 1 and self.has_origin:
            with self._ops:  # a renewal must not see them held once they are gone
                result = push(self.repo, self.remote, [f":{a.info.ref}" for a in held],
                              leases=[f"{a.info.ref}:{a.sha}" for a in held], atomic=True,
                              timeout=self.network_timeout)
                if result.ok:
                    for a in held:
                        self.forget(a.stack)
            if result.ok:
                return
        for a in held:
            self.release(a.stack)

    def _renew_batch(self) -> bool:
        """Renew every held lock in one atomic push; False if that did not work (a lock
        was lost, or origin refused): the caller then renews one by one."""
        with self._ops:
            with self._mutex:
                held = dict(self._held)
            if len(held) < 2 or not self.has_origin:
                return False
            infos = {s: self._new_info(s, acquired=a.info.acquired_at) for s, a in held.items()}
            result = push(self.repo, self.remote, [f"{i.sha}:{i.ref}" for i in infos.values()],
                          leases=[f"{i.ref}:{held[s].sha}" for s, i in infos.items()],
                          atomic=True, timeout=self.network_timeout)
            if not result.ok:
                return False
            with self._mutex:
                for s, info in infos.items():
                    if s in self._held:
                        self._held[s] = replace(self._held[s], info=info)
            return True


class RunGate:
    """The locks and records of one run. ``stacks``: the stacks it may apply (none
    for a check that changes nothing, which then only records)."""

    def __init__(self, locks: RunLocks, trail: Trail, stacks: Sequence[str]) -> None:
        self.locks = locks
        self.trail = trail
        self.stacks = sorted(set(stacks))
        self.batched = locks.has_origin and trail.has_origin
        self._started = threading.Event()
        self._mutex = threading.Lock()  # guards _active and _waiting
        self._active: set[str] = set()  # stacks running right now
        self._waiting = 0  # stacks of this run waiting for a lock another run holds
        self._with_record: set[str] = set()  # locks taken in the push with ``started``
        self._trail_mutex = threading.Lock()  # one reader of the trail at a time

    # -- the two pushes -----------------------------------------------------------------
    def start(self, record: Mapping[str, Any]) -> AppendResult:
        """Take every free lock and store ``record`` (``started``), in one push."""
        try:
            return self._start(record)
        finally:
            self._started.set()

    def unrecorded(self) -> None:
        """A run that records nothing (a local drift check): nothing to push."""
        self._started.set()

    def _start(self, record: Mapping[str, Any]) -> AppendResult:
        if not self.batched:
            return self.trail.append(record)  # the stacks take their locks one by one
        expect: dict[str, str | None] = dict.fromkeys(self.stacks)  # stack -> lease
        takeovers: dict[str, LockInfo] = {}
        for attempt in range(MAX_ROUNDS):
            if attempt:
                time.sleep(random.uniform(0.02, min(0.5, 0.02 * 2 ** attempt)))  # noqa: S311
            pending = self.trail.pending(record)
            if pending is None:
                return self.trail.append(record)
            infos = {s: self.locks.new_info(s) for s in expect}
            result = self._push(pending, [f"{i.sha}:{i.ref}" for i in infos.values()],
                                [f"{i.ref}:{expect[s] or ''}" for s, i in infos.items()])
            if result is None:
                for s, info in infos.items():
                    self.locks.adopt(info, takeovers.get(s))
                self._with_record.update(infos)
                return self.trail.published(pending)
            if result != "stale":
                break
            seen = self._look()
            if seen is None:
                break
            now = self.locks.clock()
            expect, takeovers = {}, {}
            for s in self.stacks:
                found = seen.get(s)
                if found is None:
                    expect[s] = None
                elif found.expired(now):
                    expect[s], takeovers[s] = found.sha, found
                # else a live run holds it: that stack waits for it (acquire)
        self.trail.forget_tip()
        return self.trail.append(record)

    def finish(self, record: Mapping[str, Any]) -> AppendResult:
        """Release every lock still held and store ``record`` (``finished``), in one push."""
        self.locks.stop_heartbeat()
        held = self.locks.held  # a copy
        if self.batched:
            for attempt in range(MAX_ROUNDS):
                if attempt:
                    time.sleep(random.uniform(0.02, min(0.5, 0.02 * 2 ** attempt)))  # noqa: S311
                pending = self.trail.pending(record)
                if pending is None:
                    break
                result = self._push(pending, [f":{a.info.ref}" for a in held.values()],
                                    [f"{a.info.ref}:{a.sha}" for a in held.values()])
                if result is None:
                    for s in held:
                        self.locks.forget(s)
                    return self.trail.published(pending)
                if result != "stale":
                    break
                seen = self._look()
                if seen is None:
                    break
                for s, a in list(held.items()):
                    if s not in seen or seen[s].sha != a.sha:  # broken or taken over
                        del held[s]
                        self.locks.mark_lost(s, "it was broken or taken over before the run "
                                                "ended; left alone")
            self.trail.forget_tip()
        self.locks.release_all()
        return self.trail.append(record)

    def _push(self, pending: PendingRecord, refspecs: list[str], leases: list[str]
              ) -> str | None:
        """None when it landed; else ``stale`` (a lost race) or ``refused``."""
        result = push(self.locks.repo, self.locks.remote, [pending.refspec, *refspecs],
                      leases=[pending.lease, *leases], atomic=True,
                      timeout=self.locks.network_timeout)
        if result.ok:
            return None
        return "stale" if result.kind == "stale" else "refused"

    def _look(self) -> dict[str, LockInfo] | None:
        """Origin's trail and every lock, in one fetch."""
        seen = self.locks.look([self.trail.fetch_refspec])
        if seen is not None:
            self.trail.saw_tip()
        return seen

    def records_under_lock(self, stack: str) -> list[dict[str, Any]]:
        """The trail as it stands now that ``stack``'s lock is held, so the caller can
        refuse to roll back a deployment a newer run made meanwhile. A lock taken in the
        push with ``started`` needs no fetch, nor even a read: that push's lease on the
        trail proved no record was written since the trail was read, so the trail is what
        was read plus ``started`` (or what a later fetch of this run saw). A lock waited
        for needs one fetch: its holder's ``finished`` record went in the push that
        released it."""
        with self._trail_mutex:
            if self.batched and stack in self._with_record:
                seen = self.trail.seen_records()
                if seen is not None:
                    return seen
            fetch = self.batched and stack not in self._with_record
            return self.trail.records(fetch=fetch)

    # -- the stacks ---------------------------------------------------------------------
    def enter(self, stack: str) -> None:
        """``stack`` starts running: its lock is not given back while it runs."""
        with self._mutex:
            self._active.add(stack)

    def leave(self, stack: str) -> None:
        """``stack`` is done: its lock goes in the final push, or at once if another
        stack of this run is waiting for a lock (see the module docstring)."""
        with self._mutex:
            self._active.discard(stack)
            now = self._waiting > 0
        if now and stack in self.locks.held:
            self.locks.release(stack)

    def acquire(self, stack: str, stop: threading.Event) -> None:
        """Until ``stack``'s lock is held: at once if ``start`` took it, else by waiting
        for its holder. ``stop`` set: give up (LockError)."""
        while not self._started.wait(0.1):
            if stop.is_set():
                raise LockError(f"stopped waiting for the lock of stack {stack!r}")
        if stack in self.locks.held:
            return
        with self._waiting_for_lock():
            self.locks.acquire_one(stack, stop)

    @contextmanager
    def _waiting_for_lock(self) -> Iterator[None]:
        with self._mutex:
            self._waiting += 1
            idle = [s for s in self.locks.held if s not in self._active]
        try:
            if idle:  # hold nothing we are not using while we wait (no wait cycles)
                self.locks.release_many(idle)
            yield
        finally:
            with self._mutex:
                self._waiting -= 1


__all__ = ["RunGate", "RunLocks"]
