"""Terraform's plan JSON (``show -json``) as summaries without values, and the saved summary.

``show -json`` holds every value in clear; what leaves this module are addresses,
actions, output names and attribute paths, redacted once more, so a plan comment or a
``terraform-plan.json`` artifact cannot leak a secret. The saved summary lets a later
``apply --plan-dir`` (another process or CI job) rebuild the plan without the JSON.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitops_push import proc
from gitops_push.engines.base import Change, DriftItem, OutputChange, PlanResult
from gitops_push.errors import UserError
from gitops_push.fsutil import atomic_write

PLAN_FILE = "terraform.tfplan"
SUMMARY_FILE = "terraform-plan.json"
SUMMARY_FORMAT = 1
MAX_FIELDS = 50  # attribute paths kept per change; a huge diff is summarised, not listed

_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_\-]+")
_ACTIONS = {
    ("create",): "create",
    ("update",): "update",
    ("delete",): "delete",
    ("read",): "read",
    ("no-op",): "no-op",
    ("forget",): "forget",
    ("delete", "create"): "replace",
    ("create", "delete"): "replace",
}


# -- plan JSON -> summaries (addresses, actions, attribute paths; never values) ----------


def clean(text: str, secrets: Iterable[str]) -> str:
    return proc.redact(str(text), secrets)


def _action(actions: Any) -> str:
    key = tuple(str(a) for a in actions) if isinstance(actions, list) else ()
    return _ACTIONS.get(key, "-".join(key) or "unknown")


def obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def obj_list(value: Any) -> list[dict[str, Any]]:
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def resource_changes(entries: Any, secrets: Sequence[str]) -> tuple[Change, ...]:
    out: list[Change] = []
    for entry in obj_list(entries):
        change = entry.get("change") or {}
        action = _action(change.get("actions"))
        if action == "no-op" and change.get("importing"):
            action = "import"
        fields = changed_paths(change) if action in ("update", "replace") else ()
        out.append(Change(clean(entry.get("address", "?"), secrets), action,
                          tuple(clean(f, secrets) for f in fields)))
    return tuple(out)


def output_changes(changes: Any, secrets: Sequence[str]) -> tuple[OutputChange, ...]:
    if not isinstance(changes, dict):
        return ()
    return tuple(
        OutputChange(
            clean(name, secrets),
            _action(change.get("actions")),
            sensitive=bool(change.get("before_sensitive") or change.get("after_sensitive")),
        )
        for name, change in sorted(changes.items())
        if isinstance(change, dict)
    )


def move_notes(entries: Any, secrets: Sequence[str]) -> tuple[str, ...]:
    return tuple(
        clean(f"{e['previous_address']} moved to {e.get('address', '?')}", secrets)
        for e in obj_list(entries)
        if e.get("previous_address")
    )


def drift_items(entries: Any, secrets: Sequence[str]) -> list[DriftItem]:
    """``resource_drift``: objects changed (``update``) or deleted outside Terraform."""
    items: list[DriftItem] = []
    for entry in obj_list(entries):
        change = entry.get("change") or {}
        action = _action(change.get("actions"))
        address = clean(entry.get("address", "?"), secrets)
        if action == "delete":
            items.append(DriftItem(address, "deleted"))
        elif action in ("update", "replace"):
            fields = tuple(clean(f, secrets) for f in changed_paths(change))
            items.append(DriftItem(address, "changed", fields))
    return items


def config_items(entries: Any, secrets: Sequence[str]) -> list[DriftItem]:
    """What a normal plan would change: the configuration differs from the live objects."""
    return [
        DriftItem(c.address, "config", c.fields)
        for c in resource_changes(entries, secrets)
        if c.action not in ("no-op", "read")
    ]


def changed_paths(change: Mapping[str, Any]) -> tuple[str, ...]:
    """Attribute paths that differ between ``before`` and ``after``; no values.

    A sensitive attribute is named but never descended into (its keys may be data).
    """
    out: list[str] = []
    _diff(change.get("before"), change.get("after"), change.get("after_unknown"),
          change.get("before_sensitive"), change.get("after_sensitive"), "", out)
    return tuple(out[:MAX_FIELDS])


def _diff(before: Any, after: Any, unknown: Any, sens_b: Any, sens_a: Any, path: str,
          out: list[str]) -> None:
    if len(out) >= MAX_FIELDS:
        return
    here = path or "(value)"
    if unknown is True or sens_b is True or sens_a is True:
        if unknown is True or before != after:
            out.append(here)
        return
    if isinstance(before, dict) and isinstance(after, dict):
        keys = [*before, *(k for k in after if k not in before)]
        if isinstance(unknown, dict):
            keys += [k for k in unknown if k not in before and k not in after]
        for key in keys:
            _diff(before.get(key), after.get(key), _sub(unknown, key), _sub(sens_b, key),
                  _sub(sens_a, key), _join(path, key), out)
        return
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            _diff(b, a, _sub(unknown, i), _sub(sens_b, i), _sub(sens_a, i), f"{path}[{i}]", out)
        return
    if before != after or _any_true(unknown):
        out.append(here)


def _sub(tree: Any, key: str | int) -> Any:
    """The marker subtree for ``key``: ``true`` covers everything below it."""
    if tree is True:
        return True
    if isinstance(tree, dict) and isinstance(key, str):
        return tree.get(key)
    if isinstance(tree, list) and isinstance(key, int) and key < len(tree):
        return tree[key]
    return None


def _any_true(tree: Any) -> bool:
    if isinstance(tree, dict):
        return any(_any_true(v) for v in tree.values())
    if isinstance(tree, list):
        return any(_any_true(v) for v in tree)
    return tree is True


def _join(path: str, key: str) -> str:
    if _PLAIN_KEY_RE.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


# -- the saved-plan summary ----------------------------------------------------------------


@dataclass(frozen=True)
class PlanFacts:
    """What ``terraform-plan.json`` records besides the summary (never values)."""

    binary: str
    version: str
    workspace: str | None
    plan: PlanResult


def write_summary(path: Path, facts: PlanFacts) -> None:
    """``terraform-plan.json``: the summary and engine facts, written atomically, no values."""
    plan = facts.plan
    doc = {
        "format": SUMMARY_FORMAT,
        "engine": "terraform",
        "stack": plan.stack,
        "binary": facts.binary,
        "terraform_version": facts.version,
        "tool_version": plan.tool_version,
        "workspace": facts.workspace,
        "destroy": plan.destroy,
        "plan_file": PLAN_FILE,
        "changes": [{"address": c.address, "action": c.action, "fields": list(c.fields)}
                    for c in plan.changes],
        "outputs": [{"name": o.name, "action": o.action, "sensitive": o.sensitive}
                    for o in plan.outputs],
        "notes": list(plan.notes),
    }
    atomic_write(path, json.dumps(doc, indent=2, sort_keys=True) + "\n", what="plan summary")


def read_summary(artifact: Path, stack: str) -> PlanFacts:
    """The saved plan's summary; UserError if it or the binary plan next to it is missing."""
    path = artifact / SUMMARY_FILE
    try:
        if not (artifact / PLAN_FILE).is_file():
            raise ValueError(f"{PLAN_FILE} is missing")
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != SUMMARY_FORMAT or doc.get("engine") != "terraform":
            raise ValueError(f"unsupported format {doc.get('format')!r}")
        if doc.get("stack") != stack:
            raise ValueError(f"it is the plan of stack {doc.get('stack')!r}")
        plan = PlanResult(
            stack=stack,
            changes=tuple(Change(c["address"], c["action"], tuple(c["fields"]))
                          for c in doc["changes"]),
            outputs=tuple(OutputChange(o["name"], o["action"], bool(o["sensitive"]))
                          for o in doc["outputs"]),
            destroy=bool(doc["destroy"]),
            artifact=artifact,
            tool_version=str(doc["tool_version"]),
            notes=tuple(str(n) for n in doc["notes"]),
        )
        return PlanFacts(str(doc["binary"]), str(doc["terraform_version"]),
                         doc.get("workspace"), plan)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise UserError(f"stack {stack!r}: cannot read the saved Terraform plan: {reason}",
                        path=os.fspath(path)) from exc
