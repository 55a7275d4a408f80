"""The kubernetes engine: settings, offline lint, and plan/apply/drift with real kubectl.

Integration tests use the ``kube`` fixture: the API server emulator by default, a real
cluster when GITOPS_PUSH_TEST_KUBECONFIG is set (the same tests, the same assertions).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_push import config
from gitops_push.config import Stack
from gitops_push.engines import kubernetes as k8s
from gitops_push.engines._k8s_kubectl import conflicts, explain, kubeconfig_secrets
from gitops_push.engines._k8s_objects import changed_paths
from gitops_push.engines._k8s_wait import deployment_status, job_status
from gitops_push.engines.base import EngineContext, LintResult, PlanResult
from gitops_push.errors import ConfigError, GitopsPushError, ToolError, UserError

pytest_plugins = ["fixtures_kube"]

LABEL = "gitops-push.io/stack"
PAUSE = "registry.k8s.io/pause:3.10"


# -- helpers ------------------------------------------------------------------------

def stack_settings(text: str) -> k8s.KubernetesSettings:
    """Parse ``kubernetes:`` settings the way config.py does (errors name the file:line)."""
    body = "".join(f"      {line}\n" for line in text.splitlines())
    cfg = config.parse("version: 1\nstacks:\n  - name: web\n    path: k8s\n"
                       "    type: kubernetes\n    kubernetes:\n" + body)
    settings = cfg.stacks[0].stack.settings
    assert isinstance(settings, k8s.KubernetesSettings)
    return settings


def deployment(name: str = "web", *, replicas: int | None = 1, image: str = PAUSE,
               **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "app", "image": image}]}},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    spec.update(extra)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": spec}


def configmap(name: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": data if data is not None else {"key": "value"}}


def docs(*objs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(list(objs), sort_keys=False)


@dataclass
class Deployer:
    """One stack in a temporary repository, run through the engine like the runner does."""

    root: Path
    env: dict[str, str]
    name: str = "web"
    path: str = "k8s"
    settings_text: str = ""
    lines: list[str] = field(default_factory=list)
    force_conflicts: bool = False
    on_line_hook: Callable[[str], None] | None = None
    engine: k8s.KubernetesEngine = field(default_factory=k8s.KubernetesEngine)

    def write(self, files: dict[str, str | None]) -> None:
        for rel, text in files.items():
            p = self.root / "repo" / self.path / rel
            if text is None:
                p.unlink()
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)

    @property
    def stack(self) -> Stack:
        return Stack(self.name, self.path, "kubernetes",
                     settings=stack_settings(self.settings_text or "prune: true"))

    def ctx(self, phase: str = "plan") -> EngineContext:
        def on_line(line: str) -> None:
            self.lines.append(line)
            if self.on_line_hook is not None:
                self.on_line_hook(line)

        work = self.root / "work" / self.name
        work.mkdir(parents=True, exist_ok=True)
        return EngineContext(repo_root=self.root / "repo", stack_dir=self.root / "repo" / self.path,
                             env=self.env, phase=phase, work_dir=work, on_line=on_line,
                             force_conflicts=self.force_conflicts)

    def lint(self) -> LintResult:
        return self.engine.lint(self.stack, self.ctx("plan"))

    def plan(self, destroy: bool = False) -> PlanResult:
        return self.engine.plan(self.stack, self.ctx("plan"), destroy=destroy)

    def apply(self) -> tuple[PlanResult, Any]:
        """Plan in one "job", load the saved plan and apply it in another (like CI)."""
        self.plan()
        ctx = self.ctx("apply")
        loaded = self.engine.load_plan(self.stack, ctx, ctx.work_dir)
        return loaded, k8s.KubernetesEngine().apply(self.stack, ctx, loaded)

    def drift(self) -> Any:
        return self.engine.drift(self.stack, self.ctx("drift"))


def base_env() -> dict[str, str]:
    return {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}


@pytest.fixture
def offline(tmp_path: Path) -> Deployer:
    return Deployer(tmp_path, base_env())


@pytest.fixture
def deployer(tmp_path: Path, kube: Any) -> Deployer:
    d = Deployer(tmp_path, {**base_env(), **kube.env})
    d.settings_text = f"context: {kube.context}\nnamespace: {kube.namespace}\ntimeout: 20s\n"
    return d


def actions(plan: PlanResult) -> dict[str, str]:
    return {c.address: c.action for c in plan.changes}


def fields(plan: PlanResult, address: str) -> tuple[str, ...]:
    return next(c.fields for c in plan.changes if c.address == address)


# -- apply, plan, prune ---------------------------------------------------------------

def test_first_apply_creates_labelled_objects_and_an_inventory(deployer: Deployer, kube: Any
                                                               ) -> None:
    deployer.settings_text += "wait: false\n"
    deployer.write({"app.yaml": docs(configmap("cfg"), deployment("web"))})
    ns = kube.namespace
    plan, result = deployer.apply()
    assert actions(plan) == {f"ConfigMap/{ns}/cfg": "create",
                             f"Deployment.apps/{ns}/web": "create"}
    assert result.counts.add == 2
    for kind, name in (("configmap", "cfg"), ("deployment", "web")):
        live = kube.get(kind, name)
        assert live is not None and live["metadata"]["labels"][LABEL] == "web"
    inventory = kube.get("configmap", "gitops-push-inventory-web")
    assert inventory is not None
    refs = json.loads(inventory["data"]["objects"])
    assert {(r["kind"], r["name"]) for r in refs} == {("ConfigMap", "cfg"), ("Deployment", "web")}
    again = deployer.plan()
    assert not again.has_changes, again.changes
    assert set(actions(again).values()) == {"no-op"}


def test_a_changed_field_is_planned_with_its_path_and_applied(deployer: Deployer, kube: Any
                                                              ) -> None:
    deployer.settings_text += "wait: false\n"
    deployer.write({"app.yaml": docs(configmap("cfg", {"a": "1"}), deployment("web"))})
    deployer.apply()
    deployer.write({"app.yaml": docs(configmap("cfg", {"a": "2"}),
                                     deployment("web", image="registry.k8s.io/pause:3.9"))})
    ns = kube.namespace
    plan = deployer.plan()
    assert actions(plan) == {f"ConfigMap/{ns}/cfg": "update",
                             f"Deployment.apps/{ns}/web": "update"}
    assert fields(plan, f"ConfigMap/{ns}/cfg") == ("data.a",)
    assert fields(plan, f"Deployment.apps/{ns}/web") == (
        "spec.template.spec.containers[name=app].image",)
    deployer.apply()
    assert kube.get("configmap", "cfg")["data"] == {"a": "2"}
    live = kube.get("deployment", "web")
    assert live["spec"]["template"]["spec"]["containers"][0]["image"].endswith("pause:3.9")
    assert not deployer.plan().has_changes


def test_an_object_removed_from_git_is_pruned_and_unrelated_objects_are_untouched(
        deployer: Deployer, kube: Any) -> None:
    deployer.settings_text += "wait: false\n"
    deployer.write({"a.yaml": docs(configmap("keep")), "b.yaml": docs(configmap("gone"))})
    deployer.apply()
    kube.apply(configmap("unrelated"))  # same namespace, never applied by the stack
    stray = configmap("labelled-by-hand")  # carries the label but is not in the inventory
    stray["metadata"]["labels"] = {LABEL: "web"}
    kube.apply(stray)
    deployer.write({"b.yaml": None})
    ns = kube.namespace
    plan, result = deployer.apply()
    assert actions(plan) == {f"ConfigMap/{ns}/keep": "no-op", f"ConfigMap/{ns}/gone": "prune"}
    assert result.counts.destroy == 1
    assert kube.get("configmap", "gone") is None
    assert kube.get("configmap", "keep") is not None
    assert kube.get("configmap", "unrelated") is not None
    assert kube.get("configmap", "labelled-by-hand") is not None
    inventory = json.loads(kube.get("configmap", "gitops-push-inventory-web")["data"]["objects"])
    assert [r["name"] for r in inventory] == ["keep"]


def test_an_object_that_lost_the_stack_label_is_not_pruned(deployer: Deployer, kube: Any
                                                           ) -> None:
    deployer.write({"a.yaml": docs(configmap("adopted"), configmap("keep"))})
    deployer.apply()
    kube.kubectl("label", "configmap", "adopted", f"{LABEL}-", check=True)
    deployer.write({"a.yaml": docs(configmap("keep"))})
    plan, _ = deployer.apply()
    assert f"ConfigMap/{kube.namespace}/adopted" not in actions(plan)
    assert kube.get("configmap", "adopted") is not None


def test_prune_false_leaves_removed_objects(deployer: Deployer, kube: Any) -> None:
    deployer.settings_text += "prune: false\n"
    deployer.write({"a.yaml": docs(configmap("a"), configmap("b"))})
    deployer.apply()
    deployer.write({"a.yaml": docs(configmap("a"))})
    plan = deployer.plan()
    assert not plan.has_changes
    assert any("prune: false" in n for n in plan.notes)


def test_a_kustomize_overlay_is_rendered_and_applied(deployer: Deployer, kube: Any) -> None:
    deployer.path = "k8s/overlays/prod"
    deployer.settings_text += "wait: false\n"
    base = "../../base"
    deployer.write({
        f"{base}/kustomization.yaml": "resources: [deploy.yaml, cm.yaml]\n",
        f"{base}/deploy.yaml": docs(deployment("web")),
        f"{base}/cm.yaml": docs(configmap("cfg", {"env": "base"})),
        "kustomization.yaml": ("resources: [../../base]\nnamePrefix: prod-\n"
                               "patches:\n- target: {kind: ConfigMap, name: cfg}\n"
                               "  patch: |\n    - op: replace\n      path: /data/env\n"
                               "      value: prod\n"),
    })
    assert deployer.lint().ok
    plan, _ = deployer.apply()
    ns = kube.namespace
    assert actions(plan) == {f"ConfigMap/{ns}/prod-cfg": "create",
                             f"Deployment.apps/{ns}/prod-web": "create"}
    assert kube.get("configmap", "prod-cfg")["data"] == {"env": "prod"}
    assert kube.get("deployment", "prod-web")["metadata"]["labels"][LABEL] == "web"


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.gitops-push.example.com"},
    "spec": {
        "group": "gitops-push.example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                  "listKind": "WidgetList"},
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
            "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                "type": "object", "properties": {"size": {"type": "integer"}}}}}}}],
    },
}


def widget(name: str, size: int) -> dict[str, Any]:
    return {"apiVersion": "gitops-push.example.com/v1", "kind": "Widget",
            "metadata": {"name": name}, "spec": {"size": size}}


def test_a_crd_and_its_custom_resource_apply_in_one_stack(deployer: Deployer, kube: Any
                                                          ) -> None:
    deployer.write({"crd.yaml": docs(CRD), "widget.yaml": docs(widget("w1", 3))})
    lint = deployer.lint()
    assert lint.ok
    assert any(d.severity == "note" and "Widget" in d.message for d in lint.diagnostics)
    try:
        plan, _ = deployer.apply()
        assert actions(plan) == {
            "CustomResourceDefinition.apiextensions.k8s.io/widgets.gitops-push.example.com":
                "create",
            f"Widget.gitops-push.example.com/{kube.namespace}/w1": "create"}
        assert kube.get("widgets.gitops-push.example.com", "w1")["spec"] == {"size": 3}
        deployer.write({"widget.yaml": docs(widget("w1", 4))})
        plan = deployer.plan()
        assert fields(plan, f"Widget.gitops-push.example.com/{kube.namespace}/w1") == (
            "spec.size",)
    finally:  # the CRD is cluster-wide: leave a real cluster as it was
        kube.kubectl("delete", "crd", CRD["metadata"]["name"], "--ignore-not-found")


# -- drift -----------------------------------------------------------------------------

def test_manual_edit_delete_and_extra_labelled_object_are_drift_and_apply_restores(
        deployer: Deployer, kube: Any) -> None:
    deployer.settings_text += "wait: false\n"
    deployer.write({"a.yaml": docs(configmap("edited", {"a": "1"}), configmap("deleted"),
                                   configmap("same"))})
    deployer.apply()
    assert not deployer.drift().drifted
    kube.kubectl("patch", "configmap", "edited", "--type=merge", "-p",
                 '{"data": {"a": "by-hand"}}', check=True)
    kube.kubectl("delete", "configmap", "deleted", check=True)
    extra = configmap("extra")
    extra["metadata"]["labels"] = {LABEL: "web"}
    kube.apply(extra)
    ns = kube.namespace
    drift = deployer.drift()
    items = {(i.address, i.kind): i.fields for i in drift.items}
    assert items == {(f"ConfigMap/{ns}/edited", "changed"): ("data.a",),
                     (f"ConfigMap/{ns}/deleted", "deleted"): (),
                     (f"ConfigMap/{ns}/extra", "extra"): ()}
    deployer.force_conflicts = True  # the hand edit took ownership of data.a
    deployer.apply()
    assert kube.get("configmap", "edited")["data"] == {"a": "1"}
    assert kube.get("configmap", "deleted") is not None
    assert [(i.address, i.kind) for i in deployer.drift().items] == [
        (f"ConfigMap/{ns}/extra", "extra")]


def test_ignore_differences_leaves_replicas_to_the_autoscaler(deployer: Deployer, kube: Any
                                                              ) -> None:
    deployer.settings_text += (
        "wait: false\nignore_differences:\n"
        "  - kind: Deployment\n    name: web\n    json_pointers: [/spec/replicas]\n")
    deployer.write({"app.yaml": docs(deployment("web", replicas=2))})
    deployer.apply()
    live = kube.get("deployment", "web")
    assert all("replicas" not in json.dumps(m.get("fieldsV1", {}))
               for m in live["metadata"]["managedFields"] if m["manager"] == "gitops-push")
    kube.kubectl("scale", "deployment", "web", "--replicas=5", check=True)
    assert not deployer.drift().drifted
    assert not deployer.plan().has_changes
    deployer.write({"app.yaml": docs(deployment("web", replicas=2, minReadySeconds=1))})
    deployer.apply()
    live = kube.get("deployment", "web")
    assert live["spec"]["replicas"] == 5
    assert live["spec"]["minReadySeconds"] == 1


# -- waiting for rollouts ---------------------------------------------------------------

@pytest.mark.parametrize("kube_emulator_options", [{"auto_rollout": True}])
def test_apply_waits_for_deployments_and_jobs(deployer: Deployer, kube: Any) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
           "spec": {"backoffLimit": 0, "template": {"spec": {
               "restartPolicy": "Never",
               "containers": [{"name": "true", "image": "busybox:1.36",
                               "command": ["true"]}]}}}}
    deployer.settings_text = deployer.settings_text.replace("20s", "150s")
    deployer.write({"app.yaml": docs(deployment("web"), job)})
    deployer.apply()
    ns = kube.namespace
    assert any(line.startswith(f"Deployment.apps/{ns}/web: rolled out") for line in deployer.lines)
    assert f"Job.batch/{ns}/migrate: complete" in deployer.lines


def test_a_failed_rollout_fails_the_stack_naming_the_condition(deployer: Deployer, kube: Any
                                                               ) -> None:
    kube.require_emulator("ProgressDeadlineExceeded cannot be forced on a real cluster")
    ns = kube.namespace

    def controller(line: str) -> None:
        if line.startswith(f"waiting for Deployment.apps/{ns}/web"):
            kube.rollout_failed("deployment", "web")

    deployer.on_line_hook = controller
    deployer.write({"app.yaml": docs(deployment("web"), configmap("cfg"))})
    with pytest.raises(ToolError) as info:
        deployer.apply()
    message = info.value.message
    assert message.startswith(f"stack 'web': Deployment.apps/{ns}/web: rollout failed: ")
    assert "Progressing=False ProgressDeadlineExceeded" in message


def test_a_rollout_that_never_finishes_times_out(deployer: Deployer, kube: Any) -> None:
    deployer.settings_text = deployer.settings_text.replace("20s", "2s")
    never_ready = deployment("web")  # real clusters: the readiness probe never passes
    never_ready["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {
        "exec": {"command": ["/does-not-exist"]}, "periodSeconds": 1}
    deployer.write({"app.yaml": docs(never_ready)})
    with pytest.raises(ToolError) as info:
        deployer.apply()
    assert info.value.message.startswith(
        f"stack 'web': Deployment.apps/{kube.namespace}/web: rollout did not finish within 2s")


# -- conflicts and errors ---------------------------------------------------------------

def test_a_field_owned_by_another_manager_is_a_clear_conflict_unless_forced(
        deployer: Deployer, kube: Any) -> None:
    kube.apply(configmap("cfg", {"a": "theirs"}), field_manager="someone-else")
    deployer.write({"cfg.yaml": docs(configmap("cfg", {"a": "ours"}))})
    with pytest.raises(ToolError) as info:
        deployer.plan()
    message = info.value.message
    assert message.startswith(f"stack 'web': ConfigMap/{kube.namespace}/cfg: conflict with "
                              "another field manager: ")
    assert '.data.a (owned by field manager "someone-else")' in message
    assert "--force-conflicts" in message
    deployer.force_conflicts = True
    deployer.apply()
    live = kube.get("configmap", "cfg")
    assert live["data"] == {"a": "ours"}
    owners = {m["manager"] for m in live["metadata"]["managedFields"]
              if "f:a" in json.dumps(m.get("fieldsV1", {}))}
    assert owners == {"gitops-push"}


def edited_kubeconfig(kube: Any, tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    cfg = yaml.safe_load(kube.kubeconfig.read_text())
    edit(cfg)
    path = tmp_path / "edited-kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_an_unreachable_server_is_one_clear_error(deployer: Deployer, kube: Any,
                                                  tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def edit(cfg: dict[str, Any]) -> None:
        cfg["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"

    path = edited_kubeconfig(kube, tmp_path, edit)
    deployer.settings_text = f"kubeconfig: {path}\nnamespace: {kube.namespace}\n"
    deployer.write({"cfg.yaml": docs(configmap("cfg"))})
    with pytest.raises(ToolError) as info:
        deployer.plan()
    assert info.value.message.startswith(
        f"stack 'web': cannot reach the Kubernetes API server at 127.0.0.1:{port}")


def test_rejected_credentials_and_a_missing_context_are_clear_errors(
        deployer: Deployer, kube: Any, tmp_path: Path) -> None:
    def edit(cfg: dict[str, Any]) -> None:
        cfg["users"][0]["user"] = {"token": "expired-token-0123456789"}

    path = edited_kubeconfig(kube, tmp_path, edit)
    deployer.env["EXPIRED_KUBECONFIG"] = str(path)
    deployer.settings_text = (f"kubeconfig_env: EXPIRED_KUBECONFIG\nnamespace: {kube.namespace}\n")
    deployer.write({"cfg.yaml": docs(configmap("cfg"))})
    with pytest.raises(ToolError) as info:
        deployer.plan()
    assert info.value.message.startswith(
        "stack 'web': the API server rejected the credentials (401 Unauthorized)")
    assert "expired-token-0123456789" not in str(info.value)

    deployer.settings_text = f"context: no-such-context\nnamespace: {kube.namespace}\n"
    with pytest.raises(ToolError) as info:
        deployer.plan()
    assert info.value.message == ("stack 'web': the kubeconfig has no such context "
                                  "(no-such-context)")

    deployer.settings_text = "kubeconfig_env: UNSET_KUBECONFIG\n"
    with pytest.raises(UserError, match="UNSET_KUBECONFIG, which is not set for the plan phase"):
        deployer.plan()


def test_forbidden_stops_the_stack_before_anything_is_applied(deployer: Deployer, kube: Any
                                                              ) -> None:
    server = kube.require_emulator("needs an identity without RBAC rights; deny() stands in")
    deployer.settings_text += "wait: false\n"
    deployer.write({"app.yaml": docs(configmap("cfg"), deployment("web"))})
    deployer.plan()
    ctx = deployer.ctx("apply")
    plan = deployer.engine.load_plan(deployer.stack, ctx, ctx.work_dir)
    server.deny("patch", "deployments", kube.namespace)
    with pytest.raises(ToolError) as info:
        deployer.engine.apply(deployer.stack, ctx, plan)
    assert info.value.message.startswith(
        f"stack 'web': Deployment.apps/{kube.namespace}/web: forbidden (403, RBAC): User ")
    assert 'cannot patch resource "deployments"' in info.value.message
    assert kube.get("configmap", "cfg") is None  # ordered first, yet never applied


def test_an_unknown_kind_and_an_invalid_object_name_the_object(deployer: Deployer, kube: Any
                                                               ) -> None:
    deployer.write({"w.yaml": docs(widget("w1", 1))})
    with pytest.raises(ToolError) as info:
        deployer.plan()
    assert info.value.message.startswith("stack 'web': Widget w1 (k8s/w.yaml:1): unknown kind "
                                         "Widget in gitops-push.example.com/v1")
    bad = json.loads(json.dumps(CRD))
    bad["metadata"]["name"] = "not-the-plural.example.com"
    deployer.write({"w.yaml": docs(bad, configmap("cfg"))})
    with pytest.raises(ToolError) as info:
        deployer.plan()
    assert info.value.message.startswith(
        "stack 'web': CustomResourceDefinition.apiextensions.k8s.io/not-the-plural.example.com:"
        " invalid object: ")
    assert kube.get("configmap", "cfg") is None
