"""The versioned JSON envelope of ``--output json`` and the data it carries."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gitops_push.run.model import Result
from gitops_push.run.serialize import outcome_data

if TYPE_CHECKING:
    from gitops_push.audit.results import VerifyResult
    from gitops_push.detect.changes import ChangeSet
    from gitops_push.errors import GitopsPushError
    from gitops_push.run.model import RunReport

SCHEMA_VERSION = 1


@dataclass
class Envelope:
    """The versioned JSON document every command prints with ``--output json``."""

    command: str
    exit_code: int = 0
    status: str = "success"  # success | partial | error
    data: Any = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        body = {
            "schema_version": SCHEMA_VERSION,
            "command": self.command,
            "status": self.status,
            "exit_code": self.exit_code,
            "data": self.data,
            "errors": self.errors,
            "warnings": self.warnings,
        }
        return json.dumps(body, sort_keys=True, indent=2, ensure_ascii=False, default=str)


def error_entry(exc: GitopsPushError) -> dict[str, Any]:
    return {"code": exc.code, "message": str(exc) if exc.path is None else exc.message,
            "path": exc.path}


def print_json(envelope: Envelope) -> None:
    sys.stdout.write(envelope.to_json() + "\n")
    sys.stdout.flush()


def changeset_data(cs: ChangeSet) -> dict[str, Any]:
    return {
        "base": cs.range.base,
        "head": cs.range.head,
        "base_source": cs.range.source,
        "warnings": list(cs.range.warnings),
        "stacks": [
            {
                "name": c.stack.name,
                "path": c.stack.path,
                "type": c.stack.type,
                "status": c.status,
                "wave": c.wave,
                "depends_on": list(c.stack.depends_on),
                "files": list(c.files),
                "reasons": [{"file": r.file, "chain": list(r.chain)} for r in c.reasons],
                "note": c.note,
            }
            for c in cs.stacks
        ],
    }


def report_data(report: RunReport) -> dict[str, Any]:
    return {
        "run_id": report.run_id,
        "head": report.head,
        "base": report.base,
        "base_source": report.base_source,
        "interrupted": report.interrupted,
        "stacks": [outcome_data(o) for o in report.outcomes],
        "notes": list(report.notes),
        "audit": report.audit,
    }


def report_envelope(report: RunReport) -> Envelope:
    errors = [{"code": o.result, "message": o.error or o.message, "path": o.path}
              for o in report.outcomes if not o.ok and o.result != Result.SKIPPED]
    return Envelope(report.command, exit_code=int(report.exit_code), status=report.status,
                    data=report_data(report), errors=errors, warnings=list(report.warnings))


def verify_data(result: VerifyResult) -> dict[str, Any]:
    return {
        "ok": bool(result.ok),
        "records": getattr(result, "count", None),
        "problems": [str(p) for p in getattr(result, "problems", [])],
    }
