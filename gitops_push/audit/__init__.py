"""The audit trail: ``trail`` (appending records, the spool), ``reader`` (fetching and
reading a trail), ``record`` (the record format and its hash chain), ``verify`` and
``results``. ``from gitops_push import audit; audit.Trail(...)`` is the API."""

from __future__ import annotations

from gitops_push.audit.reader import MAX_ATTEMPTS, MODES, TrailReader
from gitops_push.audit.record import (
    CHAIN_FIELDS,
    MIN_SECRET_LEN,
    SecretInRecord,
    SpoolUnwritable,
    digest,
    encode,
    interrupted_runs,
    new_run_id,
    now_utc,
    parse_time,
    record_time,
    scrub,
)
from gitops_push.audit.results import (
    AppendResult,
    Deployment,
    Problem,
    StoredRecord,
    TrailStatus,
    VerifyResult,
)
from gitops_push.audit.trail import PendingRecord, Trail

__all__ = [
    "CHAIN_FIELDS", "MAX_ATTEMPTS", "MIN_SECRET_LEN", "MODES", "AppendResult", "Deployment",
    "PendingRecord", "Problem", "SecretInRecord", "SpoolUnwritable", "StoredRecord", "Trail",
    "TrailReader", "TrailStatus", "VerifyResult", "digest", "encode", "interrupted_runs",
    "new_run_id", "now_utc", "parse_time", "record_time", "scrub"
]
