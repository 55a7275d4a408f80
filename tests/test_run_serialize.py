"""run/serialize.py: one serializer for the JSON envelope and the audit record; their
fields are pinned here (existing trails and tools read them)."""

from __future__ import annotations

import json

from gitops_push.audit.record import encode
from gitops_push.engines.base import Change, DriftItem, DriftResult, PlanResult
from gitops_push.run.model import Result, StackOutcome
from gitops_push.run.serialize import outcome_data

PLAN = PlanResult("web", changes=(Change("a.b", "create", ("spec",)), Change("c", "no-op"),
                                  Change("d", "read")), tool_version="terraform 1.9.0")
OUTCOME = StackOutcome("web", "terraform", "infra/web", 1, "changed", Result.APPLIED,
                       message="1 to add", error="x" * 3000, duration=1.23456, plan=PLAN,
                       verify=DriftResult("web", (DriftItem("a.b", "changed", ("spec",)),)))


def test_the_record_keeps_its_fields_and_bounds() -> None:
    rec = outcome_data(OUTCOME, for_audit=True)
    assert set(rec) == {"name", "type", "path", "status", "result", "deployed", "message",
                        "error", "duration_s", "counts", "changed", "tool_version", "verify"}
    assert rec["deployed"] is True and rec["duration_s"] == 1.235
    assert rec["changed"] == [{"address": "a.b", "action": "create"}]
    assert len(rec["error"]) == 2000
    assert rec["verify"] == {"drifted": True, "items": [{"address": "a.b", "kind": "changed"}]}
    assert b'"result":"applied"' in encode(rec)  # the word, never the enum's name


def test_the_envelope_keeps_its_fields() -> None:
    data = outcome_data(OUTCOME)
    assert set(data) == {"name", "type", "path", "wave", "status", "result", "ok", "message",
                         "error", "duration_s", "counts", "changes", "outputs", "lint", "notes",
                         "needs_consent", "drift", "verify"}
    assert data["changes"] == [{"address": "a.b", "action": "create", "fields": ["spec"]},
                               {"address": "d", "action": "read", "fields": []}]
    assert data["counts"] == {"add": 1, "change": 0, "destroy": 0, "replace": 0}
    assert json.loads(json.dumps(data))["result"] == "applied" and data["drift"] is None
