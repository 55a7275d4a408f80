"""Comparing objects: what a plan shows (changed field paths, never a secret's values),
what is ignored (``ignore_differences`` JSON pointers) and how secrets are masked.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gitops_push.engines.kubernetes.objects import PROJECT_LABEL, STACK_LABEL, Manifest, ObjRef

SENSITIVE = "(sensitive)"


_NOISE = frozenset({"resourceVersion", "generation", "managedFields", "creationTimestamp",
                    "uid", "selfLink"})


@dataclass(frozen=True)
class IgnoreRule:
    """Fields another controller owns: never applied, never compared."""

    kind: str
    json_pointers: tuple[str, ...]
    group: str | None = None
    name: str | None = None
    namespace: str | None = None

    def matches(self, ref: ObjRef) -> bool:
        return (self.kind == ref.kind
                and (self.group is None or self.group == ref.group)
                and (self.name is None or self.name == ref.name)
                and (self.namespace is None or self.namespace == ref.namespace))


def pointer_parts(pointer: str) -> list[str]:
    """RFC 6901: ``/a/b~1c`` -> ``["a", "b/c"]``."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer {pointer!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


def strip_pointer(body: Any, parts: Sequence[str]) -> None:
    """Remove the field at ``parts`` (if present) from ``body`` in place."""
    if not parts:
        return
    current = body
    for part in parts[:-1]:
        current = _step(current, part)
        if current is None:
            return
    last = parts[-1]
    if isinstance(current, dict):
        current.pop(last, None)
    elif isinstance(current, list) and last.isdigit() and int(last) < len(current):
        del current[int(last)]


def _step(value: Any, part: str) -> Any:
    if isinstance(value, dict):
        return value.get(part)
    if isinstance(value, list) and part.isdigit() and int(part) < len(value):
        return value[int(part)]
    return None


def strip_ignored(body: dict[str, Any], ref: ObjRef, rules: Sequence[IgnoreRule]) -> None:
    for rule in rules:
        if rule.matches(ref):
            for pointer in rule.json_pointers:
                strip_pointer(body, pointer_parts(pointer))


def is_secret(body: Mapping[str, Any]) -> bool:
    return body.get("kind") == "Secret" and body.get("apiVersion") == "v1"


def secret_fields(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The Secret's ``data`` and ``stringData`` mappings (what must never be shown)."""
    out: dict[str, dict[str, Any]] = {}
    for key in ("data", "stringData"):
        value = body.get(key)
        if isinstance(value, dict) and value:
            out[key] = value
    return out


def masked(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``body`` with every Secret value replaced by ``(sensitive)``."""
    if not is_secret(body):
        return body
    out = copy.deepcopy(body)
    for key, values in secret_fields(body).items():
        out[key] = dict.fromkeys(values, SENSITIVE)
    annotations = out.get("metadata", {}).get("annotations")
    if isinstance(annotations, dict):  # client-side apply keeps the whole object here
        annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    return out


def masked_pair(live: dict[str, Any] | None, merged: dict[str, Any]
                ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Mask a Secret's before/after values, keeping whether each one changed."""
    if not is_secret(merged) and not (live and is_secret(live)):
        return live, merged
    before, after = (masked(live) if live else None), masked(merged)
    old = secret_fields(live) if live else {}
    for key, values in secret_fields(merged).items():
        for name, value in values.items():
            if old.get(key, {}).get(name) != value:
                after[key][name] = SENSITIVE + " (changed)"
    return before, after


def secret_values(body: Mapping[str, Any]) -> list[str]:
    """Every literal a Secret holds, base64 and decoded, for redaction.

    Only a Secret's: a ConfigMap's ``data`` is not secret, and redacting it masked object
    names that contain one of its values (``team-a-settings`` with ``owner: team-a``
    became ``(sensitive)-settings``), so the post-apply check saw a stray (issue 11)."""
    import base64
    import binascii

    if not is_secret(body):
        return []
    values: list[str] = []
    for key, mapping in secret_fields(body).items():
        for v in mapping.values():
            if not isinstance(v, str):
                continue
            values.append(v)
            if key == "data":
                with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                    values.append(base64.b64decode(v, validate=True).decode())
            else:
                values.append(base64.b64encode(v.encode()).decode())
    return values


_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(prefix: str, key: str) -> str:
    if _SIMPLE_KEY.fullmatch(key):
        return f"{prefix}.{key}" if prefix else key
    return f'{prefix}["{key}"]'


def changed_paths(live: Any, merged: Any, prefix: str = "") -> list[str]:
    """Field paths that differ, e.g. ``spec.template.spec.containers[name=web].image``."""
    if isinstance(live, dict) and isinstance(merged, dict):
        out: list[str] = []
        for key in sorted(set(live) | set(merged), key=str):
            if key not in live or key not in merged:
                if live.get(key) != merged.get(key):
                    out.append(_join(prefix, str(key)))
                continue
            out.extend(changed_paths(live[key], merged[key], _join(prefix, str(key))))
        return out
    if isinstance(live, list) and isinstance(merged, list):
        if live == merged:
            return []
        a, b = _by_name(live), _by_name(merged)
        if a is not None and b is not None:
            if a.keys() != b.keys():
                return [prefix]
            return [p for n in a for p in changed_paths(a[n], b[n], f"{prefix}[name={n}]")]
        if len(live) == len(merged):
            return [p for i, (a, b) in enumerate(zip(live, merged, strict=True))
                    for p in changed_paths(a, b, f"{prefix}[{i}]")]
        return [prefix]
    return [] if live == merged else [prefix]


def _by_name(items: list[Any]) -> dict[str, Any] | None:
    names = [i["name"] for i in items if isinstance(i, dict) and isinstance(i.get("name"), str)]
    if len(names) != len(items) or len(set(names)) != len(names):
        return None
    return dict(zip(names, items, strict=True))


def comparable(body: Mapping[str, Any] | None, ref: ObjRef,
               rules: Sequence[IgnoreRule]) -> dict[str, Any] | None:
    """What plan and drift compare: no status, no server bookkeeping, no ignored fields."""
    if body is None:
        return None
    out = copy.deepcopy(dict(body))
    out.pop("status", None)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        for key in _NOISE:
            meta.pop(key, None)
    strip_ignored(out, ref, rules)
    return out


def field_changes(live: Mapping[str, Any] | None, merged: Mapping[str, Any], ref: ObjRef,
                  rules: Sequence[IgnoreRule]) -> tuple[str, ...]:
    a, b = comparable(live, ref, rules), comparable(merged, ref, rules)
    return tuple(changed_paths(a, b))


def prepared_body(m: Manifest, *, namespace: str, stack: str, project: str,
                  rules: Sequence[IgnoreRule], ref: ObjRef) -> dict[str, Any]:
    """The object as applied: namespace filled in, owner labels added, ignored fields gone
    (so they are neither compared nor claimed: server-side apply owns what a body sets)."""
    body = copy.deepcopy(m.body)
    meta = body.setdefault("metadata", {})
    if namespace:
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    meta["labels"] = {**labels, PROJECT_LABEL: project, STACK_LABEL: stack}
    strip_ignored(body, ref, rules)
    return body
