"""Per-stack locks as refs on origin: two applies of one stack never overlap.

Why refs: the git server serialises updates of one ref, and ``--force-with-lease``
turns a push into a compare-and-swap, so origin itself decides who wins — no lock
service, and every CI system that can push can lock. A lock is
``refs/gitops-push/locks/<stack>`` pointing at a commit (empty tree) whose message is
JSON: owner (run id, actor, pipeline URL, host, pid), ``acquired_at``, ``expires_at``.
Why expiry: a SIGKILLed run cannot release; after ``ttl`` its lock is taken over (with a
lease on the dead lock's SHA, so two waiters cannot both take it) and the takeover is
reported. A heartbeat renews held locks every ttl/3 so a long apply keeps its lock.
With no origin remote the same compare-and-swap runs locally with ``git update-ref``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any

from gitops_push import ci as ci_env
from gitops_push.audit.record import parse_time
from gitops_push.errors import LockError, UserError
from gitops_push.git import (
    NETWORK_TIMEOUT,
    Repo,
    commit_tree,
    fetch_refspecs,
    ls_remote,
    push,
    rev,
)
from gitops_push.git.plumbing import commit_text, empty_tree, local_refs, update_ref

LOCK_PREFIX = "refs/gitops-push/locks/"
SEEN_PREFIX = "refs/gitops-push/origin-locks/"  # this clone's copy of origin's locks
DEFAULT_TTL = 3600.0  # seconds; renewed every ttl/3 while held
DEFAULT_TIMEOUT = 600.0  # seconds to wait for a held lock (--lock-timeout)
DEFAULT_POLL = 2.0  # seconds between looks at a held lock, jittered x0.5-1.5
MAX_ERRORS = 3  # failed pushes that are not lost races, in a row
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


class LockLost(LockError):
    """Our lock was taken over (it had expired): the stack is no longer protected."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(t: datetime) -> str:
    """UTC ISO 8601 to the millisecond: what a lock message stores."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def lock_ref(stack: str) -> str:
    """The lock ref of a stack. Names git would refuse (``a..b``, ``x.lock``) and every
    character outside ``[A-Za-z0-9._-]`` are %-escaped; ``%`` is never in a stack name,
    so escaped names cannot collide with plain ones."""
    if not stack:
        raise LockError("a lock needs a stack name")
    plain = (_SAFE_NAME.fullmatch(stack) and ".." not in stack and not stack.endswith(".")
             and not stack.endswith(".lock"))
    name = stack if plain else "".join(
        c if c.isascii() and (c.isalnum() or c in "_-") else
        "".join(f"%{b:02X}" for b in c.encode()) for c in stack)
    return LOCK_PREFIX + name


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock: enough for a person to find the pipeline and ask."""

    run_id: str
    actor: str | None = None
    pipeline_url: str | None = None
    host: str | None = None
    pid: int | None = None
    command: str | None = None

    @classmethod
    def current(cls, run_id: str, environ: Mapping[str, str], command: str | None = None
                ) -> LockOwner:
        ctx = ci_env.detect(environ)
        actor = ctx.actor or ci_env.clean(environ.get("USER") or environ.get("LOGNAME"))
        return cls(run_id, actor, ctx.pipeline_url or ctx.job_url,
                   ci_env.clean(os.uname().nodename, 100), os.getpid(), command)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> LockOwner:
        def text(key: str) -> str | None:
            v = data.get(key)
            return ci_env.clean(str(v)) if v is not None else None

        pid = data.get("pid")
        return cls(text("run_id") or "unknown", text("actor"), text("pipeline_url"),
                   text("host"), pid if isinstance(pid, int) else None, text("command"))

    def describe(self) -> str:
        who = f"run {self.run_id}"
        if self.command:
            who = f"{self.command} {who}"
        if self.actor:
            who += f" by {self.actor}"
        if self.pipeline_url:
            who += f" ({self.pipeline_url})"
        if self.host:
            who += f" on {self.host}" + (f" pid {self.pid}" if self.pid else "")
        return who


@dataclass(frozen=True)
class LockInfo:
    """A lock as stored: its ref, the commit it points at, and the decoded message."""

    stack: str
    ref: str
    sha: str
    owner: LockOwner
    acquired_at: datetime
    expires_at: datetime
    renewed_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def describe(self) -> str:
        return (f"{self.owner.describe()}, held since {iso(self.acquired_at)} "
                f"(expires {iso(self.expires_at)})")

    def message(self) -> str:
        data = {"version": 1, "stack": self.stack, "owner": {
            k: v for k, v in vars(self.owner).items() if v is not None},
            "acquired_at": iso(self.acquired_at), "expires_at": iso(self.expires_at)}
        if self.renewed_at is not None:
            data["renewed_at"] = iso(self.renewed_at)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Acquired:
    """A lock this process holds. ``took_over`` is the expired lock it replaced."""

    info: LockInfo
    took_over: LockInfo | None = None
    waited: float = 0.0
    local: bool = False  # no origin: a ref in this clone only

    @property
    def stack(self) -> str:
        return self.info.stack

    @property
    def sha(self) -> str:
        return self.info.sha


class LockStore:
    """Reading and compare-and-swap of lock refs, on origin or (no origin) locally."""

    def __init__(self, repo: Repo, *, remote: str = "origin",
                 network_timeout: float = NETWORK_TIMEOUT) -> None:
        self.repo = repo
        self.remote = remote
        self.network_timeout = network_timeout

    @cached_property
    def has_origin(self) -> bool:
        return self.repo.has_remote(self.remote)

    @cached_property
    def _empty_tree(self) -> str:
        return empty_tree(self.repo)

    def _commit(self, info: LockInfo) -> str:
        return commit_tree(self.repo, self._empty_tree, [], info.message())

    def _parse(self, stack: str, sha: str) -> LockInfo:
        """Decode a lock commit; junk on the ref counts as a lock expiring ``DEFAULT_TTL``
        after its commit date, so it blocks no longer than a real one."""
        raw = commit_text(self.repo, sha)
        headers, _, message = raw.partition("\n\n")
        committed = utcnow()
        for line in headers.splitlines():
            if line.startswith("committer "):
                with suppress(ValueError, IndexError):
                    committed = datetime.fromtimestamp(int(line.split()[-2]), timezone.utc)
        try:
            data = json.loads(message)
            owner = LockOwner.from_mapping(data["owner"])
            acquired = parse_time(data["acquired_at"])
            expires = parse_time(data["expires_at"])
            if acquired is None or expires is None:
                raise ValueError("bad times")
            return LockInfo(stack, lock_ref(stack), sha, owner, acquired, expires,
                            parse_time(data.get("renewed_at")))
        except (ValueError, KeyError, TypeError, AttributeError):
            return LockInfo(stack, lock_ref(stack), sha, LockOwner("unknown (not a gitops-push "
                            "lock)"), committed, committed + timedelta(seconds=DEFAULT_TTL))

    def read(self, stack: str) -> LockInfo | None:
        """The lock on ``stack`` now, or None. Raises LockError if origin cannot be read."""
        ref = lock_ref(stack)
        if not self.has_origin:
            sha = rev(self.repo, ref)
            return self._parse(stack, sha) if sha else None
        for _ in range(MAX_ERRORS):
            found = ls_remote(self.repo, self.remote, ref, timeout=self.network_timeout)
            if found is None:
                raise LockError(f"cannot read the lock of stack {stack!r}: {self.remote} is "
                                "unreachable")
            sha = found.get(ref)
            if sha is None:
                return None
            if not self.repo.has_commit(sha):
                self._fetch([ref])
            if self.repo.has_commit(sha):
                return self._parse(stack, sha)
            # the ref moved between ls-remote and fetch: look again
        raise LockError(f"cannot read the lock of stack {stack!r}: {self.remote} lists it but "
                        "it could not be fetched (it kept changing)")

    def _fetch(self, refs: list[str]) -> None:
        fetch_refspecs(self.repo, self.remote, refs, timeout=self.network_timeout)

    def list(self) -> list[LockInfo]:
        """Every lock, sorted by stack."""
        if self.has_origin:
            found = ls_remote(self.repo, self.remote, LOCK_PREFIX + "*",
                              timeout=self.network_timeout)
            if found is None:
                raise LockError(f"cannot list locks: {self.remote} is unreachable")
            found = {r: s for r, s in found.items() if r.startswith(LOCK_PREFIX)}
            missing = [r for r, s in found.items() if not self.repo.has_commit(s)]
            if missing:
                self._fetch(missing)
        else:
            found = local_refs(self.repo, LOCK_PREFIX)
        infos = [self._parse(self._stack_of(r), s) for r, s in found.items()
                 if self.repo.has_commit(s)]
        return sorted(infos, key=lambda i: i.stack)

    def look(self, extra_refspecs: Sequence[str] = ()) -> dict[str, LockInfo] | None:
        """Every lock on origin, fetched in one connection together with
        ``extra_refspecs`` (the trail). None if origin could not be read."""
        spec = f"+{LOCK_PREFIX}*:{SEEN_PREFIX}*"
        ok, error = fetch_refspecs(self.repo, self.remote, [*extra_refspecs, spec],
                                   prune=True, timeout=self.network_timeout)
        if not ok and extra_refspecs and "couldn't find remote ref" in error:
            ok, error = fetch_refspecs(self.repo, self.remote, [spec], prune=True,
                                       timeout=self.network_timeout)
        if not ok:
            return None
        found = {LOCK_PREFIX + r[len(SEEN_PREFIX):]: sha
                 for r, sha in local_refs(self.repo, SEEN_PREFIX).items()}
        return {i.stack: i for i in (self._parse(self._stack_of(r), sha)
                                     for r, sha in found.items())}

    @staticmethod
    def _stack_of(ref: str) -> str:
        name = ref[len(LOCK_PREFIX):]
        if "%" not in name:
            return name
        return re.sub(r"(%[0-9A-F]{2})+", lambda m: bytes.fromhex(
            m.group(0).replace("%", "")).decode("utf-8", "replace"), name)

    def cas(self, ref: str, new: str | None, old: str | None) -> tuple[str, str]:
        """Set ``ref`` to ``new`` (None: delete) only if it is at ``old`` (None: absent).

        Returns ("ok" | "conflict" | "error", detail).
        """
        if not self.has_origin:
            ok, err = update_ref(self.repo, ref, new, old, message="gitops-push lock")
            return ("ok", "") if ok else ("conflict", err)
        result = push(self.repo, self.remote, [f"{new}:{ref}" if new else f":{ref}"],
                      leases=[f"{ref}:{old or ''}"], atomic=True, timeout=self.network_timeout)
        if result.ok:
            return "ok", ""
        return ("conflict" if result.kind == "stale" else "error"), result.detail

    def break_lock(self, stack: str) -> LockInfo | None:
        """Delete a lock whoever holds it (``gitops-push unlock``); returns what it was."""
        info = self.read(stack)
        if info is None:
            return None
        status, detail = self.cas(info.ref, None, info.sha)
        if status != "ok":
            raise LockError(f"could not break the lock of stack {stack!r}: {detail}")
        return info


def lock_data(info: LockInfo, now: datetime | None = None) -> dict[str, Any]:
    """A lock as plain data, for ``gitops-push locks list`` and its JSON output."""
    return {"stack": info.stack, "ref": info.ref, "run_id": info.owner.run_id,
            "actor": info.owner.actor, "command": info.owner.command,
            "pipeline_url": info.owner.pipeline_url, "host": info.owner.host,
            "acquired_at": iso(info.acquired_at), "expires_at": iso(info.expires_at),
            "renewed_at": iso(info.renewed_at) if info.renewed_at else None,
            "expired": info.expired(now or utcnow())}


def break_stack_lock(repo: Repo, stack: str, *, force: bool = False, remote: str = "origin",
                     now: datetime | None = None) -> LockInfo | None:
    """Delete a stack's lock (``gitops-push locks break``); None when it holds none.

    An unexpired lock may belong to a run that is still applying, so it is only broken
    with ``force``. The delete is leased on the lock commit that was read: a lock renewed
    or replaced meanwhile is left alone.
    """
    store = LockStore(repo, remote=remote)
    info = store.read(stack)
    if info is None:
        return None
    if not force and not info.expired(now or utcnow()):
        raise UserError(f"stack {stack!r} is locked by {info.describe()}; that run may still "
                        "be applying. Wait for it or for the expiry; pass --force only if you "
                        "know it is gone")
    status, detail = store.cas(info.ref, None, info.sha)
    if status == "conflict":
        raise LockError(f"the lock of stack {stack!r} changed while breaking it (renewed, "
                        "released or taken over); look again with `gitops-push locks list`")
    if status != "ok":
        raise LockError(f"could not break the lock of stack {stack!r}: {detail}")
    return info


def active_run_ids(repo: Repo, *, remote: str = "origin", now: datetime | None = None
                   ) -> set[str]:
    """Run ids holding an unexpired lock: runs in progress, not interrupted ones."""
    when = now or utcnow()
    store = LockStore(repo, remote=remote)
    if store.has_origin:  # one fetch of every lock (ls-remote + fetch would be two)
        seen = store.look()
        if seen is None:
            raise LockError(f"cannot list locks: {remote} is unreachable")
        infos = list(seen.values())
    else:
        infos = store.list()
    return {i.owner.run_id for i in infos if not i.expired(when)}
