"""Audit record helpers with no git in them: times, run ids, encoding and digests.

Also what a record goes through before it is stored (``scrub`` replaces a secret's
value by a marker naming it) and ``interrupted_runs``, which reads a list of records.
They live apart from ``Trail`` so that modules which only need a timestamp or a run id
(locks, the workflow runner) do not load the storage code; ``gitops_push.audit``
re-exports all of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from hashlib import sha256
from secrets import token_hex
from typing import Any

from gitops_push.errors import AuditError

CHAIN_FIELDS = ("seq", "prev_sha256")
MIN_SECRET_LEN = 4  # as proc.redact: shorter values match too much to mean anything
RUNNER_MARKER = "(sensitive)"  # proc.REDACTED: what the tool runner puts in a tool's output
RUNNER_REDACTION = "a credential in a tool's output (replaced by (sensitive))"

HEX_RE = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # a git object id: SHA-1 or SHA-256
_RUN_TIME_RE = re.compile(r"(\d{8}T\d{6}Z)")


# -- small helpers the runner uses --------------------------------------------------------
def now_utc() -> str:
    """The current UTC time as ISO 8601 with a ``Z`` (the format of every record time)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    """A run id that sorts by start time: ``20261126T101500Z-a1b2c3d4`` (UTC + random)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + token_hex(4)


def parse_time(value: object) -> datetime | None:
    """An aware UTC datetime from ``YYYY-MM-DD``, ISO 8601, or a run id's prefix."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str) or not value:
        return None
    m = _RUN_TIME_RE.match(value)
    text = value.strip()
    try:
        if m:
            # fromisoformat reads the basic format too, without strptime's import (~1.5 ms)
            parsed = datetime.fromisoformat(m.group(1))
        else:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def record_time(record: Mapping[str, Any]) -> datetime | None:
    """When a record's run happened: ``finished_at``, else ``started_at``, else its run id."""
    for key in ("finished_at", "started_at", "run_id"):
        t = parse_time(record.get(key))
        if t is not None:
            return t
    return None


def encode(record: Mapping[str, Any]) -> bytes:
    """The exact stored bytes of a record: sorted compact JSON, UTF-8, one line + newline."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return text.encode("utf-8") + b"\n"


def digest(data: bytes) -> str:
    """The sha256 of a record's exact stored bytes: what the next record's link names."""
    return sha256(data).hexdigest()


class SecretInRecord(AuditError):
    """Kept for callers that still catch it: records are redacted now, never refused."""

    code = "audit-secret"


class SpoolUnwritable(AuditError):
    """The record could not be pushed *and* could not be spooled; ``record`` holds it."""

    code = "audit-lost"

    def __init__(self, message: str, *, record: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.record = dict(record)


def marker(label: str) -> str:
    """What stands in a record where a secret's value was: it names, never shows."""
    return f"(redacted: {label})"


def scrub(record: Mapping[str, Any], secrets: Mapping[str, str] | Iterable[str]
          ) -> dict[str, Any]:
    """A copy of ``record`` with every secret value replaced in place by a marker naming it.

    Never drops the record (issue 11): a tool's error message can quote a credential,
    and the record of that failure is the one the trail exists for. ``secrets`` maps each
    value to what it is (``$DB_PASSWORD``, ``kubeconfig token of user deployer``); plain
    values are named "a secret". When something was replaced, ``redactions`` lists where
    and what, so a reader knows the record was redacted.
    """
    labels = dict(secrets) if isinstance(secrets, Mapping) else dict.fromkeys(secrets,
                                                                               "a secret")
    needles = sorted((v for v in labels if isinstance(v, str) and len(v) >= MIN_SECRET_LEN),
                     key=len, reverse=True)
    found: list[dict[str, str]] = []

    def clean(text: str, where: str) -> str:
        for value in needles:
            if value in text:
                text = text.replace(value, marker(labels[value]))
                found.append({"field": where or "the record", "secret": labels[value]})
        if RUNNER_MARKER in text:  # a tool's output the runner already redacted
            found.append({"field": where or "the record", "secret": RUNNER_REDACTION})
        return text

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, Mapping):
            return {clean(str(k), f"a key in {where or 'the record'}"):
                    walk(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, str):
            return clean(value, where)
        return value

    out: dict[str, Any] = walk(dict(record), "")
    if found:
        earlier = out.get("redactions")
        out["redactions"] = [*(earlier if isinstance(earlier, list) else []), *found]
    return out


def interrupted_runs(
    records: Iterable[Mapping[str, Any]],
    current_run_id: str | None = None,
    *,
    active_run_ids: Iterable[str] = (),
    min_age: timedelta | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """``started`` records whose run never wrote its ``finished`` record.

    A run still in progress looks the same, so these are excluded: the current run,
    runs holding an unexpired stack lock (``active_run_ids``, see ``lock.active_run_ids``),
    runs younger than ``min_age`` when given, and runs a later record already reported
    (its ``interrupted_runs`` field lists them), so each interruption is reported once.
    """
    recs = list(records)
    finished = {r.get("run_id") for r in recs if r.get("phase") == "finished"}
    acknowledged: set[object] = set()
    for r in recs:
        listed = r.get("interrupted_runs")
        if isinstance(listed, list):
            acknowledged.update(x for x in listed if isinstance(x, str))
    skip = finished | acknowledged | set(active_run_ids) | {current_run_id}
    when = now or datetime.now(timezone.utc)
    out: list[dict[str, Any]] = []
    for r in recs:
        rid = r.get("run_id")
        if r.get("phase") != "started" or rid in skip:
            continue
        if min_age is not None:
            t = record_time(r)
            if t is not None and when - t < min_age:
                continue
        skip.add(rid)
        out.append(dict(r))
    return out


__all__ = [
    "CHAIN_FIELDS",
    "HEX_RE",
    "MIN_SECRET_LEN",
    "SecretInRecord",
    "SpoolUnwritable",
    "digest",
    "encode",
    "interrupted_runs",
    "marker",
    "new_run_id",
    "now_utc",
    "parse_time",
    "record_time",
    "scrub",
]
