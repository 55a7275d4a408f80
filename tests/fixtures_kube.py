"""pytest plugin: the ``kube`` fixture, a Kubernetes cluster for one test.

By default the cluster is the in-process emulator of ``tests/kube_apiserver.py`` (HTTPS on
127.0.0.1 with a self-signed certificate and a bearer token, because kubectl sends a token only
over TLS), fresh for every test. When ``GITOPS_PUSH_TEST_KUBECONFIG`` names a kubeconfig, its
current context is used instead: a real cluster, ``kube.server`` is None, and the same tests
must pass there.

Either way the test gets a new unique namespace (the kubeconfig's default namespace) that is
deleted afterwards, a private kubeconfig file and a private kubectl cache directory
(``KUBECACHEDIR`` is set for the test process so every kubectl it starts uses it).

Options for the emulator come from the ``kube_emulator_options`` fixture (keyword arguments of
``KubeApiServer``: ``auto_rollout=True``, ``token=...``, ``user=...``); override it in a module
or class, or parametrize it directly::

    @pytest.mark.parametrize("kube_emulator_options", [{"auto_rollout": True}])
    def test_x(kube): ...

They are ignored on a real cluster, where the real controllers roll things out.

A real cluster without a Ready node (a bare control plane) gets a node stand-in for the test's
namespace (``tests/kube_node_standin.py``): it registers a Node, binds the namespace's pods
to it and marks them Running and Ready, Job pods Succeeded (Failed when their command is
``false``), through the status subresource as a kubelet would.

Helpers that stand in for controllers (``rolled_out``, ``rollout_failed``, ``job_complete``,
``job_failed``) act on the emulator directly; on a real cluster they wait for the real
controllers instead (``rollout_failed`` needs a Deployment built to fail there).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_apiserver import KubeApiServer
from kube_node_standin import NodeStandIn, has_ready_node

ENV_KUBECONFIG = "GITOPS_PUSH_TEST_KUBECONFIG"
EMULATOR_TOKEN = "gitops-push-test-token"
_WAIT = "120s"  # how long a real cluster may take for a rollout or a Job


@dataclass
class KubeCluster:
    """What the ``kube`` fixture yields."""

    kubeconfig: Path
    context: str
    namespace: str
    server: KubeApiServer | None  # None on a real cluster
    cache_dir: Path

    @property
    def emulated(self) -> bool:
        return self.server is not None

    @property
    def env(self) -> dict[str, str]:
        """Variables for a kubectl started by code under test (on top of PATH/HOME)."""
        return {"KUBECONFIG": str(self.kubeconfig), "KUBECACHEDIR": str(self.cache_dir)}

    def kubectl(self, *args: str, input: str | None = None, check: bool = False,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl with this cluster's kubeconfig (text mode, output captured)."""
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            pytest.skip("kubectl is not on PATH")
        return subprocess.run(
            [kubectl, "--kubeconfig", str(self.kubeconfig), *args],
            input=input, capture_output=True, text=True, check=check, timeout=timeout,
            env={**os.environ, "KUBECACHEDIR": str(self.cache_dir)},
        )

    def apply(self, manifest: str | dict[str, Any] | list[dict[str, Any]], *,
              field_manager: str = "gitops-push-test", force: bool = False,
              namespace: str | None = None) -> subprocess.CompletedProcess[str]:
        """``kubectl apply --server-side`` of a YAML text or object(s); raises on failure."""
        if not isinstance(manifest, str):
            docs = manifest if isinstance(manifest, list) else [manifest]
            manifest = yaml.safe_dump_all(docs, sort_keys=False)
        args = ["apply", "--server-side", f"--field-manager={field_manager}", "-f", "-",
                "-n", namespace or self.namespace]
        if force:
            args.append("--force-conflicts")
        result = self.kubectl(*args, input=manifest)
        if result.returncode != 0:
            raise AssertionError(f"kubectl apply failed: {result.stderr}")
        return result

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object as JSON (managedFields included), or None when it does not exist.
        ``kind`` is anything kubectl understands: ``deployment``, ``deployments.apps``, ``cm``,
        ``widgets.example.com``."""
        result = self.kubectl("get", kind, name, "-n", namespace or self.namespace,
                              "-o", "json", "--ignore-not-found", "--show-managed-fields")
        if result.returncode != 0:
            raise AssertionError(f"kubectl get {kind} {name} failed: {result.stderr}")
        if not result.stdout.strip():
            return None
        obj: dict[str, Any] = json.loads(result.stdout)
        return obj

    def require_emulator(self, reason: str) -> KubeApiServer:
        if self.server is None:
            pytest.skip(f"needs the API server emulator: {reason}")
        return self.server

    def identity_without(self, verb: str, resource: str, group: str,
                         dest: Path) -> tuple[Path, str]:
        """A kubeconfig (and its user name) that may do everything the tests need in the
        namespace except ``verb`` on ``resource``: on the emulator its ``deny()``; on a real
        cluster a ServiceAccount with a Role that leaves the verb out, and its token."""
        if self.server is not None:
            self.server.deny(verb, resource, self.namespace)
            return self.kubeconfig, "test-user"
        ns, sa = self.namespace, "limited"
        verbs = [v for v in ("get", "list", "watch", "create", "update", "patch", "delete")
                 if v != verb]
        common = [r for r in ("configmaps", "secrets", "services", "pods") if r != resource]
        role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": sa, "namespace": ns},
                "rules": [{"apiGroups": [""], "resources": common, "verbs": ["*"]},
                          {"apiGroups": [group], "resources": [resource], "verbs": verbs}]}
        self.kubectl("create", "serviceaccount", sa, "-n", ns, check=True)
        self.apply(role)
        self.kubectl("create", "rolebinding", sa, f"--role={sa}", f"--serviceaccount={ns}:{sa}",
                     "-n", ns, check=True)
        token = self.kubectl("create", "token", sa, "-n", ns, "--duration=1h",
                             check=True).stdout.strip()
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        cfg["users"][0]["user"] = {"token": token}
        dest.write_text(yaml.safe_dump(cfg))
        dest.chmod(0o600)
        return dest, f"system:serviceaccount:{ns}:{sa}"

    # ------------------------------------------------------------------ controller stand-ins

    def rolled_out(self, kind: str, name: str, namespace: str | None = None) -> None:
        """Deployment/StatefulSet/DaemonSet is rolled out: marked so by the emulator, or
        waited for with ``kubectl rollout status`` on a real cluster."""
        ns = namespace or self.namespace
        if self.server is not None:
            self.server.mark_rolled_out(kind, name, ns)
            return
        result = self.kubectl("rollout", "status", f"{kind}/{name}", "-n", ns,
                              f"--timeout={_WAIT}", timeout=180)
        if result.returncode != 0:
            raise AssertionError(f"{kind}/{name} did not roll out: {result.stderr}")

    def rollout_failed(self, kind: str, name: str, namespace: str | None = None,
                       message: str = "") -> None:
        """The rollout failed (Deployment: ProgressDeadlineExceeded): marked so by the
        emulator; on a real cluster waited for, so the Deployment must be built to fail (a
        readiness probe that never passes and a short ``progressDeadlineSeconds``)."""
        ns = namespace or self.namespace
        if self.server is not None:
            self.server.mark_rollout_failed(kind, name, ns, message)
            return
        jsonpath = '{.status.conditions[?(@.type=="Progressing")].reason}'
        result = self.kubectl("wait", f"--for=jsonpath={jsonpath}=ProgressDeadlineExceeded",
                              f"{kind}/{name}", "-n", ns, f"--timeout={_WAIT}", timeout=180)
        if result.returncode != 0:
            raise AssertionError(f"{kind}/{name} never exceeded its deadline: {result.stderr}")

    def job_complete(self, name: str, namespace: str | None = None) -> None:
        ns = namespace or self.namespace
        if self.server is not None:
            self.server.mark_job_complete(name, ns)
            return
        self._wait_condition(f"job/{name}", "complete", ns)

    def job_failed(self, name: str, namespace: str | None = None) -> None:
        """The Job failed; on a real cluster its pods must really fail (e.g. ``false``)."""
        ns = namespace or self.namespace
        if self.server is not None:
            self.server.mark_job_failed(name, ns)
            return
        self._wait_condition(f"job/{name}", "failed", ns)

    def _wait_condition(self, what: str, condition: str, ns: str) -> None:
        result = self.kubectl("wait", f"--for=condition={condition}", what, "-n", ns,
                              f"--timeout={_WAIT}", timeout=180)
        if result.returncode != 0:
            raise AssertionError(f"{what} never became {condition}: {result.stderr}")


_READY_NODE: dict[str, bool] = {}


def _has_ready_node(kubeconfig: str, context: str) -> bool:
    """Asked once per run: a control plane without nodes gets a node stand-in per test."""
    key = os.environ.get(ENV_KUBECONFIG, "")
    if key not in _READY_NODE:
        _READY_NODE[key] = has_ready_node(kubeconfig, context)
    return _READY_NODE[key]


def _unique_namespace(node_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", node_name.lower()).strip("-")[:40].strip("-")
    return f"gp-{slug}-{secrets.token_hex(3)}"


def _real_kubeconfig(source: Path, dest: Path, namespace: str) -> str:
    """Copy the current context of ``source`` (flattened) with ``namespace`` as default."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH")
    result = subprocess.run(
        [kubectl, "config", "view", "--raw", "--minify", "--flatten",
         "--kubeconfig", str(source)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"cannot read {ENV_KUBECONFIG}={source}: {result.stderr}")
    cfg = yaml.safe_load(result.stdout)
    context = str(cfg["current-context"])
    for ctx in cfg.get("contexts") or []:
        if ctx.get("name") == context:
            ctx.setdefault("context", {})["namespace"] = namespace
    dest.write_text(yaml.safe_dump(cfg, sort_keys=False))
    dest.chmod(0o600)
    return context


@pytest.fixture
def kube_emulator_options() -> dict[str, Any]:
    """Keyword arguments for ``KubeApiServer`` (override or parametrize it)."""
    return {}


@pytest.fixture
def kube(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         kube_emulator_options: dict[str, Any]) -> Iterator[KubeCluster]:
    """A cluster (the emulator, or the real one of ``GITOPS_PUSH_TEST_KUBECONFIG``) with a
    fresh namespace for this test."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH")
    base = tmp_path / "kube"
    base.mkdir()
    kubeconfig = base / "config"
    cache_dir = base / "cache"
    monkeypatch.setenv("KUBECACHEDIR", str(cache_dir))
    namespace = _unique_namespace(request.node.name)
    real = os.environ.get(ENV_KUBECONFIG)

    if real:
        context = _real_kubeconfig(Path(real).expanduser(), kubeconfig, namespace)
        cluster = KubeCluster(kubeconfig, context, namespace, None, cache_dir)
        created = cluster.kubectl("create", "namespace", namespace)
        if created.returncode != 0:
            raise RuntimeError(f"cannot create namespace {namespace}: {created.stderr}")
        standin = None
        if not _has_ready_node(str(kubeconfig), context):
            standin = NodeStandIn(str(kubeconfig), context, namespace).start()
        try:
            yield cluster
        finally:
            if standin is not None:
                standin.stop()
            # the test's namespace, and any it derived from that name (``<ns>-extra``):
            # a real cluster outlives the test run
            listed = cluster.kubectl("get", "namespaces", "-o", "name").stdout.split()
            derived = [n.removeprefix("namespace/") for n in listed
                       if n.startswith(f"namespace/{namespace}-")]
            cluster.kubectl("delete", "namespace", namespace, *derived, "--wait=false",
                            "--ignore-not-found")
        return

    options: dict[str, Any] = {"token": EMULATOR_TOKEN, **kube_emulator_options}
    server = KubeApiServer(**options).start()
    try:
        server.create_namespace(namespace)
        kubeconfig.write_text(server.kubeconfig(context="emulator", namespace=namespace))
        kubeconfig.chmod(0o600)
        yield KubeCluster(kubeconfig, "emulator", namespace, server, cache_dir)
    finally:
        server.stop()
    if server.errors:
        pytest.fail("the API server emulator hit internal errors:\n" + "\n".join(server.errors),
                    pytrace=False)
