"""A run's set of locks: waiting for held locks, the heartbeat that renews them, release.
The compare-and-swap refs they are made of live in store.py.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from gitops_push import ci as ci_env
from gitops_push.errors import LockError, ToolError
from gitops_push.git import NETWORK_TIMEOUT, Repo
from gitops_push.lock.store import (
    DEFAULT_POLL,
    DEFAULT_TIMEOUT,
    DEFAULT_TTL,
    MAX_ERRORS,
    Acquired,
    LockInfo,
    LockLost,
    LockOwner,
    LockStore,
    iso,
    lock_ref,
    utcnow,
)


class LockSet(LockStore):
    """The locks one run takes. ``hold(*stacks)`` is the usual entry point; it is safe
    to call from several worker threads at once (one stack each).

    ``ttl`` bounds how long a dead run blocks a stack; ``timeout`` how long we wait for a
    live one; ``heartbeat`` renews held locks every ttl/3. ``takeovers`` lists expired
    locks this run replaced, ``lost`` the stacks whose lock a renewal found gone.
    """

    def __init__(
        self,
        repo: Repo,
        owner: LockOwner | Mapping[str, Any] | str,
        *,
        environ: Mapping[str, str] | None = None,
        ttl: float = DEFAULT_TTL,
        timeout: float = DEFAULT_TIMEOUT,
        heartbeat: bool = True,
        poll_interval: float = DEFAULT_POLL,
        remote: str = "origin",
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        network_timeout: float = NETWORK_TIMEOUT,
    ) -> None:
        super().__init__(repo, remote=remote, network_timeout=network_timeout)
        env = repo.environ if environ is None else environ
        if isinstance(owner, str):
            owner = LockOwner.current(owner, env)
        elif not isinstance(owner, LockOwner):
            base = LockOwner.from_mapping(owner)
            owner = replace(base, pid=base.pid or os.getpid(),
                            host=base.host or ci_env.clean(os.uname().nodename, 100))
        if ttl <= 0:
            raise LockError(f"lock ttl must be positive, not {ttl}")
        self.owner = owner
        self.ttl = ttl
        self.timeout = max(0.0, timeout)
        self.heartbeat = heartbeat
        self.poll_interval = poll_interval
        self.clock = clock
        self.sleep = sleep
        self.takeovers: list[LockInfo] = []
        self.lost: dict[str, str] = {}
        self.warnings: list[str] = []
        self._held: dict[str, Acquired] = {}
        self._mutex = threading.Lock()  # guards _held, takeovers, lost, warnings
        self._ops = threading.Lock()  # serialises renew and release of our refs
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> dict[str, Acquired]:
        with self._mutex:
            return dict(self._held)

    def stop_heartbeat(self) -> None:
        """Stop renewing (before a batched release: the lock commits must stay put)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.network_timeout)

    def _renew_batch(self) -> bool:
        """Renew every held lock at once; here: not supported (lock_batch.RunLocks)."""
        return False

    def _new_info(self, stack: str, acquired: datetime | None = None) -> LockInfo:
        now = self.clock()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as stored
        info = LockInfo(stack, lock_ref(stack), "", self.owner, acquired or now,
                        now + timedelta(milliseconds=round(self.ttl * 1000)),
                        now if acquired else None)
        return replace(info, sha=self._commit(info))

    # -- acquire ------------------------------------------------------------------------
    def acquire_one(self, stack: str, stop: threading.Event | None = None) -> Acquired:
        """Take the lock of one stack, waiting up to ``timeout`` for its holder.

        ``stop`` set: give up waiting (LockError) — the lock is no longer wanted.
        """
        ref = lock_ref(stack)
        start = time.monotonic()
        errors = quick = 0  # quick: retries without sleeping (the holder just left, or
        holder: LockInfo | None = None  # another waiter won the takeover), bounded
        while True:
            info = self._new_info(stack)
            status, detail = self.cas(ref, info.sha, None)
            if status == "ok":
                return self._got(info, None, start)
            if status == "conflict":
                try:
                    holder = self.read(stack)
                except LockError as exc:
                    status, detail = "error", exc.message
                else:
                    if holder is None:  # released in between: try again at once
                        quick += 1
                        if quick < MAX_ERRORS:
                            continue
                    elif holder.expired(self.clock()):
                        status, detail = self.cas(ref, info.sha, holder.sha)
                        if status == "ok":
                            with self._mutex:
                                self.takeovers.append(holder)
                            return self._got(info, holder, start)
                        if status == "conflict":  # another waiter took it: look again
                            quick += 1
                            if quick < MAX_ERRORS:
                                continue
            if status == "error":  # not a lost race: origin unreachable or refusing
                errors += 1
                if errors >= MAX_ERRORS:
                    raise LockError(f"cannot take the lock of stack {stack!r}: {detail}")
            else:
                errors = 0
            quick = 0
            remaining = self.timeout - (time.monotonic() - start)
            if remaining <= 0:
                raise self._timeout_error(stack, holder, detail)
            pause = min(remaining, self.poll_interval * random.uniform(0.5, 1.5))  # noqa: S311
            if stop is None:
                self.sleep(pause)
            elif stop.wait(pause):
                raise LockError(f"stopped waiting for the lock of stack {stack!r}")

    def _timeout_error(self, stack: str, holder: LockInfo | None, detail: str) -> LockError:
        if holder is None:
            return LockError(f"could not take the lock of stack {stack!r} within "
                             f"{self.timeout:g}s: {detail}")
        where = f"origin {self.remote!r}" if self.has_origin else "this clone"
        fix = f"gitops-push locks break {stack} --force" + (
            f" (or: git push {self.remote} :{holder.ref})" if self.has_origin else "")
        return LockError(
            f"stack {stack!r} is locked by {holder.describe()}; gave up after waiting "
            f"{self.timeout:g}s (--lock-timeout). If that run is gone, wait for the expiry or "
            f"break the lock on {where}: {fix}")

    def _got(self, info: LockInfo, took_over: LockInfo | None, start: float) -> Acquired:
        got = Acquired(info, took_over, time.monotonic() - start, local=not self.has_origin)
        with self._mutex:
            self._held[info.stack] = got
            if self.heartbeat:
                self._stop.clear()  # the thread decides to exit under _mutex: no lost wake-up
                if self._thread is None:
                    self._thread = threading.Thread(target=self._beat, daemon=True,
                                                    name="gitops-push-lock-renew")
                    self._thread.start()
        return got

    def acquire(self, *stacks: str) -> list[Acquired]:
        """Several locks in sorted order (two runs never wait on each other in a cycle);
        on failure the ones already taken are released."""
        got: list[Acquired] = []
        try:
            for stack in sorted(set(stacks)):
                got.append(self.acquire_one(stack))
        except BaseException:
            for a in reversed(got):
                self.release(a.stack)
            raise
        return got

    @contextmanager
    def hold(self, *stacks: str) -> Iterator[list[Acquired]]:
        """``with locks.hold("network", "app"):`` — released on exit, also on exceptions."""
        got = self.acquire(*stacks)
        try:
            yield got
        finally:
            for a in reversed(got):
                self.release(a.stack)

    # -- renew and release --------------------------------------------------------------
    def renew(self, stack: str) -> Acquired:
        """Push a later ``expires_at``, only if the lock is still ours."""
        with self._ops:
            with self._mutex:
                current = self._held.get(stack)
            if current is None:
                raise LockError(f"stack {stack!r} is not locked by this run")
            info = self._new_info(stack, acquired=current.info.acquired_at)
            status, detail = self.cas(info.ref, info.sha, current.sha)
            if status == "conflict":
                holder = self.read(stack)
                why = f"taken over by {holder.describe()}" if holder else "it was deleted"
                raise LockLost(f"lost the lock of stack {stack!r}: {why}")
            if status != "ok":
                raise LockError(f"could not renew the lock of stack {stack!r}: {detail}")
            renewed = replace(current, info=info)
            with self._mutex:
                if stack in self._held:
                    self._held[stack] = renewed
            return renewed

    def _beat(self) -> None:
        while True:
            self._stop.wait(self.ttl / 3)
            with self._mutex:
                if self._stop.is_set() or not self._held:
                    self._thread = None
                    return
                stacks = list(self._held)
            try:
                if self._renew_batch():  # one round trip however many stacks are held
                    continue
            except Exception as exc:  # renewed one by one below
                with self._mutex:
                    self.warnings.append(f"could not renew the locks in one push: {exc}")
            for stack in stacks:
                try:
                    self.renew(stack)
                except LockLost as exc:
                    with self._mutex:
                        if stack in self._held:
                            self.lost[stack] = exc.message
                            del self._held[stack]
                except Exception as exc:  # transient: the next beat retries, well before expiry
                    with self._mutex:
                        self.warnings.append(f"could not renew the lock of {stack!r}: {exc}")

    def release(self, stack: str) -> bool:
        """Delete our lock (only if it is still ours). False if it was taken over or
        origin could not be reached — it then expires after ``ttl``. Never raises, so it
        is safe in ``finally``."""
        with self._ops:
            with self._mutex:
                held = self._held.pop(stack, None)
                if not self._held:
                    self._stop.set()  # nothing left to renew
            if held is None:
                return False
            detail = ""
            for attempt in range(MAX_ERRORS):
                try:
                    status, detail = self.cas(held.info.ref, None, held.sha)
                except ToolError as exc:
                    status, detail = "error", exc.message
                if status == "ok":
                    return True
                if status == "conflict":
                    break
                if attempt + 1 < MAX_ERRORS:
                    self.sleep(0.2 * (attempt + 1))
            with self._mutex:
                self.warnings.append(f"could not release the lock of stack {stack!r} "
                                     f"({detail.strip()}); it expires at "
                                     f"{iso(held.info.expires_at)}")
            return False

    def release_all(self) -> dict[str, bool]:
        """Release every lock this run holds and stop the heartbeat."""
        self.stop_heartbeat()
        return {stack: self.release(stack) for stack in sorted(self.held, reverse=True)}

    def __enter__(self) -> LockSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release_all()


def owner_fields(owner: LockOwner) -> dict[str, Any]:
    """The owner as a plain dict (for JSON output and audit records)."""
    return {k: v for k, v in vars(owner).items() if v is not None}
