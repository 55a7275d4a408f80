"""A small Kubernetes API server emulator for tests (stdlib + PyYAML; HTTPS via cryptography).

It speaks enough of the Kubernetes REST API that the real ``kubectl`` binary (1.32) and the
official ``kubernetes`` Python client work against it: ``kubectl apply --server-side``,
``kubectl diff --server-side`` (with the default strict ``--validate``), ``get``/``delete``,
``patch``/``label``/``scale``/``edit``-style updates, ``rollout status``, ``wait`` and the
Python client's typed APIs.

What is emulated
----------------
* Discovery: ``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>[/<version>]`` in
  the plain (unaggregated) format; kubectl falls back to it by itself. Built-in kinds: see
  ``BUILTIN_TYPES``. Creating a CustomResourceDefinition registers its served versions (status
  conditions ``NamesAccepted`` and ``Established`` become True at once); deleting it removes
  them together with all their custom resources.
* OpenAPI: ``/openapi/v3`` and ``/openapi/v3/<api/v1|apis/g/v>`` hold only the PATCH
  operation of every kind, marked with ``x-kubernetes-group-version-kind`` and the
  ``fieldValidation`` query parameter. That is what kubectl checks to decide that the server
  validates fields itself, so it skips client-side schema validation (which would need full
  schemas). ``/openapi/v2`` answers an empty protobuf document (a valid, empty one). There are
  no schemas: ``kubectl explain`` does not work and unknown fields are accepted.
* Server-side apply (``PATCH`` with ``application/apply-patch+yaml``, ``fieldManager``,
  ``force``, ``dryRun=All``) with ``metadata.managedFields`` per manager and operation
  (``Apply``/``Update``, with ``subresource`` for status/scale writes) in the real ``FieldsV1``
  format: fields a manager applied before but omits now are removed unless another manager
  owns them too; a differing value for a field owned by another manager is a 409 Conflict
  with the real Status body (``Apply failed with 1 conflict: conflict with "m" using apps/v1:
  .spec.replicas``) unless ``force=true``, which takes the ownership over. Non-apply writes
  (POST/PUT/merge/JSON/strategic patches) are ``Update`` operations: the writer takes the
  fields it changed or added from everybody else, like the real field manager.
  Maps are granular, except ``selector``/``labelSelector``/``namespaceSelector`` (atomic, as in
  the real LabelSelector). Lists are keyed where Kubernetes keys them (``containers``,
  ``initContainers``, ``env``, ``volumes``, ``imagePullSecrets`` by ``name``; ``volumeMounts``
  by ``mountPath``; ``ports`` by ``containerPort``/``port`` + ``protocol`` (default TCP);
  ``conditions`` by ``type``; ``ownerReferences`` by ``uid``; see ``_LIST_KEYS``),
  ``finalizers`` is a set, every other list is atomic (replaced and owned as a whole). This is
  by field name, whatever the kind, so it also applies to custom resources. ``Update`` entries
  never carry the ``.: {}`` markers of maps that the real server records.
* Strategic merge patch: merge patch plus the keyed lists above, ``finalizers`` union, and the
  ``$patch: replace|delete``, ``$retainKeys`` and ``$deleteFromPrimitiveList`` directives
  (``$setElementOrder`` is ignored). Custom resources reject it with 415, like the real server.
* POST create (``generateName`` too), PUT replace (with ``resourceVersion`` precondition →
  409), GET, LIST (namespaced and across namespaces; ``labelSelector`` with ``=``, ``==``,
  ``!=``, ``in``, ``notin``, exists, ``!key``, ``>``/``<``; ``fieldSelector`` on any dotted
  path with ``=``/``==``/``!=``), DELETE (``propagationPolicy`` accepted, deletion is
  immediate; owner references are garbage-collected at once; objects with finalizers get a
  ``deletionTimestamp`` and go when the last finalizer is removed), deletecollection, and
  ``watch=true`` (chunked JSON event stream with ``resourceVersion``, ``timeoutSeconds``,
  selectors; enough for ``kubectl rollout status``/``kubectl wait``). LIST ignores ``limit``
  (never paginates). ``kubectl get`` receives ``meta.k8s.io/v1`` Tables (Name and Age).
* ``status`` subresource (GET/PUT/PATCH/apply) for workloads, Pods, Services, Namespaces,
  CRDs and custom resources that declare it: status writes change only ``status``, main-resource
  writes never change ``status``. ``scale`` subresource (``autoscaling/v1`` Scale) for
  Deployments, StatefulSets, ReplicaSets and custom resources that declare it.
* ``metadata``: ``uid``, ``resourceVersion`` (one global counter), ``creationTimestamp``,
  ``generation`` (bumped on changes outside metadata/status for kinds that have it); a no-op
  write (same content) changes nothing, not even the resourceVersion, like the real server.
* Minimal defaulting, only what clients rely on: workload ``replicas``/update strategies/
  ``revisionHistoryLimit``/``progressDeadlineSeconds``, Job ``parallelism``/``completions``/
  ``backoffLimit``, Namespace ``status.phase`` and its ``kubernetes.io/metadata.name`` label,
  Service ``type``/``clusterIP``/``sessionAffinity``, CRD ``conversion``.
* Namespaces ``default``, ``kube-system``, ``kube-public`` and ``kube-node-lease`` exist; a
  namespaced write into a missing namespace is 404 ``namespaces "x" not found``. Deleting a
  namespace deletes its contents at once (there is no Terminating phase).
* Errors as real ``Status`` bodies: 404 NotFound, 409 AlreadyExists/Conflict, 422 Invalid
  (missing name, wrong CRD name), 400 BadRequest, 415, 405.
* Auth: optional bearer token (``token=``) → 401 ``Unauthorized``; ``deny(verb, resource,
  namespace)`` → 403 with the real RBAC message (``User "u" cannot patch resource
  "deployments" in API group "apps" in the namespace "ns"``). kubectl never sends kubeconfig
  credentials to an ``http://`` server (client-go's clientcmd reads them only for TLS), so with a
  token the server serves HTTPS with a self-signed certificate made at start (needs the
  ``cryptography`` package); ``kubeconfig()`` embeds it as ``certificate-authority-data``.
  ``tls=False`` with no token gives plain HTTP.
* Protobuf request bodies (kubectl 1.32's typed clients send them, e.g. ``kubectl create
  namespace|configmap|secret|serviceaccount``) are decoded for v1 Namespace, ConfigMap, Secret
  and ServiceAccount; other kinds get a 415 that says so (``kubectl create deployment`` etc.:
  pipe ``--dry-run=client -o yaml`` into ``kubectl apply``). Responses are always JSON, which
  every client accepts.
* Controller helpers: ``mark_rolled_out``, ``mark_rollout_failed``, ``mark_job_complete``,
  ``mark_job_failed``, ``set_status``; ``auto_rollout=True`` marks workloads rolled out and Jobs
  complete after every write.

What is not emulated
--------------------
No controllers (no ReplicaSets or Pods are created, nothing schedules or runs), no admission,
no schema validation or pruning of unknown fields, no immutability rules, no conversion
between versions (all versions of a group/resource share one store), no aggregated discovery,
no protobuf responses, no HTTP/2, no pagination, no Terminating namespaces, no graceful
deletion, no ``kubectl explain``/client-side apply schema (client-side ``kubectl apply`` still
works: kubectl falls back to its built-in types), no Table columns beyond Name and Age, no
``exec``/``logs``/``port-forward``/``proxy``, no impersonation, no ``selfLink``, no
``managedFields`` ``.: {}`` markers on maps in ``Update`` entries. Watch history is kept in
memory (last 10 000 events); a watch from a too-old resourceVersion is not answered 410 Gone.

Every request is recorded in ``requests`` as (method, path?query); internal errors (emulator
bugs) are answered 500 and kept in ``errors``.

Usage::

    with KubeApiServer(token="t", auto_rollout=False) as server:  # binds 127.0.0.1:0
        Path("kubeconfig").write_text(server.kubeconfig(namespace="default"))
        ...  # run kubectl --kubeconfig kubeconfig ...
        server.mark_rolled_out("deployment", "web", "default")
        server.deny("patch", "deployments", "default")  # the next patch is 403
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as _dt
import hashlib
import json
import re
import secrets
import select
import socket
import ssl
import string
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path as _FsPath
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import yaml

Obj = dict[str, Any]
Path = tuple[str, ...]

KUBE_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "gitCommit": "emulator",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_MEMBER = object()  # value of a "list item exists" path in a flattened object
_MISSING = object()


# --------------------------------------------------------------------------- resource types


@dataclass(frozen=True)
class ResourceType:
    """One served resource: what discovery lists and the URL routing resolves."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status: bool = False  # has a status subresource
    scale: bool = False  # has a scale subresource
    generation: bool = False  # metadata.generation is tracked
    singular: str = ""
    custom: bool = False  # served because of a CRD
    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str = ""
    verbs: tuple[str, ...] = _ALL_VERBS

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """``deployments.apps`` / ``configmaps``: how error messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    def discovery(self) -> list[Obj]:
        entries: list[Obj] = [
            {
                "name": self.plural,
                "singularName": self.singular_name,
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": list(self.verbs),
                **({"shortNames": list(self.short_names)} if self.short_names else {}),
                **({"categories": list(self.categories)} if self.categories else {}),
            }
        ]
        if self.status:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if self.scale:
            entries.append(
                {
                    "name": f"{self.plural}/scale",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
        return entries


def _rt(group: str, version: str, kind: str, plural: str, namespaced: bool = True,
        **kw: Any) -> ResourceType:
    return ResourceType(group, version, kind, plural, namespaced, **kw)


_ALL = ("all",)
BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _rt("", "v1", "Namespace", "namespaces", False, short_names=("ns",), status=True),
    _rt("", "v1", "ConfigMap", "configmaps", short_names=("cm",)),
    _rt("", "v1", "Secret", "secrets"),
    _rt("", "v1", "Service", "services", short_names=("svc",), categories=_ALL, status=True),
    _rt("", "v1", "ServiceAccount", "serviceaccounts", short_names=("sa",)),
    _rt("", "v1", "Pod", "pods", short_names=("po",), categories=_ALL, status=True),
    _rt("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short_names=("pvc",),
        status=True),
    _rt("", "v1", "PersistentVolume", "persistentvolumes", False, short_names=("pv",),
        status=True),
    _rt("", "v1", "ReplicationController", "replicationcontrollers", short_names=("rc",),
        categories=_ALL, status=True, scale=True, generation=True),
    _rt("", "v1", "Event", "events", short_names=("ev",)),
    _rt("", "v1", "Endpoints", "endpoints", short_names=("ep",)),
    _rt("", "v1", "LimitRange", "limitranges", short_names=("limits",)),
    _rt("", "v1", "ResourceQuota", "resourcequotas", short_names=("quota",), status=True),
    _rt("apps", "v1", "Deployment", "deployments", short_names=("deploy",), categories=_ALL,
        status=True, scale=True, generation=True),
    _rt("apps", "v1", "StatefulSet", "statefulsets", short_names=("sts",), categories=_ALL,
        status=True, scale=True, generation=True),
    _rt("apps", "v1", "DaemonSet", "daemonsets", short_names=("ds",), categories=_ALL,
        status=True, generation=True),
    _rt("apps", "v1", "ReplicaSet", "replicasets", short_names=("rs",), categories=_ALL,
        status=True, scale=True, generation=True),
    _rt("apps", "v1", "ControllerRevision", "controllerrevisions"),
    _rt("batch", "v1", "Job", "jobs", categories=_ALL, status=True, generation=True),
    _rt("batch", "v1", "CronJob", "cronjobs", short_names=("cj",), categories=_ALL,
        status=True, generation=True),
    _rt("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    _rt("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    _rt("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    _rt("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    _rt("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
        False, short_names=("crd", "crds"), status=True, generation=True),
    _rt("coordination.k8s.io", "v1", "Lease", "leases"),
    _rt("networking.k8s.io", "v1", "Ingress", "ingresses", short_names=("ing",), status=True,
        generation=True),
    _rt("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", short_names=("netpol",),
        generation=True),
    _rt("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews",
        False, verbs=("create",)),
    _rt("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", short_names=("pdb",),
        status=True, generation=True),
    _rt("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
        short_names=("hpa",), categories=_ALL, status=True),
    _rt("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
        short_names=("hpa",), categories=_ALL, status=True),
)
_CRD_GROUP = "apiextensions.k8s.io"
_WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answered as a ``Status`` body."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(rt: ResourceType, name: str | None) -> Obj:
    d: Obj = {}
    if name:
        d["name"] = name
    if rt.group:
        d["group"] = rt.group
    d["kind"] = rt.plural
    return d


def _not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found',
                    _details(rt, name))


def _ns_not_found(name: str) -> ApiError:
    return ApiError(404, "NotFound", f'namespaces "{name}" not found',
                    {"name": name, "kind": "namespaces"})


def _invalid(rt: ResourceType, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 like the real validation errors; causes are (field, reason, message)."""
    text = ", ".join(f"{f}: {m}" for f, _, m in causes)
    if len(causes) > 1:
        text = "[" + text + "]"
    details = _details(rt, name)
    details["kind"] = rt.kind
    details["causes"] = [{"reason": r, "message": m, "field": f} for f, r, m in causes]
    group = f".{rt.group}" if rt.group else ""
    return ApiError(422, "Invalid", f'{rt.kind}{group} "{name}" is invalid: {text}', details)


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


# --------------------------------------------------------------------------- small helpers


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str) -> _dt.datetime:
    return _dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    secs = int((_dt.datetime.now(_dt.timezone.utc) - _parse_time(ts)).total_seconds())
    secs = max(secs, 0)
    if secs < 120:
        return f"{secs}s"
    mins = secs // 60
    if mins < 10:
        return f"{mins}m{secs % 60}s"
    if mins < 180:
        return f"{mins}m"
    hours = mins // 60
    return f"{hours}h" if hours < 48 else f"{hours // 24}d"


def _meta(obj: Obj) -> Obj:
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value if v is not None]
    return value


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _dig(obj: Any, dotted: str) -> Any:
    cur = obj
    for part in dotted.strip(".").split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _set_dotted(obj: Obj, dotted: str, value: Any) -> None:
    parts = dotted.strip(".").split(".")
    cur = obj
    for part in parts[:-1]:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[part] = nxt
        cur = nxt
    cur[parts[-1]] = value


# --------------------------------------------------------------------------- field sets

# Lists that Kubernetes merges by key (x-kubernetes-list-type: map / patchMergeKey), by field
# name. Everything not here and not in _SET_LISTS is atomic.
_LIST_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "imagePullSecrets": ("name",),
    "resourceClaims": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
}
_SET_LISTS = frozenset({"finalizers"})
_ATOMIC_MAPS = frozenset({"selector", "labelSelector", "namespaceSelector"})
# Never part of any field set (the real "strip meta" manager).
_IGNORED_META = frozenset(
    {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
     "managedFields", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"}
)


def _list_keys(fieldname: str, items: Iterable[Any]) -> tuple[str, ...] | None:
    """Key fields of a keyed list, or None when the list is atomic (or a set)."""
    items = list(items)
    if fieldname == "ports":
        keys: tuple[str, ...] | None = None
        if items and all(isinstance(i, dict) and "containerPort" in i for i in items):
            keys = ("containerPort", "protocol")
        elif items and all(isinstance(i, dict) and "port" in i for i in items):
            keys = ("port", "protocol")
    else:
        keys = _LIST_KEYS.get(fieldname)
    if keys is None:
        return None
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict) or any(k not in item for k in keys if k != "protocol"):
            return None
        token = _key_token(item, keys)
        if token in seen:
            return None
        seen.add(token)
    return keys


def _is_set_list(fieldname: str, items: list[Any]) -> bool:
    return fieldname in _SET_LISTS and all(
        isinstance(i, str | int | float | bool) for i in items
    )


def _key_token(item: Obj, keys: tuple[str, ...]) -> str:
    kv: Obj = {}
    for k in sorted(keys):
        if k in item:
            kv[k] = item[k]
        elif k == "protocol":
            kv[k] = "TCP"
    return "k:" + json.dumps(kv, separators=(",", ":"), ensure_ascii=False)


def _value_token(value: Any) -> str:
    return "v:" + json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _flatten(value: Any, prefix: Path, fieldname: str, out: dict[Path, Any]) -> None:
    if isinstance(value, dict):
        if not value or fieldname in _ATOMIC_MAPS:
            out[prefix] = value
            return
        for k, v in value.items():
            _flatten(v, (*prefix, f"f:{k}"), k, out)
        return
    if isinstance(value, list) and value:
        keys = _list_keys(fieldname, value)
        if keys is not None:
            for item in value:
                p = (*prefix, _key_token(item, keys))
                out[p] = _MEMBER
                for k, v in item.items():
                    _flatten(v, (*p, f"f:{k}"), k, out)
            return
        if _is_set_list(fieldname, value):
            for item in value:
                item_path = (*prefix, _value_token(item))
                out[item_path] = item
            return
    out[prefix] = value


def flatten_fields(obj: Obj, scope: str = "all") -> dict[Path, Any]:
    """Map of field path -> value for every owned-able field of an object.

    ``scope`` is ``main`` (everything but ``status``), ``status`` (only ``status``) or
    ``all``. apiVersion, kind and server-set metadata are never included.
    """
    out: dict[Path, Any] = {}
    for k, v in obj.items():
        if k in ("apiVersion", "kind"):
            continue
        if k == "status" and scope == "main":
            continue
        if k != "status" and scope == "status":
            continue
        if k == "metadata" and isinstance(v, dict):
            for mk, mv in v.items():
                if mk not in _IGNORED_META:
                    _flatten(mv, ("f:metadata", f"f:{mk}"), mk, out)
            continue
        _flatten(v, (f"f:{k}",), k, out)
    return out


def fields_to_v1(paths: Iterable[Path]) -> Obj:
    """Field paths -> the ``fieldsV1`` tree (``{"f:spec": {"f:replicas": {}}}``)."""
    root: Obj = {}
    members: list[Obj] = []
    for path in sorted(set(paths)):
        node = root
        for token in path:
            node = node.setdefault(token, {})
        members.append(node)
    for node in members:
        if node:
            node["."] = {}
    return _sort_tree(root)


def _sort_tree(node: Obj) -> Obj:
    return {k: _sort_tree(node[k]) for k in sorted(node)}


def fields_from_v1(tree: Obj, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for key, child in tree.items():
        if key == ".":
            out.add(prefix)
        elif isinstance(child, dict) and child:
            out |= fields_from_v1(child, (*prefix, key))
        else:
            out.add((*prefix, key))
    return out


def path_string(path: Path) -> str:
    """``.spec.template.spec.containers[name="web"].image`` like structured-merge-diff."""
    parts: list[str] = []
    for token in path:
        kind, rest = token[:2], token[2:]
        if kind == "f:":
            parts.append("." + rest)
        elif kind == "k:":
            kv = json.loads(rest)
            parts.append("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in kv.items()) + "]")
        elif kind == "v:":
            parts.append(f"[={rest}]")
        else:
            parts.append(f"[{rest}]")
    return "".join(parts)


def _find_item(items: list[Any], token: str) -> int:
    if token.startswith("v:"):
        want = json.loads(token[2:])
        for i, item in enumerate(items):
            if item == want:
                return i
        return -1
    kv = json.loads(token[2:])
    keys = tuple(kv)
    for i, item in enumerate(items):
        if isinstance(item, dict) and _key_token(item, keys) == token:
            return i
    return -1


def get_path(obj: Any, path: Path) -> Any:
    cur = obj
    for token in path:
        if token.startswith("f:"):
            if not isinstance(cur, dict) or token[2:] not in cur:
                return _MISSING
            cur = cur[token[2:]]
        else:
            if not isinstance(cur, list):
                return _MISSING
            i = _find_item(cur, token)
            if i < 0:
                return _MISSING
            cur = cur[i]
    return cur


def remove_path(obj: Any, path: Path) -> bool:
    if not path:
        return False
    parent = get_path(obj, path[:-1])
    token = path[-1]
    if token.startswith("f:"):
        if isinstance(parent, dict) and token[2:] in parent:
            del parent[token[2:]]
            return True
        return False
    if isinstance(parent, list):
        i = _find_item(parent, token)
        if i >= 0:
            del parent[i]
            return True
    return False


# --------------------------------------------------------------------------- merging


def merge_applied(live: Any, applied: Any, fieldname: str = "") -> Any:
    """Merge an applied configuration into a live value (server-side apply semantics)."""
    if isinstance(applied, dict) and isinstance(live, dict) and fieldname not in _ATOMIC_MAPS:
        out = dict(live)
        for k, v in applied.items():
            out[k] = merge_applied(live[k], v, k) if k in live else copy.deepcopy(v)
        return out
    if isinstance(applied, list) and isinstance(live, list):
        keys = _list_keys(fieldname, applied)
        if keys is not None and _list_keys(fieldname, live) is not None:
            result = [copy.deepcopy(i) for i in live]
            for item in applied:
                i = _find_item(result, _key_token(item, keys))
                if i >= 0:
                    result[i] = merge_applied(result[i], item, "")
                else:
                    result.append(copy.deepcopy(item))
            return result
        if _is_set_list(fieldname, applied) and _is_set_list(fieldname, live):
            return list(live) + [i for i in applied if i not in live]
    return copy.deepcopy(applied)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge_patch(target: Any, patch: Any, fieldname: str = "") -> Any:
    """Strategic merge patch: merge patch plus keyed lists and the ``$`` directives."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return _MISSING
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$deleteFromPrimitiveList/"):
            name = k.split("/", 1)[1]
            if isinstance(out.get(name), list) and isinstance(v, list):
                out[name] = [i for i in out[name] if i not in v]
            continue
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            merged = strategic_merge_patch(out.get(k), v, k)
            if merged is _MISSING:
                out.pop(k, None)
            else:
                out[k] = merged
        elif isinstance(v, list):
            out[k] = _strategic_list(out.get(k), v, k)
        else:
            out[k] = v
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain or k in patch}
    return out


def _strategic_list(target: Any, patch: list[Any], fieldname: str) -> list[Any]:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [_strip_directives(i) for i in patch
                if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    live = target if isinstance(target, list) else []
    items = [i for i in patch if not (isinstance(i, dict) and i.get("$patch") == "delete")]
    keys = _list_keys(fieldname, items + live)
    if keys is None:
        keys = _list_keys(fieldname, patch)
    if keys is not None and _list_keys(fieldname, live) is not None:
        result = [copy.deepcopy(i) for i in live]
        for item in patch:
            i = _find_item(result, _key_token(item, keys))
            if item.get("$patch") == "delete":
                if i >= 0:
                    del result[i]
            elif i >= 0:
                result[i] = strategic_merge_patch(result[i], item)
            else:
                result.append(_strip_directives(item))
        return result
    if _is_set_list(fieldname, patch) and _is_set_list(fieldname, live):
        return list(live) + [i for i in patch if i not in live]
    return [_strip_directives(i) for i in patch]


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _bad_request(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch."""
    if not isinstance(ops, list):
        raise _bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(target)

    def parent_of(parts: list[str]) -> tuple[Any, str]:
        cur = doc
        for p in parts[:-1]:
            if isinstance(cur, list):
                cur = cur[int(p)]
            elif isinstance(cur, dict) and p in cur:
                cur = cur[p]
            else:
                raise _bad_request(f"json patch path /{'/'.join(parts)} does not exist")
        return cur, parts[-1]

    def get(parts: list[str]) -> Any:
        cur = doc
        for p in parts:
            try:
                cur = cur[int(p)] if isinstance(cur, list) else cur[p]
            except (KeyError, IndexError, ValueError, TypeError):
                raise _bad_request(f"json patch path /{'/'.join(parts)} does not exist") from None
        return cur

    def remove(parts: list[str]) -> Any:
        parent, last = parent_of(parts)
        try:
            return parent.pop(int(last)) if isinstance(parent, list) else parent.pop(last)
        except (KeyError, IndexError, ValueError):
            raise _bad_request(f"json patch remove: /{'/'.join(parts)} does not exist") from None

    def add(parts: list[str], value: Any) -> None:
        nonlocal doc
        if not parts:
            doc = value
            return
        parent, last = parent_of(parts)
        if isinstance(parent, list):
            if last == "-":
                parent.append(value)
            else:
                parent.insert(int(last), value)
        elif isinstance(parent, dict):
            parent[last] = value
        else:
            raise _bad_request("json patch add: parent is not a container")

    for op in ops:
        if not isinstance(op, dict):
            raise _bad_request("json patch operation must be an object")
        kind = op.get("op")
        parts = _pointer(str(op.get("path", "")))
        if kind == "add":
            add(parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            remove(parts)
        elif kind == "replace":
            get(parts)
            if parts:
                remove(parts)
            add(parts, copy.deepcopy(op.get("value")))
        elif kind == "move":
            value = remove(_pointer(str(op.get("from", ""))))
            add(parts, value)
        elif kind == "copy":
            add(parts, copy.deepcopy(get(_pointer(str(op.get("from", ""))))))
        elif kind == "test":
            if get(parts) != op.get("value"):
                raise ApiError(422, "Invalid", "json patch test operation failed")
        else:
            raise _bad_request(f"unknown json patch operation {kind!r}")
    return doc


# --------------------------------------------------------------------------- selectors


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # = != in notin exists !exists > <
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op in (">", "<"):
            try:
                have, want = int(str(value)), int(self.values[0])
            except (TypeError, ValueError):
                return False
            return have > want if self.op == ">" else have < want
        return False


def _split_selector(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    cur = ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


_SET_RE = re.compile(r"^(?P<key>[^\s!=<>()]+)\s+(?P<op>in|notin)\s*\((?P<vals>[^)]*)\)$")
_CMP_RE = re.compile(r"^(?P<key>[^\s!=<>()]+)\s*(?P<op>==|=|!=|>|<)\s*(?P<val>[^\s,()]*)$")


def parse_label_selector(text: str) -> list[_Requirement]:
    reqs: list[_Requirement] = []
    for part in _split_selector(text):
        m = _SET_RE.match(part)
        if m:
            vals = tuple(v.strip() for v in m["vals"].split(",") if v.strip())
            reqs.append(_Requirement(m["key"], m["op"], vals))
            continue
        m = _CMP_RE.match(part)
        if m:
            op = "=" if m["op"] == "==" else m["op"]
            reqs.append(_Requirement(m["key"], op, (m["val"],)))
            continue
        if part.startswith("!") and re.fullmatch(r"![^\s!=<>()]+", part):
            reqs.append(_Requirement(part[1:], "!exists"))
            continue
        if re.fullmatch(r"[^\s!=<>()]+", part):
            reqs.append(_Requirement(part, "exists"))
            continue
        raise _bad_request(f"unable to parse requirement: {part!r}")
    return reqs


def parse_field_selector(text: str) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for part in _split_selector(text):
        m = re.fullmatch(r"([^!=]+?)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise _bad_request(f"invalid field selector: {part!r}")
        out.append((m[1], "!=" if m[2] == "!=" else "=", m[3]))
    return out


def _field_value(obj: Obj, path: str) -> str:
    value = _dig(obj, path)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------------- managed fields


@dataclass
class _Entry:
    manager: str
    operation: str
    subresource: str
    api_version: str
    time: str
    fields: set[Path]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.manager, self.operation, self.subresource)

    def describe(self) -> str:
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        return f"{text} using {self.api_version}"

    def to_json(self) -> Obj:
        out: Obj = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_to_v1(self.fields),
        }
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def _entries(obj: Obj) -> list[_Entry]:
    out = []
    for e in _meta(obj).get("managedFields") or []:
        if not isinstance(e, dict):
            continue
        out.append(
            _Entry(
                manager=str(e.get("manager", "")),
                operation=str(e.get("operation", "Update")),
                subresource=str(e.get("subresource", "")),
                api_version=str(e.get("apiVersion", "")),
                time=str(e.get("time", "")),
                fields=fields_from_v1(e.get("fieldsV1") or {}),
            )
        )
    return out


def _store_entries(obj: Obj, entries: list[_Entry]) -> None:
    # the real server's order: operation (Apply < Update), time, manager, subresource
    ordered = sorted((e for e in entries if e.fields),
                     key=lambda e: (e.operation, e.time, e.manager, e.subresource))
    kept = [e.to_json() for e in ordered]
    meta = _meta(obj)
    if kept:
        meta["managedFields"] = kept
    else:
        meta.pop("managedFields", None)


# --------------------------------------------------------------------------- protobuf

# kubectl 1.32's typed clients (``kubectl create namespace|configmap|secret|serviceaccount``)
# send protobuf bodies and do not fall back to JSON. These are the few messages they send, as
# field number -> (name, type[, message]) from k8s.io/api generated.proto.
_PB_TIME: dict[int, tuple[str, ...]] = {1: ("seconds", "int"), 2: ("nanos", "int")}
_PB_OWNER_REF: dict[int, tuple[str, ...]] = {
    1: ("kind", "string"), 3: ("name", "string"), 4: ("uid", "string"),
    5: ("apiVersion", "string"), 6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool")}
_PB_OBJECT_META: dict[int, tuple[str, ...]] = {
    1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"),
    5: ("uid", "string"), 6: ("resourceVersion", "string"), 7: ("generation", "int"),
    11: ("labels", "map"), 12: ("annotations", "map"),
    13: ("ownerReferences", "messages", "ownerref"), 14: ("finalizers", "strings")}
_PB_LOCAL_REF: dict[int, tuple[str, ...]] = {1: ("name", "string")}
_PB_MESSAGES: dict[str, dict[int, tuple[str, ...]]] = {
    "time": _PB_TIME, "ownerref": _PB_OWNER_REF, "meta": _PB_OBJECT_META,
    "localref": _PB_LOCAL_REF, "nsspec": {1: ("finalizers", "strings")},
    "Namespace": {1: ("metadata", "message", "meta"), 2: ("spec", "message", "nsspec")},
    "ConfigMap": {1: ("metadata", "message", "meta"), 2: ("data", "map"),
                  3: ("binaryData", "bytesmap"), 4: ("immutable", "bool")},
    "Secret": {1: ("metadata", "message", "meta"), 2: ("data", "bytesmap"),
               3: ("type", "string"), 4: ("stringData", "map"), 5: ("immutable", "bool")},
    "resattrs": {1: ("namespace", "string"), 2: ("verb", "string"), 3: ("group", "string"),
                 4: ("version", "string"), 5: ("resource", "string"),
                 6: ("subresource", "string"), 7: ("name", "string")},
    "nonresattrs": {1: ("path", "string"), 2: ("verb", "string")},
    "ssarspec": {1: ("resourceAttributes", "message", "resattrs"),
                 2: ("nonResourceAttributes", "message", "nonresattrs")},
    "SelfSubjectAccessReview": {1: ("metadata", "message", "meta"),
                                2: ("spec", "message", "ssarspec")},
    "ServiceAccount": {1: ("metadata", "message", "meta"),
                       3: ("imagePullSecrets", "messages", "localref"),
                       4: ("automountServiceAccountToken", "bool")},
}


def _pb_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise _bad_request("truncated protobuf body")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _pb_fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    pos = 0
    while pos < len(data):
        tag, pos = _pb_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _pb_varint(data, pos)
            yield number, value
        elif wire == 2:
            size, pos = _pb_varint(data, pos)
            yield number, data[pos:pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise _bad_request("unsupported protobuf wire type")


def _pb_decode(data: bytes, schema: dict[int, tuple[str, ...]]) -> Obj:
    out: Obj = {}
    for number, value in _pb_fields(data):
        spec = schema.get(number)
        if spec is None:
            continue
        name, kind = spec[0], spec[1]
        if kind == "string" and isinstance(value, bytes):
            if value:
                out[name] = value.decode()
        elif kind == "int" and isinstance(value, int):
            if value:
                out[name] = value
        elif kind == "bool" and isinstance(value, int):
            out[name] = bool(value)
        elif kind == "strings" and isinstance(value, bytes):
            out.setdefault(name, []).append(value.decode())
        elif kind in ("map", "bytesmap") and isinstance(value, bytes):
            entry = dict(_pb_fields(value))
            k, v = entry.get(1, b""), entry.get(2, b"")
            if isinstance(k, bytes) and isinstance(v, bytes):
                out.setdefault(name, {})[k.decode()] = (
                    v.decode() if kind == "map" else base64.b64encode(v).decode())
        elif kind == "message" and isinstance(value, bytes):
            sub = _pb_decode(value, _PB_MESSAGES[spec[2]])
            if sub:
                out[name] = sub
        elif kind == "messages" and isinstance(value, bytes):
            out.setdefault(name, []).append(_pb_decode(value, _PB_MESSAGES[spec[2]]))
    return out


def decode_protobuf(body: bytes) -> Obj:
    """Decode a ``application/vnd.kubernetes.protobuf`` body of the few supported kinds."""
    if not body.startswith(b"k8s\x00"):
        raise _bad_request("protobuf body without the k8s envelope")
    envelope = dict(_pb_fields(body[4:]))
    type_meta = envelope.get(1, b"")
    raw = envelope.get(2, b"")
    if not isinstance(type_meta, bytes) or not isinstance(raw, bytes):
        raise _bad_request("malformed protobuf envelope")
    tm = {n: v.decode() for n, v in _pb_fields(type_meta) if isinstance(v, bytes)}
    api_version, kind = tm.get(1, ""), tm.get(2, "")
    known = {"v1": ("Namespace", "ConfigMap", "Secret", "ServiceAccount"),
             "authorization.k8s.io/v1": ("SelfSubjectAccessReview",)}
    if kind not in known.get(api_version, ()):
        raise ApiError(
            415, "UnsupportedMediaType",
            f"the emulator cannot decode protobuf for {api_version}/{kind} (only v1 Namespace, "
            "ConfigMap, Secret, ServiceAccount): send JSON, e.g. 'kubectl create ... "
            "--dry-run=client -o yaml | kubectl apply -f -'")
    schema = _PB_MESSAGES[kind]
    return {"apiVersion": api_version, "kind": kind, **_pb_decode(raw, schema)}


# --------------------------------------------------------------------------- the server


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""


@dataclass
class Response:
    code: int
    body: Any
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, separators=(",", ":")).encode()


@dataclass
class _Watch:
    rt: ResourceType
    namespace: str | None
    since: int
    initial: list[Obj]
    labels: list[_Requirement]
    fields: list[tuple[str, str, str]]
    timeout: float
    table: str = ""  # includeObject of a Table watch, "" for plain objects


@dataclass
class _Event:
    rv: int
    type: str
    group: str
    plural: str
    namespace: str
    obj: Obj


_Key = tuple[str, str, str, str]  # group, plural, namespace, name


class KubeApiServer:
    """The emulator. ``start()`` binds 127.0.0.1:0 and serves in a background thread.

    Use as a context manager or call ``start()``/``stop()``. ``url`` is ``http://127.0.0.1:PORT``.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        tls: bool | None = None,
        user: str = "test-user",
        auto_rollout: bool = False,
        extra_namespaces: Iterable[str] = (),
    ) -> None:
        self.token = token
        # kubectl (client-go's clientcmd) reads credentials from a kubeconfig only for https
        # servers, so a token needs TLS; default: TLS exactly when there is a token.
        self.tls = (token is not None) if tls is None else tls
        self.ca_pem: bytes = b""  # the self-signed serving certificate (TLS only)
        self.errors: list[str] = []  # tracebacks of emulator bugs (answered as 500)
        self.user = user
        self.auto_rollout = auto_rollout
        self.denied: set[tuple[str, str, str | None]] = set()
        self.requests: list[tuple[str, str]] = []  # (method, path?query) of every request
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._rv = 100
        self._objects: dict[_Key, Obj] = {}
        self._types: dict[tuple[str, str], dict[str, ResourceType]] = {}
        self._events: list[_Event] = []
        self._ip_counter = 10
        self._stopping = False
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        for rt in BUILTIN_TYPES:
            self._types.setdefault((rt.group, rt.version), {})[rt.plural] = rt
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease", *extra_namespaces):
            self.create_namespace(ns)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> KubeApiServer:
        if self._httpd is not None:
            return self
        self._stopping = False
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.emulator = self
        if self.tls:
            cert, key = _self_signed_cert()
            self.ca_pem = cert
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.set_alpn_protocols(["http/1.1"])
            with tempfile.TemporaryDirectory() as tmp:
                (_FsPath(tmp) / "tls.crt").write_bytes(cert)
                (_FsPath(tmp) / "tls.key").write_bytes(key)
                ctx.load_cert_chain(_FsPath(tmp) / "tls.crt", _FsPath(tmp) / "tls.key")
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True,
                                           do_handshake_on_connect=False)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"kube-apiserver-emulator:{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        httpd.shutdown()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()  # joins the request threads (block_on_close)
        if thread is not None:
            thread.join(10)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def kubeconfig(self, *, context: str = "emulator", namespace: str = "default",
                   token: str | None = None) -> str:
        """A kubeconfig (YAML text) for this server."""
        user: Obj = {}
        cluster: Obj = {"server": self.url}
        if self.tls:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem).decode()
        tok = token if token is not None else self.token
        if tok:
            user["token"] = tok
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": cluster}],
            "users": [{"name": context, "user": user}],
            "contexts": [{"name": context, "context": {
                "cluster": context, "user": context, "namespace": namespace}}],
            "current-context": context,
        }
        return yaml.safe_dump(cfg, sort_keys=False)

    # ------------------------------------------------------------------ test-facing API

    def deny(self, verb: str, resource: str, namespace: str | None = None) -> None:
        """Answer 403 for ``verb`` (``*`` = any) on ``resource`` (plural, ``plural/sub`` or
        ``*``) in ``namespace`` (None = any namespace, ``""`` = cluster scope)."""
        self.denied.add((verb, resource, namespace))

    def resource_type(self, what: str, group: str | None = None) -> ResourceType:
        """Find a served type by kind, plural, short name or ``plural.group``/``Kind.group``."""
        name, _, grp = what.partition(".")
        if group is not None:
            grp = group
        with self._lock:
            for types in self._types.values():
                for rt in types.values():
                    if grp and rt.group != grp:
                        continue
                    if name.lower() in (rt.kind.lower(), rt.plural, rt.singular_name,
                                        *rt.short_names):
                        return rt
        raise KeyError(what)

    def get_object(self, what: str, name: str, namespace: str | None = None) -> Obj | None:
        rt = self.resource_type(what)
        with self._lock:
            obj = self._objects.get(self._key(rt, namespace or "default", name))
            return copy.deepcopy(obj) if obj is not None else None

    def list_objects(self, what: str, namespace: str | None = None) -> list[Obj]:
        rt = self.resource_type(what)
        with self._lock:
            return [copy.deepcopy(o) for k, o in sorted(self._objects.items())
                    if k[:2] == (rt.group, rt.plural)
                    and (namespace is None or k[2] == namespace)]

    def create_namespace(self, name: str) -> Obj:
        rt = self.resource_type("namespaces")
        with self._lock:
            existing = self._objects.get(self._key(rt, None, name))
            if existing is not None:
                return copy.deepcopy(existing)
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            return self._create(rt, None, body, "kube-apiserver", dry_run=False)

    def set_status(self, what: str, name: str, namespace: str | None, status: Obj,
                   manager: str = "kube-controller-manager") -> Obj:
        """Merge ``status`` into the object's status as a controller would (status subresource
        Update by ``manager``)."""
        rt = self.resource_type(what)
        with self._lock:
            live = self._get_live(rt, namespace, name)
            new = copy.deepcopy(live)
            new["status"] = merge_patch(live.get("status") or {}, status)
            return self._update(rt, live, new, manager, "status", dry_run=False)

    def mark_rolled_out(self, what: str, name: str, namespace: str | None = None) -> Obj:
        """Act as the workload controller: the current generation is fully rolled out."""
        rt = self.resource_type(what)
        with self._lock:
            live = self._get_live(rt, namespace, name)
            return self.set_status(rt.plural + "." + rt.group, name, namespace,
                                   _rolled_out_status(live))

    def mark_rollout_failed(self, what: str, name: str, namespace: str | None = None,
                            message: str = "") -> Obj:
        """Deployment: Progressing=False/ProgressDeadlineExceeded. StatefulSet/DaemonSet:
        observed but nothing updated or ready (they have no failure condition)."""
        rt = self.resource_type(what)
        with self._lock:
            live = self._get_live(rt, namespace, name)
            gen = _meta(live).get("generation", 1)
            replicas = _replicas(live)
            now = _now()
            if rt.kind == "Deployment":
                status: Obj = {
                    "observedGeneration": gen,
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": 0,
                    "availableReplicas": 0,
                    "unavailableReplicas": replicas,
                    "conditions": [
                        _condition("Available", "False", "MinimumReplicasUnavailable",
                                   "Deployment does not have minimum availability.", now),
                        _condition("Progressing", "False", "ProgressDeadlineExceeded",
                                   message or f'ReplicaSet "{name}-emulated" has timed out '
                                   "progressing.", now),
                    ],
                }
            elif rt.kind == "DaemonSet":
                status = {"observedGeneration": gen, "desiredNumberScheduled": 1,
                          "currentNumberScheduled": 1, "updatedNumberScheduled": 0,
                          "numberReady": 0, "numberAvailable": 0, "numberUnavailable": 1,
                          "numberMisscheduled": 0}
            else:
                status = {"observedGeneration": gen, "replicas": replicas,
                          "updatedReplicas": 0, "readyReplicas": 0, "availableReplicas": 0,
                          "currentRevision": "emulated-old", "updateRevision": "emulated-new"}
            return self.set_status(rt.plural + "." + rt.group, name, namespace, status)

    def mark_job_complete(self, name: str, namespace: str | None = None) -> Obj:
        with self._lock:
            live = self._get_live(self.resource_type("jobs.batch"), namespace, name)
            return self.set_status("jobs.batch", name, namespace, _job_status(live, True))

    def mark_job_failed(self, name: str, namespace: str | None = None,
                        reason: str = "BackoffLimitExceeded") -> Obj:
        with self._lock:
            live = self._get_live(self.resource_type("jobs.batch"), namespace, name)
            return self.set_status("jobs.batch", name, namespace,
                                   _job_status(live, False, reason))

    # ------------------------------------------------------------------ request handling

    def handle(self, req: Request) -> Response | _Watch:
        """Answer one request (the HTTP layer calls this; tests may call it directly)."""
        with self._lock:
            self.requests.append((req.method, req.path + (
                "?" + "&".join(f"{k}={v}" for k, v in req.query.items()) if req.query else "")))
        try:
            self._authenticate(req)
            return self._route(req)
        except ApiError as err:
            return Response(err.code, err.status())

    def _authenticate(self, req: Request) -> None:
        if self.token is None or req.path in ("/healthz", "/livez", "/readyz"):
            return
        if req.headers.get("authorization", "") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def _route(self, req: Request) -> Response | _Watch:
        path = req.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p] or [""]
        if path in ("/healthz", "/livez", "/readyz"):
            return Response(200, b"ok", "text/plain")
        if path == "/version":
            return Response(200, KUBE_VERSION)
        if path.startswith("/openapi"):
            return self._openapi(parts, req)
        if path == "/api":
            return Response(200, {"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": [{
                                      "clientCIDR": "0.0.0.0/0",
                                      "serverAddress": f"127.0.0.1:{self._port_or_zero()}"}]})
        if path == "/apis":
            with self._lock:
                return Response(200, {"kind": "APIGroupList", "apiVersion": "v1",
                                      "groups": self._groups()})
        if parts[0] == "apis" and len(parts) == 2:
            with self._lock:
                for g in self._groups():
                    if g["name"] == parts[1]:
                        return Response(200, {"kind": "APIGroup", "apiVersion": "v1", **g})
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        with self._lock:
            types = dict(self._types.get((group, version)) or {})
        if not types:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            if req.method != "GET":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
            gv = f"{group}/{version}" if group else version
            resources = [e for rt in sorted(types.values(), key=lambda r: r.plural)
                         for e in rt.discovery()]
            return Response(200, {"kind": "APIResourceList", "apiVersion": "v1",
                                  "groupVersion": gv, "resources": resources})
        namespace: str | None = None
        if (rest[0] == "namespaces" and len(rest) >= 3
                and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize"))):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = types.get(rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if rt is None or (rt.namespaced and namespace is None and name is not None) or (
                not rt.namespaced and namespace is not None):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub and not ((sub == "status" and rt.status) or (sub == "scale" and rt.scale)):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return self._resource(req, rt, namespace, name, sub)

    def _port_or_zero(self) -> int:
        return self.port if self._httpd is not None else 0

    def _groups(self) -> list[Obj]:
        by_group: dict[str, list[str]] = {}
        for (group, version) in self._types:
            if group:
                by_group.setdefault(group, []).append(version)
        out = []
        for group, versions in by_group.items():
            ordered = sorted(versions, key=_version_priority)
            vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in ordered]
            out.append({"name": group, "versions": vs, "preferredVersion": vs[0]})
        return out

    # ------------------------------------------------------------------ openapi

    def _openapi(self, parts: list[str], req: Request) -> Response:
        if parts == ["openapi", "v2"]:
            # An empty protobuf message is a valid (empty) openapi_v2.Document: kubectl only
            # falls back to it for client-side validation, which the v3 document makes moot.
            return Response(200, b"",
                            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
        if parts == ["openapi", "v3"]:
            with self._lock:
                gvs = sorted(self._types)
                index = {}
                for group, version in gvs:
                    key = f"apis/{group}/{version}" if group else f"api/{version}"
                    doc = self._openapi_gv(group, version)
                    digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()
                    index[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest.upper()}"}
            return Response(200, {"paths": index})
        if len(parts) >= 4 and parts[:2] == ["openapi", "v3"]:
            rest = parts[2:]
            if rest[0] == "api" and len(rest) == 2:
                group, version = "", rest[1]
            elif rest[0] == "apis" and len(rest) == 3:
                group, version = rest[1], rest[2]
            else:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            with self._lock:
                if (group, version) not in self._types:
                    raise ApiError(404, "NotFound",
                                   "the server could not find the requested resource")
                doc = self._openapi_gv(group, version)
            headers = {"Cache-Control": "public, immutable"} if "hash" in req.query else {}
            return Response(200, doc, headers=headers)
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _openapi_gv(self, group: str, version: str) -> Obj:
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        params = [{"name": n, "in": "query", "schema": {"type": t, "uniqueItems": True}}
                  for n, t in (("dryRun", "string"), ("fieldManager", "string"),
                               ("fieldValidation", "string"), ("force", "boolean"))]
        paths: Obj = {}
        for rt in sorted(self._types[(group, version)].values(), key=lambda r: r.plural):
            gvk = {"group": group, "version": version, "kind": rt.kind}
            if rt.namespaced:
                p = f"{base}/namespaces/{{namespace}}/{rt.plural}/{{name}}"
            else:
                p = f"{base}/{rt.plural}/{{name}}"
            paths[p] = {"patch": {
                "operationId": f"patch{rt.kind}",
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
            }}
        return {"openapi": "3.0.0",
                "info": {"title": "Kubernetes (emulator)", "version": "v1.32.0"},
                "paths": paths, "components": {"schemas": {}}}

    # ------------------------------------------------------------------ resources

    def _resource(self, req: Request, rt: ResourceType, namespace: str | None,
                  name: str | None, sub: str) -> Response | _Watch:
        q = req.query
        method = req.method
        dry_run = q.get("dryRun") == "All"
        if name is None:
            if method == "GET":
                verb = "watch" if q.get("watch") in ("true", "1") else "list"
                self._authorize(verb, rt, namespace, None, "")
                if verb == "watch":
                    return self._watch(rt, namespace, q, req.headers.get("accept", ""))
                return self._list(rt, namespace, q, req.headers.get("accept", ""))
            if method == "POST":
                if rt.namespaced and namespace is None:
                    raise ApiError(404, "NotFound",
                                   "the server could not find the requested resource")
                self._authorize("create", rt, namespace, None, "")
                body = self._body(req)
                if rt.kind == "SelfSubjectAccessReview":
                    return self._access_review(body)
                with self._lock:
                    created = self._create(rt, namespace, body, self._manager(req), dry_run)
                return Response(201, created)
            if method == "DELETE":
                self._authorize("deletecollection", rt, namespace, None, "")
                return self._delete_collection(rt, namespace, q, dry_run)
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        verb = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "")
        if not verb or (sub and verb == "delete"):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        self._authorize(verb, rt, namespace, name, sub)
        if verb == "get":
            with self._lock:
                live = self._get_live(rt, namespace, name)
                if sub == "scale":
                    return Response(200, _scale_of(rt, live))
                return Response(200, copy.deepcopy(live))
        if verb == "delete":
            return self._delete(rt, namespace, name, self._body_or_empty(req), dry_run)
        manager = self._manager(req)
        if verb == "update":
            body = self._body(req)
            with self._lock:
                live = self._get_live(rt, namespace, name)
                if sub == "scale":
                    new = _apply_scale(rt, live, body)
                    return Response(200, _scale_of(rt, self._update(
                        rt, live, new, manager, sub, dry_run)))
                new = self._prepare_put(rt, live, body, name, namespace, sub)
                return Response(200, self._update(rt, live, new, manager, sub, dry_run))
        ctype = req.headers.get("content-type", "").split(";")[0].strip()
        if ctype == "application/apply-patch+yaml":
            if sub == "scale":
                raise ApiError(415, "UnsupportedMediaType",
                               "apply is not supported for the scale subresource here")
            if "fieldManager" not in q:
                raise ApiError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: '
                               "fieldManager: Required value: is required for apply patch")
            applied = self._body(req, yaml_ok=True)
            force = q.get("force") in ("true", "1")
            with self._lock:
                was_created, result = self._apply(rt, namespace, name, sub, applied,
                                              q["fieldManager"], force, dry_run)
            return Response(201 if was_created else 200, result)
        patch = self._json_body(req)
        with self._lock:
            live = self._get_live(rt, namespace, name)
            base = _scale_of(rt, live) if sub == "scale" else copy.deepcopy(live)
            if ctype == "application/merge-patch+json":
                patched = merge_patch(base, patch)
            elif ctype == "application/json-patch+json":
                patched = json_patch(base, patch)
            elif ctype == "application/strategic-merge-patch+json":
                if rt.custom:
                    raise ApiError(415, "UnsupportedMediaType",
                                   "the body of the request was in an unknown format - accepted "
                                   "media types include: application/json-patch+json, "
                                   "application/merge-patch+json, application/apply-patch+yaml")
                patched = strategic_merge_patch(base, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType",
                               f"the body of the request was in an unknown format - {ctype!r}")
            if not isinstance(patched, dict):
                raise _bad_request("patch result is not an object")
            if sub == "scale":
                new = _apply_scale(rt, live, patched)
                return Response(200, _scale_of(rt, self._update(
                    rt, live, new, manager, sub, dry_run)))
            new = self._prepare_put(rt, live, patched, name, namespace, sub)
            return Response(200, self._update(rt, live, new, manager, sub, dry_run))

    def _is_denied(self, verb: str, group: str, plural: str, sub: str,
                   namespace: str) -> bool:
        resource = f"{plural}/{sub}" if sub else plural
        group_resource = f"{plural}.{group}" if group else plural
        for d_verb, d_res, d_ns in self.denied:
            if d_verb not in ("*", verb) or d_res not in ("*", resource, group_resource):
                continue
            if d_ns is None or d_ns == namespace:
                return True
        return False

    def _access_review(self, body: Obj) -> Response:
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        denied = self._is_denied(str(attrs.get("verb", "")), str(attrs.get("group", "")),
                                 str(attrs.get("resource", "")),
                                 str(attrs.get("subresource", "")),
                                 str(attrs.get("namespace", "")))
        status: Obj = {"allowed": not denied}
        if denied:
            status["denied"] = True
            status["reason"] = "denied by the emulator's deny() list"
        out = {**body, "metadata": {"creationTimestamp": None}, "status": status}
        return Response(201, out)

    def _authorize(self, verb: str, rt: ResourceType, namespace: str | None,
                   name: str | None, sub: str) -> None:
        resource = f"{rt.plural}/{sub}" if sub else rt.plural
        ns_key = (namespace or "") if rt.namespaced else ""
        if self._is_denied(verb, rt.group, rt.plural, sub, ns_key):
            what = f'{rt.group_resource} "{name}"' if name else rt.group_resource
            where = (f'in the namespace "{namespace}"' if rt.namespaced and namespace
                     else "at the cluster scope")
            raise ApiError(
                403, "Forbidden",
                f'{what} is forbidden: User "{self.user}" cannot {verb} resource "{resource}" '
                f'in API group "{rt.group}" {where}',
                _details(rt, name),
            )

    @staticmethod
    def _manager(req: Request) -> str:
        manager = req.query.get("fieldManager")
        if manager:
            return manager
        agent = req.headers.get("user-agent", "")
        return agent.split("/", 1)[0] or "unknown"

    @staticmethod
    def _json_body(req: Request) -> Any:
        try:
            return json.loads(req.body or b"null")
        except ValueError as err:
            raise _bad_request(f"invalid JSON body: {err}") from None

    def _body(self, req: Request, *, yaml_ok: bool = False) -> Obj:
        if req.headers.get("content-type", "").startswith("application/vnd.kubernetes.protobuf"):
            return decode_protobuf(req.body)
        try:
            body = json.loads(req.body)
        except ValueError:
            if not yaml_ok:
                raise _bad_request("invalid JSON body") from None
            try:
                body = yaml.safe_load(req.body)
            except yaml.YAMLError as err:
                raise _bad_request(f"invalid YAML body: {err}") from None
        if not isinstance(body, dict):
            raise _bad_request("the request body must be an object")
        return body

    def _body_or_empty(self, req: Request) -> Obj:
        if not req.body.strip():
            return {}
        return self._body(req)

    # ------------------------------------------------------------------ store primitives

    @staticmethod
    def _key(rt: ResourceType, namespace: str | None, name: str) -> _Key:
        return (rt.group, rt.plural, (namespace or "") if rt.namespaced else "", name)

    def _get_live(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self._objects.get(self._key(rt, namespace, name))
        if obj is None:
            raise _not_found(rt, name)
        return obj

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _ensure_namespace(self, rt: ResourceType, namespace: str | None) -> None:
        if not rt.namespaced:
            return
        if not namespace:
            raise _bad_request("a namespace is required")
        ns_type = self._types[("", "v1")]["namespaces"]
        if self._key(ns_type, None, namespace) not in self._objects:
            raise _ns_not_found(namespace)

    def _emit(self, kind: str, rt: ResourceType, obj: Obj) -> None:
        meta = _meta(obj)
        self._events.append(_Event(int(meta.get("resourceVersion") or self._rv), kind, rt.group,
                                   rt.plural, meta.get("namespace", ""), copy.deepcopy(obj)))
        if len(self._events) > 10000:
            del self._events[:1000]
        self._cond.notify_all()

    def _view(self, rt: ResourceType, obj: Obj) -> Obj:
        """The stored object as seen through ``rt`` (its apiVersion)."""
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.api_version
        out["kind"] = rt.kind
        return out

    def _check_identity(self, rt: ResourceType, body: Obj, name: str | None,
                        namespace: str | None, *, apply: bool = False) -> None:
        if not apply:  # typed endpoints default the type from the URL
            body.setdefault("apiVersion", rt.api_version)
            body.setdefault("kind", rt.kind)
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if not kind or not api_version:
            raise _invalid(rt, str(_meta(body).get("name", "")), [
                ("kind" if not kind else "apiVersion", "FieldValueRequired", "Required value")])
        if kind != rt.kind or api_version.split("/")[0] != (rt.group or api_version):
            raise _bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version})" if kind == rt.kind else
                f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        meta = _meta(body)
        if name is not None and meta.get("name") not in (None, name):
            raise _bad_request(f"the name of the object ({meta.get('name')}) does not match "
                               f"the name on the URL ({name})")
        if rt.namespaced and namespace and meta.get("namespace") not in (None, "", namespace):
            raise _bad_request("the namespace of the provided object does not match the "
                               "namespace sent on the request")

    # ------------------------------------------------------------------ writes

    def _create(self, rt: ResourceType, namespace: str | None, body: Obj, manager: str,
                dry_run: bool) -> Obj:
        body = _drop_nulls(copy.deepcopy(body))
        self._check_identity(rt, body, None, namespace)
        meta = _meta(body)
        if not meta.get("name"):
            if meta.get("generateName"):
                suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits)
                                 for _ in range(5))
                meta["name"] = f"{meta['generateName']}{suffix}"
            else:
                raise _invalid(rt, "", [("metadata.name", "FieldValueRequired",
                                         "Required value: name or generateName is required")])
        name = str(meta["name"])
        self._ensure_namespace(rt, namespace)
        if self._key(rt, namespace, name) in self._objects:
            raise ApiError(409, "AlreadyExists", f'{rt.group_resource} "{name}" already exists',
                           _details(rt, name))
        obj = copy.deepcopy(body)
        if rt.status:
            obj.pop("status", None)
        for k in ("managedFields", "resourceVersion", "uid", "creationTimestamp",
                  "deletionTimestamp", "generation", "selfLink"):
            _meta(obj).pop(k, None)
        _default(rt, obj, self)
        entry = _Entry(manager, "Update", "", rt.api_version, _now(),
                       set(flatten_fields(obj, "main" if rt.status else "all")))
        _store_entries(obj, [entry])
        return self._commit(rt, None, obj, dry_run, namespace=namespace)

    def _prepare_put(self, rt: ResourceType, live: Obj, body: Obj, name: str,
                     namespace: str | None, sub: str) -> Obj:
        body = _drop_nulls(copy.deepcopy(body))
        self._check_identity(rt, body, name, namespace)
        meta = _meta(body)
        rv = meta.get("resourceVersion")
        live_meta = _meta(live)
        if rv and rv != live_meta.get("resourceVersion"):
            raise ApiError(
                409, "Conflict",
                f'Operation cannot be fulfilled on {rt.group_resource} "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                _details(rt, name))
        if sub == "status":
            new = copy.deepcopy(live)
            if "status" in body:
                new["status"] = body["status"]
            else:
                new.pop("status", None)
            return new
        new = body
        nmeta = _meta(new)
        nmeta["name"] = name
        if rt.namespaced:
            nmeta["namespace"] = namespace
        for k in ("uid", "creationTimestamp", "generation", "resourceVersion",
                  "deletionTimestamp", "deletionGracePeriodSeconds"):
            if k in live_meta:
                nmeta[k] = live_meta[k]
            else:
                nmeta.pop(k, None)
        if "managedFields" not in nmeta and "managedFields" in live_meta:
            nmeta["managedFields"] = copy.deepcopy(live_meta["managedFields"])
        if rt.status:
            if "status" in live:
                new["status"] = copy.deepcopy(live["status"])
            else:
                new.pop("status", None)
        return new

    def _update(self, rt: ResourceType, live: Obj, new: Obj, manager: str, sub: str,
                dry_run: bool) -> Obj:
        """A non-apply write: ``manager`` takes over every field it changed or added."""
        if not sub or sub == "scale":
            _default(rt, new, self)
        scope = "status" if sub == "status" else ("main" if rt.status else "all")
        old_flat = flatten_fields(live, scope)
        new_flat = flatten_fields(new, scope)
        added = set(new_flat) - set(old_flat)
        removed = set(old_flat) - set(new_flat)
        modified = {p for p in set(new_flat) & set(old_flat) if new_flat[p] != old_flat[p]}
        entries = _entries(new)
        key = (manager, "Update", "" if sub == "" else sub)
        taken = modified | added
        for e in entries:
            if e.key != key:
                e.fields -= modified | removed
        mine = next((e for e in entries if e.key == key), None)
        if taken:
            if mine is None:
                mine = _Entry(manager, "Update", sub, rt.api_version, _now(), set())
                entries.append(mine)
            mine.fields = (mine.fields | taken) - removed
            mine.time = _now()
            mine.api_version = rt.api_version
        elif mine is not None:
            mine.fields -= removed
        _store_entries(new, entries)
        return self._commit(rt, live, new, dry_run)

    def _apply(self, rt: ResourceType, namespace: str | None, name: str, sub: str,
               applied: Obj, manager: str, force: bool, dry_run: bool) -> tuple[bool, Obj]:
        applied = _drop_nulls(copy.deepcopy(applied))
        self._check_identity(rt, applied, name, namespace, apply=True)
        ameta = _meta(applied)
        if ameta.get("managedFields"):
            raise _bad_request("metadata.managedFields must be nil")
        key = self._key(rt, namespace, name)
        live = self._objects.get(key)
        rv = ameta.get("resourceVersion")
        if live is not None and rv and rv != _meta(live).get("resourceVersion"):
            raise ApiError(
                409, "Conflict",
                f'Operation cannot be fulfilled on {rt.group_resource} "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                _details(rt, name))
        for k in ("uid", "resourceVersion", "creationTimestamp", "generation", "selfLink",
                  "managedFields", "deletionTimestamp"):
            ameta.pop(k, None)
        ameta["name"] = name
        if rt.namespaced:
            ameta["namespace"] = namespace
        creating = live is None
        if live is None:
            if sub:
                raise _not_found(rt, name)
            self._authorize("create", rt, namespace, name, "")
            self._ensure_namespace(rt, namespace)
            base: Obj = {"apiVersion": rt.api_version, "kind": rt.kind,
                         "metadata": {"name": name, **({"namespace": namespace}
                                                       if rt.namespaced else {})}}
        else:
            base = copy.deepcopy(live)
        if sub == "status":
            scope = "status"
            applied = {**{k: applied[k] for k in ("apiVersion", "kind")},
                       "metadata": {"name": name}, "status": applied.get("status") or {}}
        else:
            scope = "main" if rt.status else "all"
            if rt.status:
                applied.pop("status", None)
        new_set = set(flatten_fields(applied, scope))
        entries = _entries(base)
        me_key = (manager, "Apply", sub)
        me = next((e for e in entries if e.key == me_key), None)
        old_set = set(me.fields) if me else set()
        others = [e for e in entries if e.key != me_key]
        other_paths: set[Path] = set().union(*(e.fields for e in others)) if others else set()

        work = copy.deepcopy(base)
        removed: list[Path] = []
        for path in sorted(old_set - new_set, key=lambda p: (len(p), p)):
            if any(path[:len(r)] == r for r in removed):
                continue  # went with an item removed before
            if path in other_paths or any(p[:len(path)] == path for p in other_paths):
                continue  # another manager still owns it (or something inside it)
            removed.append(path)
            if remove_path(work, path):
                _prune_empty(work, path, other_paths | new_set)
        work = merge_applied(work, applied)
        _meta(work).pop("managedFields", None)
        if rt.status and not sub:
            if "status" in base:
                work["status"] = copy.deepcopy(base["status"])
            else:
                work.pop("status", None)
        if not sub:
            _default(rt, work, self)

        conflicts: list[tuple[_Entry, Path]] = []
        for path in sorted(new_set):
            after = get_path(work, path)
            if after is _MEMBER:
                continue
            before = get_path(base, path)
            if before == after:
                continue
            for e in others:
                if path in e.fields:
                    conflicts.append((e, path))
        if conflicts and not force:
            raise _conflict_error(conflicts)
        for e, path in conflicts:
            e.fields.discard(path)

        changed = me is None or me.fields != new_set or bool(conflicts)
        if me is None:
            me = _Entry(manager, "Apply", sub, str(applied.get("apiVersion")), _now(), new_set)
            entries.append(me)
        me.fields = new_set
        me.api_version = str(applied.get("apiVersion"))
        if sub == "status":
            work = {**copy.deepcopy(base), "status": work.get("status", {})}
        work_body = {k: v for k, v in work.items() if k != "metadata"}
        base_body = {k: v for k, v in base.items() if k != "metadata"}
        meta_changed = ({k: v for k, v in _meta(work).items() if k != "managedFields"}
                        != {k: v for k, v in _meta(base).items() if k != "managedFields"})
        if live is not None and not changed and not meta_changed and work_body == base_body:
            return False, self._view(rt, live)  # no-op: nothing at all changes
        me.time = _now()
        _store_entries(work, entries)
        if creating:
            _meta(work).pop("resourceVersion", None)
            return True, self._commit(rt, None, work, dry_run, namespace=namespace)
        return False, self._commit(rt, live, work, dry_run)

    def _commit(self, rt: ResourceType, live: Obj | None, new: Obj, dry_run: bool,
                namespace: str | None = None) -> Obj:
        """Store ``new`` (replacing ``live``), with the server-owned metadata and side effects."""
        new["apiVersion"] = rt.api_version
        new["kind"] = rt.kind
        meta = _meta(new)
        if rt.kind == "CustomResourceDefinition":
            self._validate_crd(new)
        if live is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            if rt.namespaced:
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            if rt.generation:
                meta["generation"] = 1
            if dry_run:
                return self._view(rt, new)
            meta["resourceVersion"] = self._next_rv()
            self._objects[self._key(rt, namespace, meta["name"])] = new
            self._emit("ADDED", rt, new)
            result = self._view(rt, new)
            self._after_write(rt, new)
            return result
        if new == live:
            return self._view(rt, live)
        lmeta = _meta(live)
        if rt.generation:
            def spec_part(o: Obj) -> Obj:
                return {k: v for k, v in o.items()
                        if k not in ("metadata", "apiVersion", "kind")
                        and not (k == "status" and rt.status)}
            gen = int(lmeta.get("generation") or 1)
            if spec_part(new) != spec_part(live):
                gen += 1
            meta["generation"] = gen
        if dry_run:
            return self._view(rt, new)
        meta["resourceVersion"] = self._next_rv()
        key = self._key(rt, lmeta.get("namespace"), lmeta["name"])
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self._objects[key]
            self._emit("DELETED", rt, new)
            self._after_delete(rt, new)
            return self._view(rt, new)
        self._objects[key] = new
        self._emit("MODIFIED", rt, new)
        result = self._view(rt, new)
        self._after_write(rt, new)
        return result

    def _after_write(self, rt: ResourceType, obj: Obj) -> None:
        meta = _meta(obj)
        if rt.kind == "CustomResourceDefinition" and rt.group == _CRD_GROUP:
            self._register_crd(obj)
            return
        if not self.auto_rollout or meta.get("deletionTimestamp"):
            return
        ns, name = meta.get("namespace"), meta["name"]
        status = obj.get("status") or {}
        if rt.kind in _WORKLOAD_KINDS and rt.group == "apps":
            want = _rolled_out_status(obj)
            if {k: status.get(k) for k in want} != want:
                self.set_status(f"{rt.plural}.apps", name, ns, want)
        elif rt.kind == "Job" and rt.group == "batch" and not any(
                c.get("type") in ("Complete", "Failed") for c in status.get("conditions") or []):
            self.set_status("jobs.batch", name, ns, _job_status(obj, True))

    # ------------------------------------------------------------------ CRDs

    def _validate_crd(self, crd: Obj) -> None:
        rt = self._types[(_CRD_GROUP, "v1")]["customresourcedefinitions"]
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        name = _meta(crd).get("name", "")
        causes: list[tuple[str, str, str]] = []
        for f in ("plural", "kind"):
            if not names.get(f):
                causes.append((f"spec.names.{f}", "FieldValueRequired", "Required value"))
        if not spec.get("group"):
            causes.append(("spec.group", "FieldValueRequired", "Required value"))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            causes.append(("spec.scope", "FieldValueNotSupported",
                           f'Unsupported value: "{spec.get("scope", "")}": supported values: '
                           '"Cluster", "Namespaced"'))
        versions = spec.get("versions") or []
        if not versions:
            causes.append(("spec.versions", "FieldValueInvalid",
                           "Invalid value: null: must have exactly one version marked as "
                           "storage version"))
        elif sum(1 for v in versions if v.get("storage")) != 1:
            causes.append(("spec.versions", "FieldValueInvalid",
                           "Invalid value: ...: must have exactly one version marked as "
                           "storage version"))
        if names.get("plural") and spec.get("group") and (
                name != f"{names['plural']}.{spec['group']}"):
            causes.append(("metadata.name", "FieldValueInvalid",
                           f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'))
        if causes:
            raise _invalid(rt, name, causes)

    def _register_crd(self, crd: Obj) -> None:
        spec = crd["spec"]
        names = spec["names"]
        group = spec["group"]
        self._unregister_crd(group, names["plural"])
        storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
        for v in spec["versions"]:
            if not v.get("served", True):
                continue
            subs = v.get("subresources") or {}
            scale = subs.get("scale") or {}
            rt = ResourceType(
                group, v["name"], names["kind"], names["plural"],
                spec["scope"] == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status="status" in subs, scale="scale" in subs, generation=True,
                singular=names.get("singular") or names["kind"].lower(), custom=True,
                spec_replicas_path=scale.get("specReplicasPath", ".spec.replicas"),
                status_replicas_path=scale.get("statusReplicasPath", ".status.replicas"),
                label_selector_path=scale.get("labelSelectorPath", ""),
            )
            self._types.setdefault((group, v["name"]), {})[names["plural"]] = rt
        status = crd.get("status") or {}
        conds = status.get("conditions") or []
        if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conds):
            now = _now()
            accepted = {"plural": names["plural"], "kind": names["kind"],
                        "singular": names.get("singular") or names["kind"].lower(),
                        "listKind": names.get("listKind") or names["kind"] + "List"}
            for f in ("shortNames", "categories"):
                if names.get(f):
                    accepted[f] = names[f]
            crd_rt = self._types[(_CRD_GROUP, "v1")]["customresourcedefinitions"]
            live = self._objects[self._key(crd_rt, None, _meta(crd)["name"])]
            new = copy.deepcopy(live)
            new["status"] = {
                "acceptedNames": accepted,
                "conditions": [
                    _condition("NamesAccepted", "True", "NoConflicts", "no conflicts found", now),
                    _condition("Established", "True", "InitialNamesAccepted",
                               "the initial names have been accepted", now),
                ],
                "storedVersions": sorted({*status.get("storedVersions", []), storage}),
            }
            self._update(crd_rt, live, new, "kube-apiserver", "status", dry_run=False)

    def _unregister_crd(self, group: str, plural: str) -> None:
        for gv in [gv for gv in self._types if gv[0] == group]:
            types = self._types[gv]
            rt = types.get(plural)
            if rt is not None and rt.custom:
                del types[plural]
                if not types:
                    del self._types[gv]

    # ------------------------------------------------------------------ deletes

    def _delete(self, rt: ResourceType, namespace: str | None, name: str, options: Obj,
                dry_run: bool) -> Response:
        dry_run = dry_run or "All" in (options.get("dryRun") or [])
        with self._lock:
            live = self._get_live(rt, namespace, name)
            pre = options.get("preconditions") or {}
            lmeta = _meta(live)
            if (pre.get("uid") and pre["uid"] != lmeta.get("uid")) or (
                    pre.get("resourceVersion")
                    and pre["resourceVersion"] != lmeta.get("resourceVersion")):
                raise ApiError(409, "Conflict",
                               f'Operation cannot be fulfilled on {rt.group_resource} "{name}": '
                               "the precondition does not match", _details(rt, name))
            if dry_run:
                return Response(200, self._view(rt, live))
            if lmeta.get("finalizers") and rt.kind != "Namespace":
                if lmeta.get("deletionTimestamp"):
                    return Response(202, self._view(rt, live))
                new = copy.deepcopy(live)
                _meta(new)["deletionTimestamp"] = _now()
                _meta(new)["deletionGracePeriodSeconds"] = 0
                _meta(new)["resourceVersion"] = self._next_rv()
                self._objects[self._key(rt, namespace, name)] = new
                self._emit("MODIFIED", rt, new)
                return Response(202, self._view(rt, new))
            self._remove(rt, live)
            return Response(200, self._view(rt, live))

    def _remove(self, rt: ResourceType, obj: Obj) -> None:
        meta = _meta(obj)
        key = self._key(rt, meta.get("namespace"), meta["name"])
        if self._objects.pop(key, None) is None:
            return
        gone = copy.deepcopy(obj)
        _meta(gone)["resourceVersion"] = self._next_rv()
        self._emit("DELETED", rt, gone)
        self._after_delete(rt, obj)

    def _after_delete(self, rt: ResourceType, obj: Obj) -> None:
        meta = _meta(obj)
        if rt.kind == "Namespace" and rt.group == "":
            for key in [k for k in self._objects if k[2] == meta["name"]]:
                child = self._objects.get(key)
                if child is not None:
                    self._remove(self._any_type(key[0], key[1]), child)
        elif rt.kind == "CustomResourceDefinition" and rt.group == _CRD_GROUP:
            spec = obj.get("spec") or {}
            group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
            for key in [k for k in self._objects if k[:2] == (group, plural)]:
                child = self._objects.get(key)
                if child is not None:
                    self._remove(self._any_type(key[0], key[1]), child)
            self._unregister_crd(str(group), str(plural))
        uid = meta.get("uid")
        for key, child in list(self._objects.items()):
            refs = _meta(child).get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs if isinstance(r, dict)):
                self._remove(self._any_type(key[0], key[1]), child)

    def _any_type(self, group: str, plural: str) -> ResourceType:
        for (g, _v), types in self._types.items():
            if g == group and plural in types:
                return types[plural]
        raise KeyError((group, plural))

    def _delete_collection(self, rt: ResourceType, namespace: str | None, q: dict[str, str],
                           dry_run: bool) -> Response:
        with self._lock:
            items = self._select(rt, namespace, q)
            if not dry_run:
                for obj in items:
                    self._remove(rt, obj)
            return Response(200, self._list_body(rt, items))

    # ------------------------------------------------------------------ reads

    def _select(self, rt: ResourceType, namespace: str | None, q: dict[str, str]) -> list[Obj]:
        labels = parse_label_selector(q.get("labelSelector", ""))
        fields = parse_field_selector(q.get("fieldSelector", ""))
        out = []
        for key, obj in sorted(self._objects.items()):
            if key[:2] != (rt.group, rt.plural):
                continue
            if namespace is not None and rt.namespaced and key[2] != namespace:
                continue
            if _matches(obj, labels, fields):
                out.append(obj)
        return out

    def _list_body(self, rt: ResourceType, items: list[Obj]) -> Obj:
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self._rv)},
                "items": [self._view(rt, o) for o in items]}

    def _list(self, rt: ResourceType, namespace: str | None, q: dict[str, str],
              accept: str) -> Response:
        with self._lock:
            items = self._select(rt, namespace, q)
            if "as=Table" in accept:
                return Response(200, self._table(rt, items, q.get("includeObject", "Metadata")))
            return Response(200, self._list_body(rt, items))

    def _table(self, rt: ResourceType, items: list[Obj], include: str) -> Obj:
        rows = []
        for obj in items:
            meta = _meta(obj)
            row: Obj = {"cells": [meta["name"], _age(meta.get("creationTimestamp"))]}
            if include == "Object":
                row["object"] = self._view(rt, obj)
            elif include != "None":
                row["object"] = {"kind": "PartialObjectMetadata",
                                 "apiVersion": "meta.k8s.io/v1",
                                 "metadata": {k: v for k, v in meta.items()
                                              if k != "managedFields"}}
            rows.append(row)
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(self._rv)},
            "columnDefinitions": [
                {"name": "Name", "type": "string", "format": "name", "priority": 0,
                 "description": "Name must be unique within a namespace."},
                {"name": "Age", "type": "string", "format": "", "priority": 0,
                 "description": "CreationTimestamp is a timestamp representing the server time "
                                "when this object was created."},
            ],
            "rows": rows,
        }

    def _watch(self, rt: ResourceType, namespace: str | None, q: dict[str, str],
               accept: str = "") -> _Watch:
        with self._lock:
            rv = q.get("resourceVersion", "")
            initial: list[Obj] = []
            if rv in ("", "0"):
                initial = [self._view(rt, o) for o in self._select(rt, namespace, q)]
                since = self._rv
            else:
                try:
                    since = int(rv)
                except ValueError:
                    raise _bad_request(f"invalid resourceVersion {rv!r}") from None
            timeout = float(q.get("timeoutSeconds") or 1800)
            table = q.get("includeObject", "Metadata") if "as=Table" in accept else ""
            return _Watch(rt, namespace, since, initial,
                          parse_label_selector(q.get("labelSelector", "")),
                          parse_field_selector(q.get("fieldSelector", "")), timeout, table)

    def watch_events(self, w: _Watch, alive: Callable[[], bool]) -> Iterator[Obj]:
        """Yield watch events until the timeout, server stop or ``alive()`` turns False."""
        def wrap(obj: Obj) -> Obj:
            return self._table(w.rt, [obj], w.table) if w.table else obj

        for obj in w.initial:
            yield {"type": "ADDED", "object": wrap(obj)}
        deadline = time.monotonic() + w.timeout
        cursor = w.since
        while True:
            with self._cond:
                batch = [e for e in self._events if e.rv > cursor]
                if not batch:
                    if self._stopping:
                        return
                    self._cond.wait(0.25)
                    batch = [e for e in self._events if e.rv > cursor]
                stopping = self._stopping
            for e in batch:
                cursor = max(cursor, e.rv)
                if (e.group, e.plural) != (w.rt.group, w.rt.plural):
                    continue
                if w.namespace is not None and w.rt.namespaced and e.namespace != w.namespace:
                    continue
                if not _matches(e.obj, w.labels, w.fields):
                    continue
                yield {"type": e.type, "object": wrap(self._view(w.rt, e.obj))}
            if stopping or time.monotonic() > deadline or not alive():
                return


# --------------------------------------------------------------------------- helpers (kinds)


def _version_priority(version: str) -> tuple[int, int, int, str]:
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0, version)
    stability = {None: 0, "beta": 1, "alpha": 2}[m[2]]
    return (stability, -int(m[1]), -int(m[3] or 0), version)


def _matches(obj: Obj, labels: list[_Requirement], fields: list[tuple[str, str, str]]) -> bool:
    obj_labels = _meta(obj).get("labels") or {}
    if not all(r.matches(obj_labels) for r in labels):
        return False
    for path, op, value in fields:
        have = _field_value(obj, path)
        if (have == value) != (op == "="):
            return False
    return True


def _prune_empty(obj: Obj, path: Path, keep: set[Path]) -> None:
    """Drop maps/lists left empty by removing ``path`` (not list items, not top-level)."""
    for i in range(len(path) - 1, 1, -1):
        parent_path = path[:i]
        if parent_path in keep or not parent_path[-1].startswith("f:"):
            return
        value = get_path(obj, parent_path)
        if value in ({}, []):
            remove_path(obj, parent_path)
        else:
            return


def _condition(ctype: str, status: str, reason: str, message: str, now: str) -> Obj:
    return {"type": ctype, "status": status, "lastUpdateTime": now,
            "lastTransitionTime": now, "reason": reason, "message": message}


def _replicas(obj: Obj) -> int:
    spec = obj.get("spec") or {}
    value = spec.get("replicas", 1)
    return int(value) if isinstance(value, int) else 1


def _rolled_out_status(obj: Obj) -> Obj:
    kind = obj.get("kind")
    gen = _meta(obj).get("generation", 1)
    n = _replicas(obj)
    if kind == "DaemonSet":
        return {"observedGeneration": gen, "desiredNumberScheduled": 1,
                "currentNumberScheduled": 1, "updatedNumberScheduled": 1, "numberReady": 1,
                "numberAvailable": 1, "numberMisscheduled": 0}
    if kind == "StatefulSet":
        rev = f"{_meta(obj)['name']}-{gen}"
        return {"observedGeneration": gen, "replicas": n, "readyReplicas": n,
                "currentReplicas": n, "updatedReplicas": n, "availableReplicas": n,
                "currentRevision": rev, "updateRevision": rev}
    if kind == "ReplicaSet":
        return {"observedGeneration": gen, "replicas": n, "readyReplicas": n,
                "availableReplicas": n, "fullyLabeledReplicas": n}
    now = _now()
    name = _meta(obj)["name"]
    status: Obj = {"observedGeneration": gen, "replicas": n, "updatedReplicas": n,
                   "readyReplicas": n, "availableReplicas": n}
    conds = [
        _condition("Available", "True", "MinimumReplicasAvailable",
                   "Deployment has minimum availability.", now),
        _condition("Progressing", "True", "NewReplicaSetAvailable",
                   f'ReplicaSet "{name}-emulated" has successfully progressed.', now),
    ]
    old = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}
    for c in conds:  # keep the transition time of an unchanged condition
        prev = old.get(c["type"])
        if prev and prev.get("status") == c["status"] and prev.get("reason") == c["reason"]:
            c["lastTransitionTime"] = prev.get("lastTransitionTime", now)
            c["lastUpdateTime"] = prev.get("lastUpdateTime", now)
    status["conditions"] = conds
    if n == 0:
        for k in ("readyReplicas", "availableReplicas", "updatedReplicas", "replicas"):
            status.pop(k)
    return status


def _job_status(obj: Obj, ok: bool, reason: str = "BackoffLimitExceeded") -> Obj:
    now = _now()
    spec = obj.get("spec") or {}
    if ok:
        completions = spec.get("completions", 1)
        return {"startTime": now, "completionTime": now, "succeeded": completions,
                "ready": 0, "active": 0,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods",
                     "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods",
                     "lastProbeTime": now, "lastTransitionTime": now}]}
    return {"startTime": now, "failed": int(spec.get("backoffLimit", 6)) + 1, "ready": 0,
            "active": 0,
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": reason,
                 "message": "Job has reached the specified backoff limit",
                 "lastProbeTime": now, "lastTransitionTime": now},
                {"type": "Failed", "status": "True", "reason": reason,
                 "message": "Job has reached the specified backoff limit",
                 "lastProbeTime": now, "lastTransitionTime": now}]}


def _scale_of(rt: ResourceType, obj: Obj) -> Obj:
    meta = _meta(obj)
    replicas = _dig(obj, rt.spec_replicas_path)
    status_replicas = _dig(obj, rt.status_replicas_path) or 0
    selector = ""
    if rt.label_selector_path:
        selector = str(_dig(obj, rt.label_selector_path) or "")
    else:
        match = _dig(obj, ".spec.selector.matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                          "creationTimestamp") if k in meta},
        "spec": {"replicas": replicas if isinstance(replicas, int) else 0},
        "status": {"replicas": status_replicas, **({"selector": selector} if selector else {})},
    }


def _apply_scale(rt: ResourceType, live: Obj, scale: Obj) -> Obj:
    replicas = (scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        raise _invalid(rt, _meta(live)["name"], [
            ("spec.replicas", "FieldValueInvalid",
             f"Invalid value: {replicas}: must be greater than or equal to 0")])
    rv = _meta(scale).get("resourceVersion")
    if rv and rv != _meta(live).get("resourceVersion"):
        raise ApiError(409, "Conflict",
                       f'Operation cannot be fulfilled on {rt.group_resource} '
                       f'"{_meta(live)["name"]}": the object has been modified; please apply '
                       "your changes to the latest version and try again")
    new = copy.deepcopy(live)
    _set_dotted(new, rt.spec_replicas_path, replicas)
    return new


def _default(rt: ResourceType, obj: Obj, server: KubeApiServer) -> None:
    """The few defaults clients depend on (no full defaulting)."""
    spec = obj.get("spec")
    kind, group = rt.kind, rt.group
    if group == "" and kind == "Namespace":
        meta = _meta(obj)
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")
        return
    if group == "" and kind == "Service":
        if not isinstance(spec, dict):
            spec = obj["spec"] = {}
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName" and "clusterIP" not in spec:
            server._ip_counter += 1
            ip = f"10.96.{server._ip_counter // 250}.{server._ip_counter % 250 + 1}"
            spec["clusterIP"] = ip
            spec.setdefault("clusterIPs", [ip])
        return
    if group == _CRD_GROUP and kind == "CustomResourceDefinition" and isinstance(spec, dict):
        spec.setdefault("conversion", {"strategy": "None"})
        return
    if not isinstance(spec, dict):
        return
    if group == "apps" and kind in ("Deployment", "StatefulSet", "ReplicaSet"):
        spec.setdefault("replicas", 1)
    if group == "apps" and kind in ("Deployment", "StatefulSet", "DaemonSet"):
        spec.setdefault("revisionHistoryLimit", 10)
    if group == "apps" and kind == "Deployment":
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            strategy.setdefault("type", "RollingUpdate")
            strategy.setdefault("rollingUpdate", {"maxSurge": "25%", "maxUnavailable": "25%"})
    elif group == "apps" and kind == "StatefulSet":
        spec.setdefault("podManagementPolicy", "OrderedReady")
        strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            strategy.setdefault("type", "RollingUpdate")
            strategy.setdefault("rollingUpdate", {"partition": 0})
    elif group == "apps" and kind == "DaemonSet":
        strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            strategy.setdefault("type", "RollingUpdate")
            strategy.setdefault("rollingUpdate", {"maxSurge": 0, "maxUnavailable": 1})
    elif group == "batch" and kind == "Job":
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)


def _conflict_error(conflicts: list[tuple[_Entry, Path]]) -> ApiError:
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {e.describe()}",
               "field": path_string(p)} for e, p in conflicts]
    if len(conflicts) == 1:
        e, p = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {e.describe()}: {path_string(p)}"
    else:
        by_manager: dict[str, list[Path]] = {}
        for e, p in conflicts:
            by_manager.setdefault(e.describe(), []).append(p)
        lines = []
        for manager in sorted(by_manager):
            lines.append(f"conflicts with {manager}:")
            lines.extend(f"- {path_string(p)}" for p in by_manager[manager])
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


# --------------------------------------------------------------------------- HTTP layer


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every request thread
    block_on_close = True
    allow_reuse_address = True
    emulator: KubeApiServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # a client went away, a TLS handshake failed, ...
            return
        self.emulator.errors.append(traceback.format_exc())


def _self_signed_cert() -> tuple[bytes, bytes]:
    """A fresh self-signed ECDSA serving certificate for 127.0.0.1/localhost (PEM cert, key)."""
    import ipaddress

    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the Kubernetes API emulator needs the 'cryptography' package to serve TLS (kubectl "
            "sends a token only over TLS); install the test extra, or use "
            "KubeApiServer(tls=False) without a token") from err

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-emulator")])
    now = _dt.datetime.now(_dt.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    timeout = 30  # idle keep-alive connections end by themselves
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stalls
    server_version = "kube-apiserver-emulator"
    sys_version = ""
    _log: ClassVar[bool] = False

    def setup(self) -> None:
        super().setup()
        with self.server.emulator._lock:
            self.server.emulator._connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.emulator._lock:
            self.server.emulator._connections.discard(self.connection)

    def handle(self) -> None:
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except OSError:
                self.close_connection = True
                return
        super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        if self._log:
            super().log_message(format, *args)

    def _serve(self) -> None:
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(self.command, split.path, query,
                      {k.lower(): v for k, v in self.headers.items()}, body)
        emulator = self.server.emulator
        try:
            result = emulator.handle(req)
        except Exception as exc:  # an emulator bug: answer 500 and keep the traceback
            emulator.errors.append(traceback.format_exc())
            result = Response(500, ApiError(500, "InternalError", f"emulator: {exc!r}").status())
        if isinstance(result, _Watch):
            self._stream(emulator, result)
            return
        data = result.encode()
        self.send_response(result.code)
        self.send_header("Content-Type", result.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for k, v in result.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _alive(self) -> bool:
        """False once the client closed a watch connection (it never sends anything else)."""
        conn = self.connection
        try:
            if isinstance(conn, ssl.SSLSocket):
                if not conn.pending() and not select.select([conn], [], [], 0)[0]:
                    return True
                conn.settimeout(0.05)
                try:
                    return conn.recv(1) != b""
                except (TimeoutError, ssl.SSLWantReadError):
                    return True
                finally:
                    conn.settimeout(self.timeout)
            if select.select([conn], [], [], 0)[0]:
                return bool(conn.recv(1, socket.MSG_PEEK) != b"")
        except OSError:
            return False
        return True

    def _stream(self, emulator: KubeApiServer, w: _Watch) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        try:
            for event in emulator.watch_events(w, self._alive):
                data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()
