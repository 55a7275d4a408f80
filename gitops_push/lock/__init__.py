"""Stack locks on origin: ``store.py`` (one lock is a ref, taken and renewed by
compare-and-swap pushes), ``set.py`` (a run's locks: waits, heartbeat, release) and
``batch.py`` (all of a run's locks and its audit record in one atomic push)."""

from __future__ import annotations

from gitops_push.lock.batch import RunGate, RunLocks
from gitops_push.lock.set import LockSet, owner_fields
from gitops_push.lock.store import (
    DEFAULT_POLL,
    DEFAULT_TIMEOUT,
    DEFAULT_TTL,
    LOCK_PREFIX,
    SEEN_PREFIX,
    Acquired,
    LockInfo,
    LockLost,
    LockOwner,
    LockStore,
    active_run_ids,
    break_stack_lock,
    lock_data,
    lock_ref,
    utcnow,
)

__all__ = [
    "DEFAULT_POLL", "DEFAULT_TIMEOUT", "DEFAULT_TTL", "LOCK_PREFIX", "SEEN_PREFIX", "Acquired",
    "LockInfo", "LockLost", "LockOwner", "LockSet", "LockStore", "RunGate", "RunLocks",
    "active_run_ids", "break_stack_lock", "lock_data", "lock_ref", "owner_fields", "utcnow",
]
