"""A node stand-in for a real control plane that has no nodes (test helper).

A kube-apiserver with kube-controller-manager and etcd but no kubelet never runs a pod:
Deployments never roll out and Jobs never finish. When the cluster has no Ready node, the
``kube`` fixture starts this stand-in. It does what a kubelet would, through the API only:

- registers a Node (``gitops-push-standin-<id>``) with a Ready condition and keeps it fresh;
- binds each unscheduled pod of the test's namespace to it (the ``binding`` subresource,
  as the scheduler would);
- through the ``status`` subresource, marks the pod ``Running`` and ``Ready``; a Job's pod
  (``restartPolicy`` Never/OnFailure) ``Succeeded``, or ``Failed`` when its command is
  ``false`` (exit code 1);
- runs readiness probes the way the images used in the tests would answer them: an exec
  probe passes only for ``true``, so a probe of ``/does-not-exist`` keeps the pod not Ready.

It is not a kubelet: no containers run, no images are pulled, no volumes are mounted. It
exists so that the suite's rollout and Job assertions mean the same thing on a real API
server as on the emulator, where ``auto_rollout`` plays the controllers' part.
"""

from __future__ import annotations

import datetime
import secrets
import threading
from typing import Any

NODE_PREFIX = "gitops-push-standin-"
POLL = 0.3


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def has_ready_node(kubeconfig: str, context: str | None) -> bool:
    """True when some Node other than a stand-in reports Ready."""
    api = _api(kubeconfig, context)
    for node in api.list_node().items:
        if node.metadata.name.startswith(NODE_PREFIX):
            continue
        for cond in (node.status.conditions or []) if node.status else []:
            if cond.type == "Ready" and cond.status == "True":
                return True
    return False


def _api(kubeconfig: str, context: str | None) -> Any:
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
    return client.CoreV1Api(api_client)


class NodeStandIn:
    """Plays the kubelet (and the scheduler's binding) for one namespace until stopped."""

    def __init__(self, kubeconfig: str, context: str | None, namespace: str) -> None:
        self.api = _api(kubeconfig, context)
        self.namespace = namespace
        self.node = NODE_PREFIX + secrets.token_hex(3)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"node-standin-{namespace}")
        self._done: set[str] = set()  # pod uids in a final state

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> NodeStandIn:
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node,
                             "labels": {"kubernetes.io/hostname": self.node,
                                        "gitops-push.io/test-standin": "true"}},
                "spec": {}}
        self.api.create_node(body)
        self._heartbeat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self.api.delete_node(self.node)
        except Exception as exc:  # the cluster may be gone; nothing else to clean
            self.errors.append(f"deleting node {self.node}: {exc}")

    def _heartbeat(self) -> None:
        now = _now()
        status = {"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "gitops-push test node stand-in",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
            "nodeInfo": {"kubeletVersion": "standin", "architecture": "amd64",
                         "operatingSystem": "linux", "containerRuntimeVersion": "none://0",
                         "bootID": "", "kernelVersion": "", "kubeProxyVersion": "",
                         "machineID": "", "osImage": "", "systemUUID": ""}}}
        self.api.patch_node_status(self.node, status)

    def _loop(self) -> None:
        beats = 0
        while not self._stop.wait(POLL):
            try:
                beats += 1
                if beats % 30 == 0:
                    self._heartbeat()
                for pod in self.api.list_namespaced_pod(self.namespace).items:
                    self._tend(pod)
            except Exception as exc:  # keep playing the kubelet; report at the end
                if len(self.errors) < 20:
                    self.errors.append(f"{type(exc).__name__}: {exc}")

    # -- one pod ----------------------------------------------------------------------------
    def _tend(self, pod: Any) -> None:
        uid = pod.metadata.uid
        if uid in self._done or pod.metadata.deletion_timestamp is not None:
            return
        name = pod.metadata.name
        if not pod.spec.node_name:
            self.api.create_namespaced_pod_binding(
                name, self.namespace,
                {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                 "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}},
                _preload_content=False)
        finished = pod.spec.restart_policy in ("Never", "OnFailure")
        containers = pod.spec.containers or []
        if finished:
            failed = any((c.command or [])[:1] == ["false"] or ((c.args or [])[:1] == ["false"]
                         and not c.command) for c in containers)
            self._set(pod, "Failed" if failed else "Succeeded", ready=False,
                      exit_code=1 if failed else 0)
            self._done.add(uid)
            return
        ready = all(_probe_passes(c.readiness_probe) for c in containers)
        current = pod.status.phase if pod.status else None
        was_ready = any(c.type == "Ready" and c.status == "True"
                        for c in ((pod.status.conditions or []) if pod.status else []))
        if current != "Running" or was_ready != ready:
            self._set(pod, "Running", ready=ready, exit_code=None)

    def _set(self, pod: Any, phase: str, *, ready: bool, exit_code: int | None) -> None:
        now = _now()
        flag = "True" if ready else "False"
        statuses = []
        for c in pod.spec.containers or []:
            state: dict[str, Any]
            if exit_code is None:
                state = {"running": {"startedAt": now}}
            else:
                state = {"terminated": {"exitCode": exit_code, "startedAt": now,
                                        "finishedAt": now,
                                        "reason": "Completed" if exit_code == 0 else "Error"}}
            statuses.append({"name": c.name, "image": c.image, "imageID": "",
                             "ready": ready, "started": exit_code is None,
                             "restartCount": 0, "state": state})
        status = {"status": {
            "phase": phase, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}], "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
                {"type": "Ready", "status": flag, "lastTransitionTime": now}],
            "containerStatuses": statuses}}
        self.api.patch_namespaced_pod_status(pod.metadata.name, self.namespace, status)


def _probe_passes(probe: Any) -> bool:
    """What the tests' images answer: no probe or a non-exec probe passes; an exec probe
    passes only for ``true``."""
    if probe is None or probe._exec is None:
        return True
    command = probe._exec.command or []
    return command[:1] in (["true"], ["/bin/true"])
