"""The Kubernetes API server emulator, driven by the real kubectl and the Python client.

The tests that take the ``kube`` fixture also pass against a real cluster
(``GITOPS_PUSH_TEST_KUBECONFIG=...``); those about emulator internals take no fixture.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from kube_apiserver import (
    KubeApiServer,
    Request,
    Response,
    fields_from_v1,
    fields_to_v1,
    flatten_fields,
)

if TYPE_CHECKING:
    from fixtures_kube import KubeCluster


PAUSE = "registry.k8s.io/pause:3.9"


def _cm(name: str, data: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def _deployment(name: str, image: str = PAUSE, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image,
                                         "ports": [{"containerPort": 8080}]}]},
            },
        },
    }


def _yaml(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def _managers(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["manager"], e["operation"]): e["fieldsV1"]
            for e in obj["metadata"].get("managedFields", [])}


# --------------------------------------------------------------------------- kubectl


def test_server_side_apply_creates_with_managed_fields(kube: KubeCluster) -> None:
    kube.apply(_deployment("web", replicas=2))
    obj = kube.get("deployment", "web")
    assert obj is not None
    meta = obj["metadata"]
    assert meta["namespace"] == kube.namespace
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    assert meta["generation"] == 1
    assert obj["spec"]["replicas"] == 2
    fields = _managers(obj)[("gitops-push-test", "Apply")]
    assert fields["f:spec"]["f:replicas"] == {}
    assert fields["f:spec"]["f:selector"] == {}  # LabelSelector is atomic
    container = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert container["."] == {}
    assert container["f:image"] == {}
    assert 'k:{"containerPort":8080,"protocol":"TCP"}' in container["f:ports"]


def test_reapply_is_a_noop_and_diff_exits_0(kube: KubeCluster) -> None:
    manifest = _yaml(_cm("cfg", {"a": "1", "b": "2"}, {"tier": "web"}))
    kube.apply(manifest)
    before = kube.get("configmap", "cfg")
    assert before is not None
    diff = kube.kubectl("diff", "--server-side", "--field-manager=gitops-push-test", "-f", "-",
                        input=manifest)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert diff.stdout == ""
    kube.apply(manifest)
    after = kube.get("configmap", "cfg")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["metadata"]["managedFields"] == before["metadata"]["managedFields"]


def test_diff_shows_a_changed_field_and_exits_1(kube: KubeCluster) -> None:
    kube.apply(_cm("cfg", {"a": "1"}))
    diff = kube.kubectl("diff", "--server-side", "--field-manager=gitops-push-test", "-f", "-",
                        input=_yaml(_cm("cfg", {"a": "2"})))
    assert diff.returncode == 1, diff.stderr
    assert '-  a: "1"' in diff.stdout
    assert '+  a: "2"' in diff.stdout
    cfg = kube.get("cm", "cfg")
    assert cfg is not None
    assert cfg["data"] == {"a": "1"}  # diff is a dry run


def test_fields_left_out_of_an_apply_are_removed_unless_co_owned(kube: KubeCluster) -> None:
    kube.apply(_cm("cfg", {"a": "1", "b": "2", "c": "3"}))
    kube.apply(_cm("cfg", {"c": "3"}), field_manager="other")  # same value: co-owned
    kube.apply(_cm("cfg", {"a": "1"}))
    cfg = kube.get("cm", "cfg")
    assert cfg is not None
    assert cfg["data"] == {"a": "1", "c": "3"}
    managers = _managers(cfg)
    assert managers[("gitops-push-test", "Apply")] == {"f:data": {"f:a": {}}}
    assert managers[("other", "Apply")] == {"f:data": {"f:c": {}}}


def test_conflict_with_a_hand_edit_and_force_conflicts(kube: KubeCluster) -> None:
    manifest = _yaml(_cm("cfg", {"a": "1", "b": "2"}))
    kube.apply(manifest)
    edit = kube.kubectl("patch", "configmap", "cfg", "--type=merge",
                        "-p", '{"data":{"a":"edited"}}', "--field-manager=kubectl-edit")
    assert edit.returncode == 0, edit.stderr
    cfg = kube.get("cm", "cfg")
    assert cfg is not None
    assert _managers(cfg)[("kubectl-edit", "Update")] == {"f:data": {"f:a": {}}}
    assert _managers(cfg)[("gitops-push-test", "Apply")] == {"f:data": {"f:b": {}}}

    apply = kube.kubectl("apply", "--server-side", "--field-manager=gitops-push-test",
                         "-f", "-", input=manifest)
    assert apply.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "kubectl-edit"' in apply.stderr
    assert ".data.a" in apply.stderr
    diff = kube.kubectl("diff", "--server-side", "--field-manager=gitops-push-test", "-f", "-",
                        input=manifest)
    assert diff.returncode > 1
    assert "conflict" in diff.stderr

    forced = kube.kubectl("apply", "--server-side", "--field-manager=gitops-push-test",
                          "--force-conflicts", "-f", "-", input=manifest)
    assert forced.returncode == 0, forced.stderr
    cfg = kube.get("cm", "cfg")
    assert cfg is not None
    assert cfg["data"] == {"a": "1", "b": "2"}
    assert ("kubectl-edit", "Update") not in _managers(cfg)


def test_kubectl_scale_conflicts_on_replicas(kube: KubeCluster) -> None:
    kube.apply(_deployment("web", replicas=1))
    scaled = kube.kubectl("scale", "deployment/web", "--replicas=3")
    assert scaled.returncode == 0, scaled.stderr
    web = kube.get("deployment", "web")
    assert web is not None
    assert web["spec"]["replicas"] == 3
    assert web["metadata"]["generation"] == 2
    again = kube.kubectl("apply", "--server-side", "--field-manager=gitops-push-test", "-f", "-",
                         input=_yaml(_deployment("web", replicas=1)))
    assert again.returncode != 0
    assert "conflict" in again.stderr
    assert ".spec.replicas" in again.stderr
    kube.apply(_deployment("web", replicas=1), force=True)
    web = kube.get("deployment", "web")
    assert web is not None
    assert web["spec"]["replicas"] == 1


def test_hand_edits_label_and_strategic_patch(kube: KubeCluster) -> None:
    kube.apply(_deployment("web"))
    label = kube.kubectl("label", "deployment", "web", "edited=yes")
    assert label.returncode == 0, label.stderr
    patch = kube.kubectl(
        "patch", "deployment", "web", "--field-manager=kubectl-edit", "-p",
        '{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"busybox:1.36"}]}}}}')
    assert patch.returncode == 0, patch.stderr
    web = kube.get("deployment", "web")
    assert web is not None
    assert web["metadata"]["labels"] == {"app": "web", "edited": "yes"}
    [container] = web["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "busybox:1.36"
    assert container["ports"][0]["containerPort"] == 8080  # merged by name, not replaced
    managers = _managers(web)
    assert "f:edited" in managers[("kubectl-label", "Update")]["f:metadata"]["f:labels"]
    owned = managers[("kubectl-edit", "Update")]["f:spec"]["f:template"]["f:spec"]
    assert "f:image" in owned["f:containers"]['k:{"name":"web"}']


def test_label_and_field_selectors(kube: KubeCluster) -> None:
    kube.apply([
        _cm("sel-a", {"k": "v"}, {"tier": "web", "env": "prod"}),
        _cm("sel-b", {"k": "v"}, {"tier": "web", "env": "dev"}),
        _cm("sel-c", {"k": "v"}, {"tier": "db"}),
        _cm("sel-d", {"k": "v"}),
    ])

    def names(*args: str) -> list[str]:
        out = kube.kubectl("get", "configmaps", "-o", "name", *args)
        assert out.returncode == 0, out.stderr
        return sorted(n.split("/")[1] for n in out.stdout.split() if "/sel-" in n)

    assert names("-l", "tier=web") == ["sel-a", "sel-b"]
    assert names("-l", "tier!=web") == ["sel-c", "sel-d"]
    assert names("-l", "tier in (db,web),env notin (prod)") == ["sel-b", "sel-c"]
    assert names("-l", "env") == ["sel-a", "sel-b"]
    assert names("-l", "!env,tier") == ["sel-c"]
    assert names("--field-selector", "metadata.name=sel-c") == ["sel-c"]
    everywhere = kube.kubectl("get", "configmaps", "-A", "-l", "tier=db", "-o", "json")
    assert everywhere.returncode == 0, everywhere.stderr
    items = json.loads(everywhere.stdout)["items"]
    assert [i["metadata"]["name"] for i in items
            if i["metadata"]["namespace"] == kube.namespace] == ["sel-c"]


def test_delete_and_not_found(kube: KubeCluster) -> None:
    kube.apply(_cm("gone", {"a": "1"}))
    deleted = kube.kubectl("delete", "configmap", "gone")
    assert deleted.returncode == 0, deleted.stderr
    assert kube.get("configmap", "gone") is None
    again = kube.kubectl("delete", "configmap", "gone")
    assert again.returncode != 0
    assert 'configmaps "gone" not found' in again.stderr


def test_missing_namespace_is_not_found(kube: KubeCluster) -> None:
    result = kube.kubectl("apply", "--server-side", "-n", "gp-no-such-namespace", "-f", "-",
                          input=_yaml(_cm("x", {"a": "1"})))
    assert result.returncode != 0
    assert 'namespaces "gp-no-such-namespace" not found' in result.stderr


def test_crd_then_custom_resource_with_status(kube: KubeCluster) -> None:
    group = f"{kube.namespace}.gitops-push.test"
    crd_name = f"widgets.{group}"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }],
        },
    }
    widget = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w1"},
              "spec": {"color": "blue"}}
    try:
        kube.apply(crd)
        established = kube.kubectl("wait", "--for=condition=Established", f"crd/{crd_name}",
                                   "--timeout=60s")
        assert established.returncode == 0, established.stderr
        kube.apply(widget)
        status = kube.kubectl("patch", f"widgets.{group}", "w1", "--subresource=status",
                              "--type=merge", "-p", '{"status":{"phase":"Ready"}}')
        assert status.returncode == 0, status.stderr
        w1 = kube.get(f"widgets.{group}", "w1")
        assert w1 is not None
        assert w1["status"] == {"phase": "Ready"}
        assert w1["metadata"]["generation"] == 1  # status writes do not bump the generation

        widget["spec"] = {"color": "red"}
        kube.apply(widget)
        w1 = kube.get(f"widgets.{group}", "w1")
        assert w1 is not None
        assert w1["spec"] == {"color": "red"}
        assert w1["status"] == {"phase": "Ready"}  # a spec apply leaves the status alone
        assert w1["metadata"]["generation"] == 2

        deleted = kube.kubectl("delete", "crd", crd_name, "--timeout=60s")
        assert deleted.returncode == 0, deleted.stderr
        resources = kube.kubectl("api-resources", f"--api-group={group}", "-o", "name")
        assert resources.stdout.strip() == ""
    finally:
        kube.kubectl("delete", "crd", crd_name, "--ignore-not-found", "--wait=false")


def test_status_of_a_rollout_is_kept_apart_from_spec(kube: KubeCluster) -> None:
    kube.apply(_deployment("web"))
    if kube.server is not None:  # nothing rolls out by itself in the emulator
        waiting = kube.kubectl("rollout", "status", "deployment/web", "--timeout=1s")
        assert waiting.returncode != 0
    kube.rolled_out("deployment", "web")
    web = kube.get("deployment", "web")
    assert web is not None
    assert web["status"]["observedGeneration"] == web["metadata"]["generation"] == 1
    assert web["status"]["updatedReplicas"] == 1

    kube.apply(_deployment("web", image="registry.k8s.io/pause:3.10"))
    web = kube.get("deployment", "web")
    assert web is not None
    assert web["metadata"]["generation"] == 2
    assert "observedGeneration" in web["status"]  # the apply did not wipe the status
    if kube.server is not None:
        assert web["status"]["observedGeneration"] == 1
        assert ("gitops-push-test", "Apply") in _managers(web)
        assert not any(e.get("subresource") for e in web["metadata"]["managedFields"]
                       if e["manager"] == "gitops-push-test")
    kube.rolled_out("deployment", "web")
    done = kube.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    assert done.returncode == 0, done.stderr
    assert "successfully rolled out" in done.stdout


def test_failed_rollout_is_reported_by_kubectl(kube: KubeCluster) -> None:
    stuck = _deployment("web")  # a real cluster gives up on it after two seconds
    stuck["spec"]["progressDeadlineSeconds"] = 2
    stuck["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {
        "exec": {"command": ["/does-not-exist"]}, "periodSeconds": 1}
    kube.apply(stuck)
    kube.rollout_failed("deployment", "web")
    result = kube.kubectl("rollout", "status", "deployment/web", "--timeout=5s")
    assert result.returncode != 0
    assert "exceeded its progress deadline" in result.stderr


def test_job_completion(kube: KubeCluster) -> None:
    kube.apply({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "once", "image": "busybox:1.36", "command": ["true"]}]}}},
    })
    kube.job_complete("once")
    waited = kube.kubectl("wait", "--for=condition=complete", "job/once", "--timeout=10s")
    assert waited.returncode == 0, waited.stderr


@pytest.mark.parametrize("kube_emulator_options", [{"auto_rollout": True}])
def test_auto_rollout(kube: KubeCluster) -> None:
    kube.apply(_deployment("web"))
    result = kube.kubectl("rollout", "status", "deployment/web", "--timeout=120s", timeout=180)
    assert result.returncode == 0, result.stderr
    assert "successfully rolled out" in result.stdout


def test_wrong_token_is_unauthorized(kube: KubeCluster) -> None:
    # only the wrong token: a real cluster would accept the admin's client certificate
    cfg = yaml.safe_load(kube.kubeconfig.read_text())
    cfg["users"][0]["user"] = {"token": "wrong"}
    wrong = kube.kubeconfig.with_name("wrong-token")
    wrong.write_text(yaml.safe_dump(cfg))
    cold = kube.kubectl(f"--kubeconfig={wrong}", "get", "configmaps")  # fails in discovery
    assert cold.returncode != 0
    assert "You must be logged in to the server" in cold.stderr
    assert kube.kubectl("get", "configmaps").returncode == 0  # warms the discovery cache
    warm = kube.kubectl(f"--kubeconfig={wrong}", "get", "configmaps")
    assert warm.returncode != 0
    assert "error: You must be logged in to the server (Unauthorized)" in warm.stderr


def test_denied_verb_is_forbidden(kube: KubeCluster) -> None:
    path, user = kube.identity_without("patch", "deployments", "apps",
                                       kube.kubeconfig.with_name("limited"))

    def as_limited(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return kube.kubectl(f"--kubeconfig={path}", *args, input=input)

    result = as_limited("apply", "--server-side", "-f", "-", input=_yaml(_deployment("web")))
    assert result.returncode != 0
    assert "forbidden" in result.stderr
    assert (f'User "{user}" cannot patch resource "deployments" in API group "apps" '
            f'in the namespace "{kube.namespace}"') in result.stderr
    allowed = as_limited("get", "deployments")
    assert allowed.returncode == 0, allowed.stderr
    can_patch = as_limited("auth", "can-i", "patch", "deployments")  # SelfSubjectAccessReview
    assert (can_patch.returncode, can_patch.stdout.split()[0]) == (1, "no")
    can_get = as_limited("auth", "can-i", "get", "deployments")
    assert (can_get.returncode, can_get.stdout.strip()) == (0, "yes")


def test_kubectl_kustomize_needs_no_server(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH")
    base = tmp_path / "base"
    base.mkdir()
    (base / "cm.yaml").write_text(_yaml(_cm("settings", {"a": "1"})))
    (base / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\nnamePrefix: prod-\ncommonLabels: {team: ops}\n")
    dead = tmp_path / "dead-kubeconfig"  # a cluster that cannot be reached
    dead.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x"}}]}))
    result = subprocess.run([kubectl, "--kubeconfig", str(dead), "kustomize", str(base)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    [doc] = list(yaml.safe_load_all(result.stdout))
    assert doc["metadata"]["name"] == "prod-settings"
    assert doc["metadata"]["labels"] == {"team": "ops"}


def test_python_client_reads_a_deployment(kube: KubeCluster) -> None:
    from kubernetes import client, config

    kube.apply(_deployment("web", replicas=2))
    cfg = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kube.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        web: Any = client.AppsV1Api(api).read_namespaced_deployment("web", kube.namespace)
        assert web.spec.replicas == 2
        assert web.spec.template.spec.containers[0].image == PAUSE
        assert web.metadata.managed_fields[0].manager == "gitops-push-test"  # Apply sorts first
        with pytest.raises(client.ApiException) as err:
            client.CoreV1Api(api).read_namespaced_config_map("missing", kube.namespace)
        assert err.value.status == 404


# --------------------------------------------------------------------------- emulator internals


def _call(server: KubeApiServer, method: str, path: str, body: Any = None,
          ctype: str = "application/json", **query: str) -> Response:
    data = b"" if body is None else json.dumps(body).encode()
    headers = {"content-type": ctype, "user-agent": "unit/1.0"}
    if server.token:
        headers["authorization"] = f"Bearer {server.token}"
    result = server.handle(Request(method, path, dict(query), headers, data))
    assert isinstance(result, Response)
    return result


def _apply(server: KubeApiServer, path: str, body: dict[str, Any], manager: str,
           **query: str) -> Response:
    return _call(server, "PATCH", path, body, "application/apply-patch+yaml",
                 fieldManager=manager, **query)


CM_PATH = "/api/v1/namespaces/default/configmaps"


def test_conflict_status_body_is_realistic() -> None:
    server = KubeApiServer()
    assert _apply(server, f"{CM_PATH}/c", _cm("c", {"a": "1"}), "first").code == 201
    result = _apply(server, f"{CM_PATH}/c", _cm("c", {"a": "2"}), "second")
    assert result.code == 409
    assert result.body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'Apply failed with 1 conflict: conflict with "first" using v1: .data.a',
        "reason": "Conflict",
        "details": {"causes": [{"reason": "FieldManagerConflict",
                                "message": 'conflict with "first" using v1',
                                "field": ".data.a"}]},
        "code": 409,
    }
    _apply(server, f"{CM_PATH}/c", _cm("c", {"a": "1", "b": "1"}), "first")
    two = _apply(server, f"{CM_PATH}/c", _cm("c", {"a": "2", "b": "2"}), "second")
    assert two.code == 409
    assert two.body["message"] == (
        'Apply failed with 2 conflicts: conflicts with "first" using v1:\n- .data.a\n- .data.b')
    forced = _apply(server, f"{CM_PATH}/c", _cm("c", {"a": "2"}), "second", force="true")
    assert forced.code == 200
    assert forced.body["data"] == {"a": "2", "b": "1"}
    owners = {e["manager"]: e["fieldsV1"] for e in forced.body["metadata"]["managedFields"]}
    assert owners == {"first": {"f:data": {"f:b": {}}}, "second": {"f:data": {"f:a": {}}}}


def test_error_bodies() -> None:
    server = KubeApiServer(token="t", user="system:serviceaccount:ci:deployer")
    missing = _call(server, "GET", f"{CM_PATH}/nope")
    assert missing.code == 404
    assert missing.body["reason"] == "NotFound"
    assert missing.body["message"] == 'configmaps "nope" not found'
    assert missing.body["details"] == {"name": "nope", "kind": "configmaps"}

    no_ns = _apply(server, "/apis/apps/v1/namespaces/ghost/deployments/web",
                   _deployment("web"), "m")
    assert no_ns.code == 404
    assert no_ns.body["message"] == 'namespaces "ghost" not found'

    nameless = _call(server, "POST", CM_PATH, {"apiVersion": "v1", "kind": "ConfigMap",
                                               "metadata": {}})
    assert nameless.code == 422
    assert nameless.body["reason"] == "Invalid"
    assert "metadata.name: Required value" in nameless.body["message"]
    kindless = _apply(server, f"{CM_PATH}/x", {"metadata": {"name": "x"}}, "m")
    assert kindless.code == 422

    assert _call(server, "POST", CM_PATH, _cm("dup", {})).code == 201
    dup = _call(server, "POST", CM_PATH, _cm("dup", {}))
    assert dup.code == 409
    assert dup.body["reason"] == "AlreadyExists"

    server.token = "other"
    assert server.handle(Request("GET", "/api", {}, {})).code == 401  # type: ignore[union-attr]
    server.token = "t"
    server.deny("*", "configmaps", None)
    denied = _call(server, "GET", f"{CM_PATH}/dup")
    assert denied.code == 403
    assert denied.body["message"] == (
        'configmaps "dup" is forbidden: User "system:serviceaccount:ci:deployer" cannot get '
        'resource "configmaps" in API group "" in the namespace "default"')
    listed = _call(server, "GET", "/api/v1/configmaps")
    assert listed.code == 403
    assert listed.body["message"].endswith("cannot list resource \"configmaps\" in API group "
                                           "\"\" at the cluster scope")


def test_generation_resource_version_and_dry_run() -> None:
    server = KubeApiServer()
    path = "/apis/apps/v1/namespaces/default/deployments/web"
    created = _apply(server, path, _deployment("web"), "m")
    assert created.code == 201
    rv = created.body["metadata"]["resourceVersion"]
    same = _apply(server, path, _deployment("web"), "m")
    assert same.body["metadata"]["resourceVersion"] == rv

    dry = _apply(server, path, _deployment("web", image="x:2"), "m", dryRun="All")
    assert dry.body["metadata"]["generation"] == 2
    assert dry.body["spec"]["template"]["spec"]["containers"][0]["image"] == "x:2"
    stored = server.get_object("deployments.apps", "web")
    assert stored is not None
    assert stored["metadata"]["generation"] == 1
    assert stored["metadata"]["resourceVersion"] == rv

    server.mark_rolled_out("deployment", "web", "default")
    rolled = server.get_object("deployment", "web")
    assert rolled is not None
    assert rolled["metadata"]["generation"] == 1
    assert rolled["status"]["observedGeneration"] == 1
    status_entry = [e for e in rolled["metadata"]["managedFields"] if e.get("subresource")]
    assert status_entry[0]["manager"] == "kube-controller-manager"
    assert "f:observedGeneration" in status_entry[0]["fieldsV1"]["f:status"]

    # a status written through the main resource is ignored, and vice versa
    body = _deployment("web")
    body["status"] = {"observedGeneration": 99}
    _apply(server, path, body, "m")
    kept = server.get_object("deployment", "web")
    assert kept is not None
    assert kept["status"]["observedGeneration"] == 1
    patched = _call(server, "PATCH", f"{path}/status",
                    {"spec": {"replicas": 7}, "status": {"readyReplicas": 0}},
                    "application/merge-patch+json")
    assert patched.body["spec"]["replicas"] == 1
    assert patched.body["status"]["readyReplicas"] == 0


def test_patch_flavours_and_update_ownership() -> None:
    server = KubeApiServer()
    path = "/apis/apps/v1/namespaces/default/deployments/web"
    _apply(server, path, _deployment("web"), "applier")
    merge = _call(server, "PATCH", path, {"metadata": {"annotations": {"a": "1"}}},
                  "application/merge-patch+json", fieldManager="merger")
    assert merge.body["metadata"]["annotations"] == {"a": "1"}
    jsonp = _call(server, "PATCH", path,
                  [{"op": "replace", "path": "/spec/replicas", "value": 4},
                   {"op": "add", "path": "/metadata/labels/x", "value": "y"}],
                  "application/json-patch+json", fieldManager="jsonpatcher")
    assert jsonp.body["spec"]["replicas"] == 4
    strategic = _call(server, "PATCH", path, {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "image": "side:1"}]}}}}, "application/strategic-merge-patch+json")
    names = [c["name"] for c in strategic.body["spec"]["template"]["spec"]["containers"]]
    assert names == ["web", "side"]
    entries = {e["manager"]: e for e in strategic.body["metadata"]["managedFields"]}
    assert entries["jsonpatcher"]["fieldsV1"]["f:spec"] == {"f:replicas": {}}
    assert "f:replicas" not in entries["applier"]["fieldsV1"]["f:spec"]  # taken over
    assert entries["unit"]["operation"] == "Update"  # manager from the User-Agent
    deleted = _call(server, "PATCH", path, {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "$patch": "delete"}]}}}}, "application/strategic-merge-patch+json")
    assert [c["name"] for c in deleted.body["spec"]["template"]["spec"]["containers"]] == ["web"]

    put = dict(deleted.body)
    put["metadata"] = dict(put["metadata"], resourceVersion="1")
    stale = _call(server, "PUT", path, put)
    assert stale.code == 409
    assert "the object has been modified" in stale.body["message"]


def test_field_sets_round_trip() -> None:
    obj = _deployment("web")
    obj["metadata"]["finalizers"] = ["example.com/keep"]
    paths = set(flatten_fields(obj, "main"))
    tree = fields_to_v1(paths)
    assert tree["f:metadata"]["f:finalizers"] == {'v:"example.com/keep"': {}}
    spec = tree["f:spec"]["f:template"]["f:spec"]
    assert spec["f:containers"]['k:{"name":"web"}']["f:ports"][
        'k:{"containerPort":8080,"protocol":"TCP"}'] == {".": {}, "f:containerPort": {}}
    assert fields_from_v1(tree) == paths


def test_watch_sees_changes() -> None:
    server = KubeApiServer()
    _call(server, "POST", CM_PATH, _cm("w", {"a": "1"}, {"app": "x"}))
    listed = _call(server, "GET", CM_PATH, labelSelector="app=x")
    rv = listed.body["metadata"]["resourceVersion"]
    watch = server.handle(Request("GET", CM_PATH, {"watch": "true", "resourceVersion": rv,
                                                   "labelSelector": "app=x",
                                                   "timeoutSeconds": "1"}, {}))
    assert not isinstance(watch, Response)
    _call(server, "PATCH", f"{CM_PATH}/w", {"data": {"a": "2"}}, "application/merge-patch+json")
    _call(server, "POST", CM_PATH, _cm("other", {}))  # filtered out by the selector
    _call(server, "DELETE", f"{CM_PATH}/w")
    events: list[tuple[str, str]] = []
    for event in server.watch_events(watch, lambda: len(events) < 2):
        events.append((event["type"], event["object"]["data"].get("a")))
    assert events == [("MODIFIED", "2"), ("DELETED", "2")]


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    sock.settimeout(5)
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_server_stops_cleanly_with_open_connections() -> None:
    before = set(threading.enumerate())
    server = KubeApiServer().start()
    idle = socket.create_connection(("127.0.0.1", server.port))
    idle.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"gitVersion" in _read_until(idle, b"gitVersion")  # keep-alive: handler waits on
    watcher = socket.create_connection(("127.0.0.1", server.port))
    watcher.sendall(b"GET /api/v1/configmaps?watch=true HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in _read_until(watcher, b"\r\n\r\n")
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 5
    idle.close()
    watcher.close()
    leftover = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert leftover == []
