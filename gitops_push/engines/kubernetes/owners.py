"""Who owns what: the project/stack that owns an object, and fields taken back from others.

Two owners matter on a shared cluster (issue 11):

- **The object's owner**, carried by two labels: ``gitops-push.io/project`` (the
  repository or the ``project:`` key) and ``gitops-push.io/stack``. A stack name alone
  is not unique (``app``, ``config`` and ``infra`` are common); the pair is. A stack never
  adopts, prunes or reports as its stray an object another project owns.
- **The fields' owners**, the server-side apply field managers. Git wins for the fields
  the manifests declare, so applying takes them over (``--force-conflicts``); what was
  taken, and from whom, is computed from the API server's own dry-run: the other
  managers' field sets before (live) and after (merged).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gitops_push.engines.kubernetes.kubectl import Inventory, Kubectl
from gitops_push.engines.kubernetes.objects import PROJECT_LABEL, STACK_LABEL, ObjRef
from gitops_push.errors import UserError

# -- the inventory ---------------------------------------------------------------------

def inventory_name(project: str, stack: str) -> str:
    """``gitops-push-inventory.<project>.<stack>``: one inventory per (project, stack).

    The dots keep it apart from the names before projects existed
    (``gitops-push-inventory-<stack>``, see ``legacy_inventory_name``)."""
    def part(text: str) -> str:
        s = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:60] or "x"
        return s if s == text else f"{s}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"

    return f"gitops-push-inventory.{part(project)}.{part(stack)}"


def legacy_inventory_name(stack: str) -> str:
    """The inventory of a stack applied before projects existed (migrated on next apply)."""
    slug = re.sub(r"[^a-z0-9.-]+", "-", stack.lower()).strip("-.")[:40] or "stack"
    if slug != stack:
        slug += "-" + hashlib.sha256(stack.encode()).hexdigest()[:8]
    return f"gitops-push-inventory-{slug}"


def read_inventory(kc: Kubectl, name: str, namespace: str, stack: str, project: str
                   ) -> Inventory:
    """The stack's inventory; one from before projects existed is taken over (and
    replaced by the project's own at the next apply), so nothing is forgotten."""
    inv = kc.read_inventory(name, namespace)
    if inv.resource_version is not None:
        return inv
    legacy = kc.read_inventory(legacy_inventory_name(stack), namespace)
    if legacy.resource_version is not None and legacy.project in (None, project):
        return legacy
    return inv


def write_inventory(kc: Kubectl, name: str, namespace: str,
                    refs: frozenset[ObjRef] | set[ObjRef], project: str,
                    previous: Inventory) -> None:
    """Write the project's inventory; a migrated legacy one is deleted after."""
    kc.write_inventory(name, namespace, refs, project)
    if previous.name and previous.name != name:
        kc.run("delete", "configmap", previous.name, "-n", namespace, "--ignore-not-found",
               what="old inventory ConfigMap")


# -- the owner of an object --------------------------------------------------------------

@dataclass(frozen=True)
class Owner:
    """The project and stack an object's labels say it belongs to."""

    project: str | None  # None: labelled before projects existed (legacy)
    stack: str

    def __str__(self) -> str:
        if self.project is None:
            return f"stack {self.stack!r} (no project label: applied by an older gitops-push)"
        return f"stack {self.stack!r} of project {self.project!r}"


def owner_of(body: Mapping[str, Any] | None) -> Owner | None:
    """The gitops-push owner recorded in an object's labels, if any."""
    meta = body.get("metadata") if body else None
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    if not isinstance(labels, Mapping) or not labels.get(STACK_LABEL):
        return None
    project = labels.get(PROJECT_LABEL)
    return Owner(str(project) if project else None, str(labels[STACK_LABEL]))


def foreign(owner: Owner | None, project: str) -> bool:
    """Owned by another project. Objects labelled before projects existed are not foreign:
    that is how existing deployments migrate (the next apply adds the project label)."""
    return owner is not None and owner.project is not None and owner.project != project


def check_owners(stack: str, project: str,
                 live: Mapping[ObjRef, Mapping[str, Any] | None]) -> None:
    """Stop (UserError) when an object the stack declares belongs to another project."""
    clashes = [f"{ref.address} belongs to {owner_of(body)}" for ref, body in live.items()
               if foreign(owner_of(body), project)]
    if clashes:
        raise UserError(
            f"stack {stack!r} of project {project!r}: " + "; ".join(clashes)
            + ". gitops-push never adopts, changes or prunes another project's objects: "
            "remove the object from one of them, or give both repositories the same "
            "project: key if they really are one project")


def prunable(owner: Owner | None, project: str, stack: str, ref: ObjRef,
             inventory: frozenset[ObjRef]) -> bool:
    """This stack's own object: its labels name this project and stack; or, from before
    projects existed, this stack's label and an entry in this stack's inventory."""
    if owner is None or owner.stack != stack:
        return False
    if owner.project is None:
        return ref in inventory
    return owner.project == project


# -- fields taken over from other managers -----------------------------------------------

def _leaves(fields: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The owned fields of a ``fieldsV1`` set, as key paths (``("f:data", "f:a")``)."""
    out: set[tuple[str, ...]] = set()
    if not isinstance(fields, Mapping):
        return out
    for key, value in fields.items():
        if key == ".":
            continue
        path = (*prefix, str(key))
        if not value or (isinstance(value, Mapping) and "." in value):
            out.add(path)
        out |= _leaves(value, path)
    return out


def _owned(body: Mapping[str, Any] | None) -> dict[str, set[tuple[str, ...]]]:
    meta = body.get("metadata") if body else None
    entries = meta.get("managedFields") if isinstance(meta, Mapping) else None
    out: dict[str, set[tuple[str, ...]]] = {}
    for e in entries if isinstance(entries, list) else []:
        if isinstance(e, Mapping) and isinstance(e.get("manager"), str):
            out.setdefault(e["manager"], set()).update(_leaves(e.get("fieldsV1")))
    return out


def field_path(keys: Sequence[str]) -> str:
    """``("f:data", "f:greeting")`` -> ``.data.greeting``; list items by key or value."""
    out = ""
    for key in keys:
        kind, _, rest = key.partition(":")
        if kind == "f":
            out += f".{rest}" if re.fullmatch(r"[A-Za-z0-9_-]+", rest) else f'["{rest}"]'
        elif kind == "k":
            try:
                item = json.loads(rest)
                out += "[" + ",".join(f"{k}={v}" for k, v in sorted(item.items())) + "]"
            except (ValueError, AttributeError):
                out += f"[{rest}]"
        elif kind == "v":
            out += f"[={rest}]"
        else:
            out += f"[{rest}]"
    return out or "."


def taken_over(live: Mapping[str, Any] | None, merged: Mapping[str, Any] | None,
               manager: str) -> dict[str, tuple[str, ...]]:
    """manager -> fields it owned live and loses when ``manager`` (ours) applies."""
    if live is None or merged is None:
        return {}
    before, after = _owned(live), _owned(merged)
    out: dict[str, tuple[str, ...]] = {}
    for other, fields in sorted(before.items()):
        if other == manager:
            continue
        lost = fields - after.get(other, set())
        # a lost map or list entry stands for the fields under it: name the entry once
        tops = {f for f in lost if not any(f[:i] in lost for i in range(1, len(f)))}
        if tops:
            out[other] = tuple(sorted(field_path(f) for f in tops))
    return out


def takeover_notes(address: str, taken: Mapping[str, Sequence[str]], limit: int = 6
                   ) -> list[str]:
    """``ConfigMap/ns/settings: takes .data.greeting back from kubectl-patch``."""
    out: list[str] = []
    for manager, fields in taken.items():
        shown = ", ".join(fields[:limit])
        more = f" (+{len(fields) - limit} more)" if len(fields) > limit else ""
        out.append(f"{address}: takes {shown}{more} back from {manager}")
    return out
