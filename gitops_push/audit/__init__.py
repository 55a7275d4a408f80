"""The audit trail: ``trail`` (appending records, the spool), ``reader`` (fetching and
reading a trail), ``record`` (the record format and its hash chain), ``verify`` and
``results``. ``from gitops_push import audit; audit.Trail(...)`` is the API."""

from __future__ import annotations

from gitops_push.audit.trail import (
    CHAIN_FIELDS,
    MAX_ATTEMPTS,
    MIN_SECRET_LEN,
    MODES,
    AppendResult,
    Deployment,
    PendingRecord,
    Problem,
    SecretInRecord,
    SpoolUnwritable,
    StoredRecord,
    Trail,
    TrailReader,
    TrailStatus,
    VerifyResult,
    digest,
    encode,
    interrupted_runs,
    new_run_id,
    now_utc,
    parse_time,
    record_time,
    scrub,
)

__all__ = [
    "CHAIN_FIELDS", "MAX_ATTEMPTS", "MIN_SECRET_LEN", "MODES", "AppendResult", "Deployment",
    "PendingRecord", "Problem", "SecretInRecord", "SpoolUnwritable", "StoredRecord", "Trail",
    "TrailReader", "TrailStatus", "VerifyResult", "digest", "encode", "interrupted_runs",
    "new_run_id", "now_utc", "parse_time", "record_time", "scrub"
]
