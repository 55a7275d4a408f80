"""What the audit trail hands back: stored records, append outcomes and verify findings.

Plain frozen dataclasses with no git access, kept apart from ``Trail`` so the reading,
appending and verification modules can all name them without importing each other;
``gitops_push.audit`` re-exports every one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitops_push.errors import AuditError, AuditInvalid


@dataclass(frozen=True)
class StoredRecord:
    """One record as stored: its exact bytes, their sha256, and where it lives."""

    seq: int
    prev_sha256: str | None
    sha256: str
    location: str  # tree path, or ``notes:<commit>:<line>``
    data: dict[str, Any] = field(compare=False)
    raw: bytes = field(repr=False, compare=False)


@dataclass(frozen=True)
class AppendResult:
    """What happened to one record. ``pushed`` is False only when it was spooled."""

    run_id: str
    phase: str
    pushed: bool  # in the trail: on origin, or in the local ref when there is no origin
    local_only: bool = False  # no origin remote: only this clone has it
    already_present: bool = False  # an identical record was already in the trail
    seq: int | None = None
    sha256: str | None = None
    path: str | None = None  # where it is stored in the trail
    commit: str | None = None  # the trail commit that holds it
    ref: str = ""
    attempts: int = 0
    spool_path: Path | None = None
    reason: str | None = None  # why it was spooled
    flushed: int = 0  # spooled records pushed before this one

    @property
    def message(self) -> str:
        if not self.pushed:
            return (f"audit record {self.run_id} ({self.phase}) was NOT pushed ({self.reason}); "
                    f"it is kept in the spool at {self.spool_path} and the next run pushes "
                    "it first")
        where = "the local ref only (no origin remote)" if self.local_only else "origin"
        verb = "was already in" if self.already_present else "recorded in"
        return f"audit record seq {self.seq} {verb} {self.ref} on {where}: {self.path}"

    def error(self) -> AuditError | None:
        """The exit-6 error for a spooled record (None when it was stored)."""
        if self.pushed:
            return None
        return AuditError(self.message, path=str(self.spool_path) if self.spool_path else None)


@dataclass(frozen=True)
class Deployment:
    """The newest successful deployment of one stack, from the trail."""

    stack: str
    head: str
    run_id: str | None
    command: str | None
    finished_at: str | None
    record: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Problem:
    """One thing ``verify`` found wrong: ``kind`` names the check, ``message`` the place."""

    kind: str  # invalid | genesis | duplicate | missing-link | broken-link | edited | deleted
    #            | rewritten
    message: str
    seq: int | None = None
    location: str | None = None
    commit: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class VerifyResult:
    """What ``Trail.verify`` found; ``error()`` is the exit-code error when it is not ok."""

    ok: bool
    count: int
    mode: str
    ref: str
    tip: str | None
    problems: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def error(self) -> AuditInvalid | None:
        if self.ok or self.first is None:
            return None
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return AuditInvalid(f"audit trail invalid: {self.first.message}{more}")


@dataclass(frozen=True)
class TrailStatus:
    """A summary for ``status``: where the trail is, its newest record, what is pending."""

    mode: str
    ref: str
    remote: str | None
    tip: str | None
    count: int
    last: dict[str, Any] | None
    spooled: tuple[Path, ...]
    interrupted: tuple[str, ...]
    warnings: tuple[str, ...] = ()


__all__ = [
    "AppendResult",
    "Deployment",
    "Problem",
    "StoredRecord",
    "TrailStatus",
    "VerifyResult",
]
