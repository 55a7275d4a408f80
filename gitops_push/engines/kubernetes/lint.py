"""Offline checks of Kubernetes objects: identity, schema, duplicates, committed Secrets.

Schemas come from the ``kubernetes-validate`` package's strict JSON schemas (unknown
fields are errors, as they are for ``kubectl apply`` with server-side field validation);
custom resources have no schema there and pass with a note.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from gitops_push.engines.base import Diagnostic
from gitops_push.engines.kubernetes.diff import is_secret, secret_fields
from gitops_push.engines.kubernetes.objects import (
    CLUSTER_SCOPED,
    Manifest,
    ObjRef,
    crd_kinds,
    identity_problem,
    key_line,
)

MAX_SCHEMA_ERRORS = 5  # per object: the first few say enough
_MAX_MESSAGE = 200
_VERSION = re.compile(r"\d+\.\d+")


def _schema_dir(version: str) -> Path | None:
    """The strict schema directory for ``version`` (or the newest older one)."""
    import importlib.resources

    root = Path(str(importlib.resources.files("kubernetes_validate"))) / "kubernetes-json-schema"
    wanted = tuple(int(p) for p in version.split("."))
    best: tuple[tuple[int, ...], Path] | None = None
    for d in root.iterdir():
        m = re.fullmatch(r"v(\d+)\.(\d+)\.\d+-local-strict", d.name)
        if m:
            v = (int(m.group(1)), int(m.group(2)))
            if v <= wanted and (best is None or v > best[0]):
                best = (v, d)
    return best[1] if best else None


@cache
def _definitions(version: str) -> tuple[dict[str, Any], dict[tuple[str, str, str], str]]:
    """All schema definitions and the (group, version, kind) -> definition-name index."""
    directory = _schema_dir(version)
    if directory is None:
        return {}, {}
    defs: dict[str, Any] = json.loads((directory / "_definitions.json").read_text())
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in defs.get("$defs", {}).items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            index.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)
    return defs, index


@cache
def _validator(version: str, definition: str) -> Any:
    import jsonschema  # type: ignore[import-untyped,unused-ignore]
    import referencing  # type: ignore[import-untyped,unused-ignore]

    defs, _ = _definitions(version)
    resource = referencing.Resource.from_contents(defs)
    registry = referencing.Registry().with_resource(defs["$id"], resource)
    schema = {"$ref": f"{defs['$id']}#/$defs/{definition}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def built_in_groups(version: str) -> set[str]:
    return {g for g, _, _ in _definitions(version)[1]}


def version_supported(version: str) -> bool:
    return bool(_VERSION.fullmatch(version)) and _schema_dir(version) is not None


def resolve_namespace(m: Manifest, default_ns: str,
                      namespaced: Callable[[str, str], bool | None]) -> str:
    """The namespace an object lands in; "" for cluster-scoped kinds."""
    scoped = namespaced(m.group, m.kind)
    if scoped is False:
        return ""
    return m.namespace or default_ns


def offline_scope(manifests: Sequence[Manifest]) -> Callable[[str, str], bool | None]:
    """Namespaced or not, as far as we know without a cluster (None: unknown)."""
    crds = crd_kinds(manifests)

    def namespaced(group: str, kind: str) -> bool | None:
        if (group, kind) in CLUSTER_SCOPED:
            return False
        if (group, kind) in crds:
            return crds[(group, kind)]
        return None

    return namespaced


def lint_objects(manifests: Sequence[Manifest], *, version: str, default_ns: str
                 ) -> list[Diagnostic]:
    """Every check that needs no cluster, in file order."""
    diags: list[Diagnostic] = []
    valid: list[Manifest] = []
    for m in manifests:
        problem = identity_problem(m)
        if problem is not None:
            message, path = problem
            diags.append(_at(m, "error", message, path))
            continue
        valid.append(m)
        diags.extend(schema_diagnostics(m, version))
        diags.extend(secret_diagnostics(m))
    diags.extend(duplicate_diagnostics(valid, default_ns, offline_scope(valid)))
    return diags


def _at(m: Manifest, severity: str, message: str, path: Sequence[str | int] = ()) -> Diagnostic:
    line = key_line(m.node, list(path)) if path else None
    return Diagnostic(severity, message, file=m.file, line=line or m.line)


def describe(m: Manifest) -> str:
    return f"{m.kind} {m.namespace + '/' if m.namespace else ''}{m.name}"


def schema_diagnostics(m: Manifest, version: str) -> list[Diagnostic]:
    """Validate a built-in kind against its strict schema; CRDs and unknowns get a note."""
    index = _definitions(version)[1]
    group, _, api = m.api_version.rpartition("/")
    definition = index.get((group, api, m.kind))
    if definition is None:
        if group in built_in_groups(version):
            return [_at(m, "error", f"{describe(m)}: Kubernetes {version} has no kind "
                                    f"{m.kind!r} in {m.api_version} (removed or misspelt?)",
                        ["kind"])]
        return [_at(m, "note", f"{describe(m)}: no schema for {m.kind} ({m.api_version}); "
                               "custom resources are validated by the cluster")]
    errors = sorted(_validator(version, definition).iter_errors(m.body),
                    key=lambda e: [str(p) for p in e.absolute_path])
    out: list[Diagnostic] = []
    for error in errors[:MAX_SCHEMA_ERRORS]:
        path = list(error.absolute_path)
        where = _dotted(path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            extra = sorted(k for k in error.instance if k not in known)
            if extra:
                path = [*path, extra[0]]
                message = f"unknown field {extra[0]!r}"
            else:
                message = error.message
        elif is_secret(m.body):  # the message would quote the value
            message = f"invalid value (schema rule {error.validator!r})"
        else:
            message = error.message
        if len(message) > _MAX_MESSAGE:
            message = message[:_MAX_MESSAGE] + "..."
        out.append(_at(m, "error", f"{describe(m)}: {where}: {message}" if where
                       else f"{describe(m)}: {message}", path))
    if len(errors) > MAX_SCHEMA_ERRORS:
        out.append(_at(m, "error", f"{describe(m)}: {len(errors) - MAX_SCHEMA_ERRORS} more "
                                   "schema errors"))
    return out


def _dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def secret_diagnostics(m: Manifest) -> list[Diagnostic]:
    """Plain Secrets in git are readable by everyone with the repository: say so, no values."""
    if not is_secret(m.body):
        return []
    fields = secret_fields(m.body)
    if not fields:
        return []
    out: list[Diagnostic] = []
    data = fields.get("data", {})
    for key, value in data.items():
        if isinstance(value, str) and not _is_base64(value):
            out.append(_at(m, "error", f"{describe(m)}: data.{key} is not valid base64",
                           ["data", key]))
    keys = sorted({k for mapping in fields.values() for k in mapping})
    out.append(_at(m, "warning",
                   f"{describe(m)}: plain Secret with literal {' and '.join(fields)} "
                   f"(keys: {', '.join(keys)}) committed to git; encrypt it with SOPS or use "
                   "Sealed Secrets / External Secrets instead (values are never shown)",
                   [min(fields, key=lambda k: key_line(m.node, [k]) or 0)]))
    return out


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def duplicate_diagnostics(manifests: Sequence[Manifest], default_ns: str,
                          namespaced: Callable[[str, str], bool | None]) -> list[Diagnostic]:
    """The same object twice: the later silently wins in kubectl, so it is an error here."""
    seen: dict[ObjRef, Manifest] = {}
    out: list[Diagnostic] = []
    for m in manifests:
        ref = ObjRef(m.group, m.kind, resolve_namespace(m, default_ns, namespaced), m.name)
        first = seen.get(ref)
        if first is None:
            seen[ref] = m
            continue
        out.append(Diagnostic(
            "error", f"{ref.address} is defined twice: at {first.source} and at {m.source}",
            file=m.file, line=m.line))
    return out
