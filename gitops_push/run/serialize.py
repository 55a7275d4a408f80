"""One serializer for a stack's outcome, feeding both the JSON envelope (``--output json``)
and the audit record. They share every field they have in common; the record keeps less
detail (no attribute paths, bounded lists and error text), the envelope more (lint
findings, outputs, notes). Both are written with sorted keys, so key order is free."""

from __future__ import annotations

from typing import Any

from gitops_push.engines.base import DriftResult
from gitops_push.run.model import Result, StackOutcome

DEPLOYED_RESULTS = frozenset({Result.APPLIED, Result.NO_CHANGES, Result.DESTROYED, Result.FIXED})
RECORD_LIST_LIMIT = 500  # changes or drift items kept per stack in a record
RECORD_ERROR_CHARS = 2000  # the tail of a failure's output kept in a record


def counts_data(o: StackOutcome) -> dict[str, int] | None:
    result = o.apply or o.plan
    if result is None:
        return None
    c = result.counts
    return {"add": c.add, "change": c.change, "destroy": c.destroy, "replace": c.replace}


def _drift(d: DriftResult, *, for_audit: bool) -> dict[str, Any]:
    if for_audit:
        return {"drifted": d.drifted, "items": [{"address": i.address, "kind": i.kind}
                                                for i in d.items][:RECORD_LIST_LIMIT]}
    return {"drifted": d.drifted,
            "items": [{"address": i.address, "kind": i.kind, "fields": list(i.fields)}
                      for i in d.items]}


def outcome_data(o: StackOutcome, *, for_audit: bool = False) -> dict[str, Any]:
    """The outcome as JSON data: for the envelope, or (``for_audit``) for the record."""
    data: dict[str, Any] = {
        "name": o.name, "type": o.type, "path": o.path, "status": o.status,
        "result": o.result, "message": o.message, "duration_s": round(o.duration, 3),
        "counts": counts_data(o),
    }
    if for_audit:
        done = o.apply or o.plan
        data["deployed"] = o.result in DEPLOYED_RESULTS
        data["error"] = (o.error or "")[-RECORD_ERROR_CHARS:] or None
        data["changed"] = [{"address": c.address, "action": c.action}
                           for c in (done.changes if done is not None else ())
                           if c.action not in ("no-op", "read")][:RECORD_LIST_LIMIT]
        if o.plan is not None and o.plan.tool_version:
            data["tool_version"] = o.plan.tool_version
        for key, drift in (("drift", o.drift), ("verify", o.verify)):
            if drift is not None:
                data[key] = _drift(drift, for_audit=True)
        return data
    plan = o.plan
    data.update({
        "wave": o.wave, "ok": o.ok, "error": o.error,
        "changes": [{"address": c.address, "action": c.action, "fields": list(c.fields)}
                    for c in (plan.changes if plan else ()) if c.action != "no-op"],
        "outputs": [{"name": x.name, "action": x.action, "sensitive": x.sensitive}
                    for x in (plan.outputs if plan else ())],
        "lint": [{"severity": d.severity, "message": d.message, "file": d.file, "line": d.line}
                 for d in (o.lint.diagnostics if o.lint else ())],
        "notes": list(plan.notes) if plan else [],
        "needs_consent": list(plan.needs_consent) if plan else [],
    })
    for key in ("drift", "verify"):
        d = getattr(o, key)
        data[key] = None if d is None else _drift(d, for_audit=False)
    return data
