"""Waiting for what was applied to become ready, with the official kubernetes client.

The readiness rules are kubectl's ``rollout status`` rules (and ``wait --for=condition``
for Jobs and CRDs), written as pure functions of the object so they are tested without
a cluster. The client is imported lazily: ``gitops-push --help`` must not pay for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gitops_push.engines.kubernetes.objects import ObjRef
from gitops_push.errors import Interrupted, ToolError

POLL_SECONDS = 1.0
WORKLOADS = {("apps", "Deployment"): "deployments", ("apps", "StatefulSet"): "statefulsets",
             ("apps", "DaemonSet"): "daemonsets", ("batch", "Job"): "jobs"}
CRD = ("apiextensions.k8s.io", "CustomResourceDefinition")

Status = tuple[str, str]  # ("done" | "failed" | "waiting", what to tell people)


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    status = obj.get("status") or {}
    return {c.get("type", ""): c for c in status.get("conditions") or [] if isinstance(c, dict)}


def _cond_text(c: Mapping[str, Any]) -> str:
    text = f"{c.get('type')}={c.get('status')} {c.get('reason', '')}".rstrip()
    return f"{text}: {c['message']}" if c.get("message") else text


def _observed(obj: Mapping[str, Any]) -> bool:
    generation = (obj.get("metadata") or {}).get("generation") or 0
    observed = (obj.get("status") or {}).get("observedGeneration") or 0
    return bool(observed) and observed >= generation


def deployment_status(obj: Mapping[str, Any]) -> Status:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if not _observed(obj):
        return "waiting", "waiting for the controller to observe the new generation"
    progressing = _conditions(obj).get("Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return "failed", _cond_text(progressing)
    want = spec.get("replicas", 1)
    updated = status.get("updatedReplicas") or 0
    total = status.get("replicas") or 0
    available = status.get("availableReplicas") or 0
    if updated < want:
        return "waiting", f"{updated} of {want} replicas updated"
    if total > updated:
        return "waiting", f"{total - updated} old replicas pending termination"
    if available < updated:
        return "waiting", f"{available} of {updated} updated replicas available"
    return "done", f"rolled out ({updated} replicas available)"


def statefulset_status(obj: Mapping[str, Any]) -> Status:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type") == "OnDelete":
        return "done", "OnDelete update strategy: pods change when deleted"
    if not _observed(obj):
        return "waiting", "waiting for the controller to observe the new generation"
    want = spec.get("replicas", 1)
    ready = status.get("readyReplicas") or 0
    if ready < want:
        return "waiting", f"{ready} of {want} pods ready"
    partition = (strategy.get("rollingUpdate") or {}).get("partition") or 0
    if partition:
        updated = status.get("updatedReplicas") or 0
        if updated < want - partition:
            return "waiting", f"{updated} of {want - partition} partitioned pods updated"
        return "done", f"partitioned roll out complete ({updated} updated)"
    if status.get("updateRevision") != status.get("currentRevision"):
        return "waiting", f"{status.get('updatedReplicas') or 0} of {want} pods updated"
    return "done", f"rolled out ({ready} pods ready)"


def daemonset_status(obj: Mapping[str, Any]) -> Status:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
        return "done", "OnDelete update strategy: pods change when deleted"
    if not _observed(obj):
        return "waiting", "waiting for the controller to observe the new generation"
    want = status.get("desiredNumberScheduled") or 0
    updated = status.get("updatedNumberScheduled") or 0
    available = status.get("numberAvailable") or 0
    if updated < want:
        return "waiting", f"{updated} of {want} pods updated"
    if available < want:
        return "waiting", f"{available} of {want} updated pods available"
    return "done", f"rolled out ({available} pods available)"


def job_status(obj: Mapping[str, Any]) -> Status:
    conditions = _conditions(obj)
    for kind in ("Failed", "FailureTarget"):
        c = conditions.get(kind)
        if c and c.get("status") == "True":
            return "failed", _cond_text(c)
    complete = conditions.get("Complete")
    if complete and complete.get("status") == "True":
        return "done", "complete"
    if (obj.get("spec") or {}).get("suspend"):
        return "done", "suspended: not waiting"
    status = obj.get("status") or {}
    return "waiting", (f"{status.get('active') or 0} active, "
                       f"{status.get('succeeded') or 0} succeeded")


def crd_status(obj: Mapping[str, Any]) -> Status:
    conditions = _conditions(obj)
    names = conditions.get("NamesAccepted")
    if names and names.get("status") == "False":
        return "failed", _cond_text(names)
    established = conditions.get("Established")
    if established and established.get("status") == "True":
        return "done", "established"
    return "waiting", "waiting to be established"


STATUS: dict[tuple[str, str], Callable[[Mapping[str, Any]], Status]] = {
    ("apps", "Deployment"): deployment_status, ("apps", "StatefulSet"): statefulset_status,
    ("apps", "DaemonSet"): daemonset_status, ("batch", "Job"): job_status, CRD: crd_status,
}


def waits_for(ref: ObjRef) -> bool:
    return (ref.group, ref.kind) in WORKLOADS


@dataclass
class Waiter:
    """Polls objects until all are ready, one is failed, the deadline passes, or cancel."""

    stack: str
    config_file: str | None
    context: str | None
    on_line: Callable[[str], None]
    cancel: Any  # threading.Event
    in_cluster: bool = False  # no kubeconfig, but running in a pod (KUBERNETES_SERVICE_HOST)

    def wait(self, items: Sequence[tuple[ObjRef, str]], timeout: float, what: str) -> None:
        """``items``: (object, apiVersion version); ``what`` names the wait in messages."""
        if not items:
            return
        api = self._api()
        deadline = time.monotonic() + timeout
        pending = dict(items)
        said: dict[ObjRef, str] = {}
        while True:
            for ref in sorted(pending):
                state, message = self._status(api, ref, pending[ref])
                if state == "failed":
                    raise ToolError(f"stack {self.stack!r}: {ref.address}: {what} failed: "
                                    f"{message}")
                if state == "done":
                    del pending[ref]
                    self.on_line(f"{ref.address}: {message}")
                elif said.get(ref) != message:
                    said[ref] = message
                    self.on_line(f"waiting for {ref.address}: {message}")
            if not pending:
                return
            if time.monotonic() >= deadline:
                ref = sorted(pending)[0]
                raise ToolError(
                    f"stack {self.stack!r}: {ref.address}: {what} did not finish within "
                    f"{_human(timeout)}: {said.get(ref, 'not ready')}"
                    + (f" (and {len(pending) - 1} more not ready)" if len(pending) > 1 else ""))
            if self.cancel.wait(min(POLL_SECONDS, max(0.0, deadline - time.monotonic()))):
                raise Interrupted(f"stack {self.stack!r}: interrupted while waiting for {what}")

    def _api(self) -> Any:
        """A client like kubectl's: the kubeconfig, or the pod's service account without one."""
        from kubernetes import client, config

        try:
            if self.config_file is None and self.in_cluster:
                configuration = client.Configuration()
                config.load_incluster_config(  # type: ignore[no-untyped-call,unused-ignore]
                    client_configuration=configuration)
                api_client = client.ApiClient(configuration)
            else:
                api_client = config.new_client_from_config(  # type: ignore[no-untyped-call,unused-ignore]
                    config_file=self.config_file, context=self.context, persist_config=False)
        except (config.ConfigException, OSError, TypeError, ValueError) as exc:
            raise ToolError(f"stack {self.stack!r}: cannot load the kubeconfig to wait for "
                            f"rollouts: {exc}") from exc
        return client.CustomObjectsApi(api_client)

    def _status(self, api: Any, ref: ObjRef, version: str) -> Status:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        plural = "customresourcedefinitions" if (ref.group, ref.kind) == CRD \
            else WORKLOADS[(ref.group, ref.kind)]
        try:
            if ref.namespace:
                obj = api.get_namespaced_custom_object(ref.group, version, ref.namespace,
                                                       plural, ref.name)
            else:
                obj = api.get_cluster_custom_object(ref.group, version, plural, ref.name)
        except ApiException as exc:
            if exc.status == 404 and ref.kind == "Job":
                return "done", "gone (deleted after finishing, ttlSecondsAfterFinished?)"
            raise ToolError(f"stack {self.stack!r}: {ref.address}: reading its status failed: "
                            f"{exc.status} {exc.reason}") from exc
        except HTTPError as exc:
            raise ToolError(f"stack {self.stack!r}: {ref.address}: cannot reach the API "
                            f"server to read its status: {type(exc).__name__}") from exc
        return STATUS[(ref.group, ref.kind)](obj)


def _human(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
