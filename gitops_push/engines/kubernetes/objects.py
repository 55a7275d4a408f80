"""Kubernetes objects for the kubernetes engine: reading, identity, preparation, comparison.

Everything here is offline and pure (no kubectl), so lint, plan and the tests share it.
Addresses look like ``Deployment.apps/demo/web`` (``Kind[.group]/[namespace/]name``,
the group left out for the core API) - kubectl's ``kind.group/name`` plus the namespace.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from gitops_push.config.yamlsafe import compose_all, line_of, to_python
from gitops_push.errors import ParseError

STACK_LABEL = "gitops-push.io/stack"
PROJECT_LABEL = "gitops-push.io/project"  # see owners.py
INVENTORY_LABEL = "gitops-push.io/inventory"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")

# Built-in cluster-scoped kinds, for offline work (lint); plan asks the cluster instead.
CLUSTER_SCOPED = frozenset({
    ("", "Namespace"), ("", "Node"), ("", "PersistentVolume"), ("", "ComponentStatus"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("storage.k8s.io", "StorageClass"), ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"), ("storage.k8s.io", "VolumeAttachment"),
    ("scheduling.k8s.io", "PriorityClass"), ("node.k8s.io", "RuntimeClass"),
    ("networking.k8s.io", "IngressClass"), ("networking.k8s.io", "IPAddress"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("certificates.k8s.io", "ClusterTrustBundle"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("resource.k8s.io", "DeviceClass"),
})

# Apply order inside the second phase (after Namespaces and CRDs), like Helm's install
# order: what others refer to first. Unknown kinds (custom resources) go last.
_KIND_ORDER = (
    "PriorityClass", "ResourceQuota", "LimitRange", "PodSecurityPolicy", "NetworkPolicy",
    "ServiceAccount", "Secret", "ConfigMap", "StorageClass", "PersistentVolume",
    "PersistentVolumeClaim", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
    "Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "PodDisruptionBudget",
    "IngressClass", "Ingress", "APIService", "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
)


@dataclass(frozen=True, order=True)
class ObjRef:
    """What makes an object the same object: group, kind, namespace ("" if cluster-wide), name."""

    group: str
    kind: str
    namespace: str
    name: str

    @property
    def address(self) -> str:
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        return f"{kind}/{self.namespace}/{self.name}" if self.namespace else f"{kind}/{self.name}"

    def to_json(self) -> dict[str, str]:
        return {"group": self.group, "kind": self.kind, "namespace": self.namespace,
                "name": self.name}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ObjRef:
        return cls(str(data.get("group", "")), str(data["kind"]),
                   str(data.get("namespace", "")), str(data["name"]))


def split_api_version(api_version: str) -> tuple[str, str]:
    """``apps/v1`` -> (``apps``, ``v1``); ``v1`` -> (``""``, ``v1``)."""
    group, _, version = api_version.rpartition("/")
    return group, version


@dataclass(frozen=True)
class Manifest:
    """One object as written in git (or rendered by kustomize), with where it came from."""

    body: dict[str, Any]
    file: str  # repo-relative
    line: int | None = None
    node: yaml.Node | None = field(default=None, compare=False, repr=False)

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    @property
    def api_version(self) -> str:
        value = self.body.get("apiVersion")
        return value if isinstance(value, str) else ""

    @property
    def kind(self) -> str:
        value = self.body.get("kind")
        return value if isinstance(value, str) else ""

    @property
    def group(self) -> str:
        return split_api_version(self.api_version)[0]

    @property
    def name(self) -> str:
        meta = self.body.get("metadata")
        value = meta.get("name") if isinstance(meta, dict) else None
        return value if isinstance(value, str) else ""

    @property
    def namespace(self) -> str:
        meta = self.body.get("metadata")
        value = meta.get("namespace") if isinstance(meta, dict) else None
        return value if isinstance(value, str) else ""


# -- reading ------------------------------------------------------------------------

def kustomization_file(stack_dir: Path) -> Path | None:
    for name in KUSTOMIZATION_NAMES:
        if (stack_dir / name).is_file():
            return stack_dir / name
    return None


def display_path(stack_path: str, rel: str) -> str:
    return rel if stack_path in (".", "") else str(PurePosixPath(stack_path) / rel)


def manifest_files(stack_dir: Path, repo_root: Path) -> Iterator[tuple[Path, str, str | None]]:
    """Manifest files under the stack, sorted, skipping hidden entries: (path, rel, problem).

    A symlink resolving outside the repository is reported, not followed: merge-request
    authors control the tree, and the CI job's files must not leak into a plan.
    """
    root = repo_root.resolve()
    for dirpath, dirnames, filenames in os.walk(stack_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or not name.endswith(MANIFEST_SUFFIXES):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(stack_dir).as_posix()
            target = path.resolve()
            outside = target != root and root not in target.parents
            yield path, rel, ("symlink points outside the repository" if outside else None)


def parse_file(data: bytes, display: str) -> list[Manifest]:
    """Every object in one file (multi-document YAML or JSON), ``List`` kinds flattened."""
    try:
        docs = [(d.node, d.line) for d in compose_all(data, display)]
    except ParseError:
        if not display.endswith(".json"):
            raise
        return _parse_json(data, display)
    out: list[Manifest] = []
    for node, line in docs:
        out.extend(_from_node(node, line, display))
    return out


def _from_node(node: yaml.Node, line: int, display: str) -> list[Manifest]:
    if not isinstance(node, yaml.MappingNode):
        raise ParseError("a manifest document must be a mapping (an object)",
                         path=f"{display}:{line}")
    body = to_python(node, display)
    if _is_list(body):
        items = _child(node, "items")
        nodes = items.value if isinstance(items, yaml.SequenceNode) else []
        return [m for item in nodes for m in _from_node(item, line_of(item), display)]
    return [Manifest(body, display, line, node)]


def _is_list(body: Mapping[str, Any]) -> bool:
    kind = body.get("kind")
    return (isinstance(kind, str) and kind.endswith("List")
            and isinstance(body.get("items"), list))


def _parse_json(data: bytes, display: str) -> list[Manifest]:
    """JSON PyYAML cannot read (tabs): no per-field lines, but duplicate keys still fail."""
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        for k in keys:
            if keys.count(k) > 1:
                raise ValueError(f"duplicate key {k!r}")
        return dict(pairs)

    try:
        body = json.loads(data, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON: {exc.msg}", path=f"{display}:{exc.lineno}") from exc
    except ValueError as exc:
        raise ParseError(f"invalid JSON: {exc}", path=display) from exc
    if not isinstance(body, dict):
        raise ParseError("a manifest document must be an object", path=f"{display}:1")
    if _is_list(body):
        return [Manifest(i, display, 1) for i in body["items"] if isinstance(i, dict)]
    return [Manifest(body, display, 1)]


def parse_rendered(text: str, display: str) -> list[Manifest]:
    """Objects printed by ``kubectl kustomize``; located at the kustomization (no lines)."""
    out: list[Manifest] = []
    for m in parse_file(text.encode(), display):
        out.append(Manifest(m.body, display, None, m.node))
    return out


def _child(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key and isinstance(v, yaml.Node):
            return v
    return None


def node_at(node: yaml.Node | None, path: Sequence[str | int]) -> yaml.Node | None:
    """The deepest YAML node along ``path`` (for the line of a schema error)."""
    current = node
    for part in path:
        if isinstance(current, yaml.MappingNode):
            nxt = None
            for k, v in current.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    nxt = v
                    break
            if nxt is None:
                return current
            current = nxt
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(current.value):
                return current
            current = current.value[part]
        else:
            return current
    return current


def key_line(node: yaml.Node | None, path: Sequence[str | int]) -> int | None:
    """Line of the key at ``path`` (the key's line reads better than its value's)."""
    if node is None:
        return None
    parent = node_at(node, path[:-1]) if path else None
    if isinstance(parent, yaml.MappingNode) and path:
        for k, _ in parent.value:
            if isinstance(k, yaml.ScalarNode) and k.value == str(path[-1]):
                return line_of(k)
    found = node_at(node, path)
    return line_of(found) if found is not None else None


# -- validity ------------------------------------------------------------------------

def label_value_problem(value: str) -> str | None:
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        return (f"stack name {value!r} cannot be the value of the {STACK_LABEL} label "
                "(at most 63 characters, starting and ending with a letter or digit)")
    return None


def identity_problem(m: Manifest) -> tuple[str, list[str]] | None:
    """Why ``m`` cannot be applied at all (no apiVersion / kind / name), and the key path."""
    body = m.body
    for key in ("apiVersion", "kind"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"missing {key!r} (every object needs apiVersion, kind and metadata.name)", []
    meta = body.get("metadata")
    if not isinstance(meta, dict):
        return "missing 'metadata' with a 'name'", []
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        extra = " (generateName is not supported: apply needs a stable name)" \
            if "generateName" in meta else ""
        return f"missing 'metadata.name'{extra}", ["metadata"]
    ns = meta.get("namespace")
    if ns is not None and not isinstance(ns, str):
        return "'metadata.namespace' must be a string", ["metadata", "namespace"]
    return None


# -- preparation: what is applied ---------------------------------------------------


def phase_of(ref: ObjRef) -> int:
    """0: Namespaces and CRDs, applied (and CRDs established) before anything else."""
    if (ref.group, ref.kind) in (("", "Namespace"),
                                 ("apiextensions.k8s.io", "CustomResourceDefinition")):
        return 0
    return 1


def sort_key(ref: ObjRef) -> tuple[int, int, str, str, str, str]:
    phase = phase_of(ref)
    rank = (0 if ref.kind == "Namespace" else 1) if phase == 0 else (
        _KIND_ORDER.index(ref.kind) if ref.kind in _KIND_ORDER else len(_KIND_ORDER))
    return (phase, rank, ref.group, ref.kind, ref.namespace, ref.name)


def crd_kinds(manifests: Sequence[Manifest]) -> dict[tuple[str, str], bool]:
    """(group, kind) -> namespaced, for the CustomResourceDefinitions in the stack."""
    out: dict[tuple[str, str], bool] = {}
    for m in manifests:
        if (m.group, m.kind) != ("apiextensions.k8s.io", "CustomResourceDefinition"):
            continue
        spec = m.body.get("spec")
        if not isinstance(spec, dict):
            continue
        names = spec.get("names")
        kind = names.get("kind") if isinstance(names, dict) else None
        group = spec.get("group")
        if isinstance(kind, str) and isinstance(group, str):
            out[(group, kind)] = spec.get("scope", "Namespaced") != "Cluster"
    return out


# -- secrets -------------------------------------------------------------------------


# -- comparison ----------------------------------------------------------------------


def ref_of_body(body: Mapping[str, Any]) -> ObjRef:
    api_version = body.get("apiVersion")
    group = split_api_version(api_version)[0] if isinstance(api_version, str) else ""
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    return ObjRef(group, str(body.get("kind", "")), str(meta.get("namespace") or ""),
                  str(meta.get("name", "")))


def dump_yaml(bodies: Sequence[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all([dict(b) for b in bodies], sort_keys=False,
                              default_flow_style=False, allow_unicode=True)
