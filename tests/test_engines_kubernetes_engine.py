"""The kubernetes engine: settings, offline lint, and plan/apply/drift with real kubectl.

Integration tests use the ``kube`` fixture: the API server emulator by default, a real
cluster when GITOPS_PUSH_TEST_KUBECONFIG is set (the same tests, the same assertions).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_push import config
from gitops_push.config import Stack
from gitops_push.config.schema import Section
from gitops_push.engines.base import EngineContext, LintResult, PlanResult
from gitops_push.engines.kubernetes import compare as k8s_compare
from gitops_push.engines.kubernetes import engine as k8s
from gitops_push.engines.kubernetes import saved as k8s_saved
from gitops_push.engines.kubernetes.access import conflicts, explain, kubeconfig_secrets
from gitops_push.engines.kubernetes.diff import changed_paths
from gitops_push.engines.kubernetes.wait import deployment_status, job_status
from gitops_push.errors import ConfigError, GitopsPushError, ToolError, UserError

LABEL = "gitops-push.io/stack"
PROJECT = "gitops-push.io/project"
INVENTORY = "gitops-push-inventory.team-a.web"  # the Deployer's project and stack
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
    project: str = "team-a"
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
                             extra={"project": self.project,
                                    "force_conflicts": self.force_conflicts})

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
    assert {(i.address, i.kind) for i in deployer.drift().items} == {
        (f"ConfigMap/{ns}/cfg", "config"), (f"Deployment.apps/{ns}/web", "config")}
    plan, result = deployer.apply()
    assert actions(plan) == {f"ConfigMap/{ns}/cfg": "create",
                             f"Deployment.apps/{ns}/web": "create"}
    assert result.counts.add == 2
    for kind, name in (("configmap", "cfg"), ("deployment", "web")):
        live = kube.get(kind, name)
        assert live is not None and live["metadata"]["labels"][LABEL] == "web"
    inventory = kube.get("configmap", INVENTORY)
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
    inventory = json.loads(kube.get("configmap", INVENTORY)["data"]["objects"])
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


# -- projects: one cluster, many repositories ----------------------------------------

def test_two_projects_with_a_stack_of_the_same_name_keep_their_objects(
        tmp_path: Path, kube: Any) -> None:
    """Found on a real API server: stack 'app' of a second repository pruned the first's."""
    env = {**base_env(), **kube.env}
    settings = f"context: {kube.context}\nnamespace: {kube.namespace}\nwait: false\n"
    a = Deployer(tmp_path / "a", env, name="app", project="team-a", settings_text=settings)
    b = Deployer(tmp_path / "b", env, name="app", project="team-b", settings_text=settings)
    a.write({"cm.yaml": docs(configmap("team-a-settings"))})
    b.write({"cm.yaml": docs(configmap("team-b-settings"))})
    ns = kube.namespace
    for d in (a, b, a, b):
        plan, _ = d.apply()
    for d, own in ((a, "team-a-settings"), (b, "team-b-settings")):
        plan = d.plan()
        assert actions(plan) == {f"ConfigMap/{ns}/{own}": "no-op"}
        assert not d.drift().drifted
    live = kube.get("configmap", "team-a-settings")
    assert live["metadata"]["labels"][PROJECT] == "team-a"
    assert kube.get("configmap", "team-b-settings")["metadata"]["labels"][PROJECT] == "team-b"
    assert kube.get("configmap", "gitops-push-inventory.team-b.app") is not None
    # b's stack loses its object: only b's is pruned
    b.write({"cm.yaml": docs(configmap("team-b-other"))})
    plan, _ = b.apply()
    assert actions(plan)[f"ConfigMap/{ns}/team-b-settings"] == "prune"
    assert kube.get("configmap", "team-a-settings") is not None
    assert kube.get("configmap", "team-b-settings") is None


def test_an_object_another_project_owns_stops_the_stack_naming_both_owners(
        tmp_path: Path, kube: Any) -> None:
    env = {**base_env(), **kube.env}
    settings = f"context: {kube.context}\nnamespace: {kube.namespace}\nwait: false\n"
    a = Deployer(tmp_path / "a", env, name="app", project="team-a", settings_text=settings)
    b = Deployer(tmp_path / "b", env, name="web", project="team-b", settings_text=settings)
    a.write({"cm.yaml": docs(configmap("shared", {"owner": "a"}))})
    b.write({"cm.yaml": docs(configmap("shared", {"owner": "b"}), configmap("mine"))})
    a.apply()
    for run in (b.plan, b.drift):
        with pytest.raises(UserError) as info:
            run()
        assert info.value.message == (
            f"stack 'web' of project 'team-b': ConfigMap/{kube.namespace}/shared belongs to "
            "stack 'app' of project 'team-a'. gitops-push never adopts, changes or prunes "
            "another project's objects: remove the object from one of them, or give both "
            "repositories the same project: key if they really are one project")
    assert kube.get("configmap", "shared")["data"] == {"owner": "a"}
    assert kube.get("configmap", "mine") is None


def test_a_stack_applied_before_projects_existed_migrates_its_inventory(
        deployer: Deployer, kube: Any) -> None:
    """An inventory and labels from before projects: adopted, then pruned from as before."""
    deployer.settings_text += "wait: false\n"
    ns = kube.namespace
    old = [configmap("keep"), configmap("gone")]
    for body in old:
        body["metadata"]["labels"] = {LABEL: "web"}
    kube.apply(old)
    refs = [{"group": "", "kind": "ConfigMap", "namespace": ns, "name": n}
            for n in ("gone", "keep")]
    legacy = configmap("gitops-push-inventory-web", {"objects": json.dumps(refs)})
    legacy["metadata"]["labels"] = {"gitops-push.io/inventory": "web"}
    kube.apply(legacy)
    deployer.write({"a.yaml": docs(configmap("keep"))})
    plan, _ = deployer.apply()
    assert actions(plan) == {f"ConfigMap/{ns}/keep": "update", f"ConfigMap/{ns}/gone": "prune"}
    assert kube.get("configmap", "gone") is None
    assert kube.get("configmap", "keep")["metadata"]["labels"][PROJECT] == "team-a"
    assert kube.get("configmap", "gitops-push-inventory-web") is None
    inventory = kube.get("configmap", INVENTORY)
    assert [r["name"] for r in json.loads(inventory["data"]["objects"])] == ["keep"]
    assert inventory["metadata"]["labels"][PROJECT] == "team-a"
    assert not deployer.plan().has_changes


def test_a_configmap_value_is_no_secret_and_never_masks_a_name(deployer: Deployer, kube: Any
                                                               ) -> None:
    """Found on a real API server: ConfigMap data was redacted like a Secret's, so the name
    ``team-a-settings`` (data ``owner: team-a``) came back as ``(sensitive)-settings``, a
    stray of the stack right after a successful apply."""
    deployer.settings_text += "wait: false\n"
    deployer.write({"cm.yaml": docs(configmap("team-a-settings", {"owner": "team-a"}))})
    deployer.apply()
    drift = deployer.drift()
    assert not drift.drifted, drift.items
    assert not deployer.plan().has_changes
    assert not any("(sensitive)" in line for line in deployer.lines)


def test_client_side_apply_works_too(deployer: Deployer, kube: Any) -> None:
    deployer.settings_text += "server_side: false\n"
    deployer.write({"a.yaml": docs(configmap("a", {"k": "1"}))})
    deployer.apply()
    assert kube.get("configmap", "a")["metadata"]["labels"][LABEL] == "web"
    assert not deployer.plan().has_changes
    deployer.write({"a.yaml": docs(configmap("a", {"k": "2"}))})
    assert fields(deployer.plan(), f"ConfigMap/{kube.namespace}/a") == ("data.k",)


def test_pruning_a_namespace_needs_consent_and_the_saved_plan_keeps_that(
        deployer: Deployer, kube: Any) -> None:
    ns = f"{kube.namespace}-extra"
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    deployer.settings_text += "wait: false\n"
    deployer.write({"a.yaml": docs(configmap("keep")), "ns.yaml": docs(namespace)})
    first, _ = deployer.apply()
    assert first.needs_consent == ()  # creating a Namespace needs none
    deployer.write({"ns.yaml": None})

    plan = deployer.plan()
    assert actions(plan)[f"Namespace/{ns}"] == "prune"
    assert plan.needs_consent == (f"pruning Namespace {ns} deletes everything in it, also "
                                  "objects gitops-push does not manage",)
    ctx = deployer.ctx("apply")
    assert deployer.engine.load_plan(deployer.stack, ctx, ctx.work_dir).needs_consent == \
        plan.needs_consent  # an apply job reading the saved plan refuses it as well


def test_prunes_that_cascade_need_consent_and_plain_ones_do_not() -> None:
    from gitops_push.engines.kubernetes.objects import ObjRef

    crd = ObjRef("apiextensions.k8s.io", "CustomResourceDefinition", "", "widgets.example.com")
    ns = ObjRef("", "Namespace", "", "team")
    cm = ObjRef("", "ConfigMap", "team", "web")
    assert k8s_compare.cascading_prunes([cm], destroy=False) == ()
    assert k8s_compare.cascading_prunes([cm, ns, crd], destroy=False) == (
        "pruning Namespace team deletes everything in it, also objects gitops-push does not "
        "manage",
        "pruning CustomResourceDefinition widgets.example.com deletes every custom resource "
        "of that kind in the cluster")
    # destroy has its own consent
    assert k8s_compare.cascading_prunes([ns, crd], destroy=True) == ()


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
    kube.kubectl("label", "configmap", "edited", "team=by-hand", check=True)
    kube.kubectl("delete", "configmap", "deleted", check=True)
    extra = configmap("extra")
    extra["metadata"]["labels"] = {LABEL: "web", PROJECT: "team-a"}
    kube.apply(extra)
    other = configmap("other-projects")  # the same stack name in another repository
    other["metadata"]["labels"] = {LABEL: "web", PROJECT: "team-b"}
    kube.apply(other)
    ns = kube.namespace
    drift = deployer.drift()
    items = {(i.address, i.kind): i.fields for i in drift.items}
    assert items == {(f"ConfigMap/{ns}/edited", "changed"): ("data.a",),
                     (f"ConfigMap/{ns}/deleted", "deleted"): (),
                     (f"ConfigMap/{ns}/extra", "extra"): ()}
    # git wins for the fields it declares: no --force-conflicts needed, and the plan says
    # what is taken back from whom (the hand edit made kubectl-patch a field manager)
    plan, _ = deployer.apply()
    assert f"ConfigMap/{ns}/edited: takes .data.a back from kubectl-patch" in plan.notes
    edited = kube.get("configmap", "edited")
    assert edited["data"] == {"a": "1"}
    assert edited["metadata"]["labels"]["team"] == "by-hand"  # not declared: left alone
    assert kube.get("configmap", "deleted") is not None
    assert [(i.address, i.kind) for i in deployer.drift().items] == [
        (f"ConfigMap/{ns}/extra", "extra")]
    assert not deployer.plan().notes


def test_conflicts_fail_stops_at_a_field_another_manager_owns(deployer: Deployer, kube: Any
                                                              ) -> None:
    deployer.settings_text += "wait: false\nconflicts: fail\n"
    deployer.write({"a.yaml": docs(configmap("cfg", {"a": "1"}))})
    deployer.apply()
    kube.kubectl("patch", "configmap", "cfg", "--type=merge", "-p", '{"data": {"a": "2"}}',
                 check=True)
    with pytest.raises(ToolError) as info:
        deployer.plan()
    assert info.value.message.startswith(f"stack 'web': ConfigMap/{kube.namespace}/cfg: "
                                         "conflict with another field manager: ")
    assert '.data.a (owned by field manager "kubectl-patch")' in info.value.message
    assert "conflicts: fail" in info.value.message
    assert kube.get("configmap", "cfg")["data"] == {"a": "2"}
    deployer.force_conflicts = True  # the strict stack still takes over when told to
    plan, _ = deployer.apply()
    assert f"ConfigMap/{kube.namespace}/cfg: takes .data.a back from kubectl-patch" in plan.notes
    assert kube.get("configmap", "cfg")["data"] == {"a": "1"}


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
    """On a real cluster the Deployment's pod never becomes Ready (its readiness probe
    fails) and the real controller gives up after progressDeadlineSeconds."""
    ns = kube.namespace

    def controller(line: str) -> None:
        if kube.emulated and line.startswith(f"waiting for Deployment.apps/{ns}/web"):
            kube.rollout_failed("deployment", "web")

    deployer.on_line_hook = controller
    stuck = deployment("web", progressDeadlineSeconds=2)
    stuck["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {
        "exec": {"command": ["/does-not-exist"]}, "periodSeconds": 1}
    deployer.settings_text = deployer.settings_text.replace("20s", "90s")
    deployer.write({"app.yaml": docs(stuck, configmap("cfg"))})
    with pytest.raises(ToolError) as info:
        deployer.apply()
    message = info.value.message
    assert message.startswith(f"stack 'web': Deployment.apps/{ns}/web: rollout failed: ")
    assert "Progressing=False ProgressDeadlineExceeded" in message


def test_a_job_whose_command_fails_fails_the_stack(deployer: Deployer, kube: Any) -> None:
    """On a real control plane without nodes the node stand-in fails the pod (its command is
    ``false``) and the real Job controller marks the Job Failed; the emulator is told."""
    ns = kube.namespace
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
           "spec": {"backoffLimit": 0, "template": {"spec": {
               "restartPolicy": "Never",
               "containers": [{"name": "false", "image": "busybox:1.36",
                               "command": ["false"]}]}}}}

    def controller(line: str) -> None:
        if kube.emulated and line.startswith(f"waiting for Job.batch/{ns}/migrate"):
            kube.job_failed("migrate")

    deployer.on_line_hook = controller
    deployer.settings_text = deployer.settings_text.replace("20s", "150s")
    deployer.write({"job.yaml": docs(job)})
    with pytest.raises(ToolError) as info:
        deployer.apply()
    # a real Job controller (1.31+) sets FailureTarget before Failed; either ends the wait
    assert info.value.message.startswith(f"stack 'web': Job.batch/{ns}/migrate: rollout failed: ")
    assert "=True BackoffLimitExceeded" in info.value.message


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

def test_a_field_owned_by_another_manager_is_taken_over_and_named(
        deployer: Deployer, kube: Any) -> None:
    kube.apply(configmap("cfg", {"a": "theirs", "b": "theirs"}), field_manager="someone-else")
    deployer.write({"cfg.yaml": docs(configmap("cfg", {"a": "ours"}))})
    plan = deployer.plan()
    assert plan.notes == (f"ConfigMap/{kube.namespace}/cfg: takes .data.a back from "
                          "someone-else",)
    deployer.apply()
    live = kube.get("configmap", "cfg")
    assert live["data"] == {"a": "ours", "b": "theirs"}  # b is not git's: left alone
    owners = {m["manager"] for m in live["metadata"]["managedFields"]
              if '"f:a"' in json.dumps(m.get("fieldsV1", {}))}
    assert owners == {"gitops-push"}
    deployer.settings_text += "conflicts: fail\n"
    kube.apply(configmap("cfg", {"a": "theirs"}), field_manager="someone-else", force=True)
    with pytest.raises(ToolError) as info:
        deployer.plan()
    message = info.value.message
    assert message.startswith(f"stack 'web': ConfigMap/{kube.namespace}/cfg: conflict with "
                              "another field manager: ")
    assert '.data.a (owned by field manager "someone-else")' in message
    assert "--force-conflicts" in message


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
    deployer.settings_text += "wait: false\n"
    deployer.write({"app.yaml": docs(configmap("cfg"), deployment("web"))})
    deployer.plan()
    limited, user = kube.identity_without("patch", "deployments", "apps",
                                          deployer.root / "limited-kubeconfig")
    deployer.env["KUBECONFIG"] = str(limited)  # the apply job's identity
    ctx = deployer.ctx("apply")
    plan = deployer.engine.load_plan(deployer.stack, ctx, ctx.work_dir)
    with pytest.raises(ToolError) as info:
        deployer.engine.apply(deployer.stack, ctx, plan)
    assert info.value.message.startswith(
        f"stack 'web': Deployment.apps/{kube.namespace}/web: forbidden (403, RBAC): "
        f'User "{user}" ')
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


# -- secrets never leak -----------------------------------------------------------------

PASSWORD = "hunter2-correct-horse"
TOKEN = "tok-3f9a-very-secret"


def secret(password: str = PASSWORD) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
            "type": "Opaque", "stringData": {"password": password},
            "data": {"token": base64.b64encode(TOKEN.encode()).decode()}}


def test_secret_values_never_appear_in_results_lines_errors_or_plan_files(
        deployer: Deployer, kube: Any) -> None:
    deployer.write({"s.yaml": docs(secret(), configmap("cfg"))})
    seen: list[str] = [repr(deployer.lint())]
    plan, applied = deployer.apply()
    seen += [repr(plan), repr(applied), repr(deployer.drift())]
    live = kube.get("secret", "db")
    assert live is not None and live["metadata"]["labels"][LABEL] == "web"
    deployer.write({"s.yaml": docs(secret("a-new-password-456"), configmap("cfg"))})
    changed = deployer.plan()
    seen.append(repr(changed))
    assert actions(changed)[f"Secret/{kube.namespace}/db"] == "update"
    deployer.write({"s.yaml": docs(secret("a-new-password-456"), widget("w", 1))})
    with pytest.raises(GitopsPushError) as info:  # an error with the Secret in the batch
        deployer.plan()
    seen.append(str(info.value))
    seen += deployer.lines
    seen += [p.read_text() for p in (deployer.root / "work").rglob("*") if p.is_file()]
    everything = "\n".join(seen)
    for value in (PASSWORD, TOKEN, "a-new-password-456"):
        assert value not in everything
        assert base64.b64encode(value.encode()).decode() not in everything
    assert "(sensitive)" in (deployer.root / "work" / "web" / k8s_saved.MANIFESTS_FILE).read_text()


def test_apply_refuses_a_plan_whose_secret_changed_since(deployer: Deployer, kube: Any) -> None:
    deployer.write({"s.yaml": docs(secret())})
    deployer.plan()
    deployer.write({"s.yaml": docs(secret("changed-after-plan"))})
    ctx = deployer.ctx("apply")
    plan = deployer.engine.load_plan(deployer.stack, ctx, ctx.work_dir)
    with pytest.raises(UserError, match=r"plan is stale: Secret/.*/db changed"):
        deployer.engine.apply(deployer.stack, ctx, plan)
    assert kube.get("secret", "db") is None


def test_kubeconfig_tokens_and_keys_are_redacted_from_kubectl_output(
        deployer: Deployer, kube: Any) -> None:
    from gitops_push.engines.kubernetes.access import resolve_access
    from gitops_push.engines.kubernetes.kubectl import Kubectl

    ctx = deployer.ctx()
    access = resolve_access(kubeconfig=str(kube.kubeconfig), kubeconfig_env=None, context=None,
                            ctx=ctx, stack="web")
    raw = kube.kubeconfig.read_text()
    result = Kubectl(access, ctx, "web", field_manager="x", server_side=True).run(
        "config", "view", "--raw", stream=True)
    cfg = yaml.safe_load(raw)
    token = cfg["users"][0]["user"].get("token")
    if token:
        assert token in raw and token not in result.stdout + "\n".join(deployer.lines)
    key = cfg["users"][0]["user"].get("client-key-data")
    if key:
        assert key not in result.stdout + "\n".join(deployer.lines)


def test_kubeconfig_secrets_cover_tokens_passwords_and_client_keys(tmp_path: Path) -> None:
    pem = ("-----BEGIN EC PRIVATE KEY-----\n"
           "MHcCAQEEIAbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefgh\n"
           "-----END EC PRIVATE KEY-----\n")
    (tmp_path / "token").write_text("file-token-abcdef\n")
    (tmp_path / "config").write_text(yaml.safe_dump({"users": [
        {"name": "a", "user": {"token": "bearer-123456"}},
        {"name": "b", "user": {"username": "u", "password": "pw-123456"}},
        {"name": "c", "user": {"client-key-data": base64.b64encode(pem.encode()).decode()}},
        {"name": "d", "user": {"tokenFile": "token"}},
        {"name": "e", "user": {"auth-provider": {"config": {"id-token": "idt-123456",
                                                            "client-id": "public"}}}},
    ]}))
    found = kubeconfig_secrets(tmp_path / "config")
    for value in ("bearer-123456", "pw-123456", "file-token-abcdef", "idt-123456",
                  "MHcCAQEEIAbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefgh", pem.strip()):
        assert value in found
    assert "public" not in found


# -- settings ----------------------------------------------------------------------------

def test_settings_defaults() -> None:
    s = k8s.parse_settings(Section(None, "gitops-push.yaml", "kubernetes"))
    assert s == k8s.KubernetesSettings()
    assert (s.prune, s.wait, s.server_side, s.timeout, s.field_manager) == (
        True, True, True, 300.0, "gitops-push")
    assert k8s.env_names(s) == ("KUBECONFIG", "KUBECACHEDIR", "KUBERNETES_SERVICE_HOST",
                                "KUBERNETES_SERVICE_PORT")


def test_settings_are_read_with_every_key() -> None:
    s = stack_settings(
        "kubeconfig_env: KUBE_PROD\ncontext: prod\nnamespace: web\n"
        "inventory_namespace: gitops\nprune: false\nwait: false\ntimeout: 5m\n"
        "server_side: false\nfield_manager: ci-deployer\nenv: [AWS_PROFILE]\n"
        "kubernetes_version: '1.30'\nignore_differences:\n"
        "  - kind: Deployment\n    namespace: web\n    json_pointers: [/spec/replicas]\n")
    assert s.kubeconfig_env == "KUBE_PROD" and s.context == "prod"
    assert (s.namespace, s.inventory_namespace) == ("web", "gitops")
    assert (s.prune, s.wait, s.server_side, s.timeout) == (False, False, False, 300.0)
    assert s.field_manager == "ci-deployer" and s.kubernetes_version == "1.30"
    assert s.ignore_differences == (k8s.IgnoreRule("Deployment", ("/spec/replicas",),
                                                   namespace="web"),)
    assert k8s.env_names(s)[-2:] == ("KUBE_PROD", "AWS_PROFILE")


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("prun: false", 7, "unknown key 'prun' (did you mean 'prune'?)"),
    ("timeout: soon", 7, "timeout: must be a duration like 90s"),
    ("timeout: 0s", 7, "timeout: must be greater than zero"),
    ("kubeconfig: a\nkubeconfig_env: B", 8, "set either kubeconfig or kubeconfig_env"),
    ("kubeconfig_env: 'not a name'", 7, "does not match"),
    ("namespace: Not_Valid", 7, "namespace: 'Not_Valid' does not match"),
    ("wait: maybe", 7, "wait: must be true or false"),
    ("ignore_differences: {kind: Deployment}", 7, "must be a list"),
    ("ignore_differences:\n  - kind: Deployment\n    json_pointers: [spec/replicas]", 9,
     "must start with '/'"),
    ("ignore_differences:\n  - kind: Deployment\n    json_pointers: [/metadata/name]", 9,
     "names the object itself"),
    ("ignore_differences:\n  - kind: Deployment\n    pointers: [/spec]", 9,
     "unknown key 'pointers'"),
    ("ignore_differences:\n  - json_pointers: [/spec]", 8, "missing required key 'kind'"),
    ("kubernetes_version: latest", 7, "does not match"),
])
def test_settings_errors_name_the_file_and_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        stack_settings(text)
    assert info.value.path == f"gitops-push.yaml:{line}"
    assert fragment in info.value.message


# -- lint (offline: no cluster) -------------------------------------------------------------

def diagnostics(result: LintResult) -> list[tuple[str, str | None, str]]:
    return [(d.severity, d.location, d.message) for d in result.diagnostics]


def test_a_valid_directory_lints_clean_including_json_and_lists(offline: Deployer) -> None:
    offline.write({
        "a.yaml": docs(configmap("a"), deployment("web")),
        "sub/b.json": json.dumps({"apiVersion": "v1", "kind": "List",
                                  "items": [configmap("b")]}, indent="\t"),
        ".hidden/ignored.yaml": "not: [valid",
        "README.md": "# not a manifest",
    })
    result = offline.lint()
    assert result.ok and diagnostics(result) == []


def test_lint_reports_missing_fields_with_file_and_line(offline: Deployer) -> None:
    offline.write({"a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n---\n"
                             "apiVersion: v1\nmetadata:\n  name: no-kind\n---\n"
                             "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {}\n"})
    result = offline.lint()
    assert not result.ok
    assert diagnostics(result) == [
        ("error", "k8s/a.yaml:6", "missing 'kind' (every object needs apiVersion, kind and "
                                  "metadata.name)"),
        ("error", "k8s/a.yaml:12", "missing 'metadata.name'"),
    ]


def test_lint_checks_built_in_kinds_against_their_schema(offline: Deployer) -> None:
    offline.write({"d.yaml": (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n"
        "  replicas: three\n  selector: {matchLabels: {app: web}}\n  template:\n"
        "    metadata: {labels: {app: web}}\n    spec:\n      containers:\n"
        "        - name: app\n          image: nginx\n          imagePullPolcy: Always\n"
        "---\napiVersion: extensions/v1beta1\nkind: Deployment\nmetadata:\n  name: old\n")})
    got = diagnostics(offline.lint())
    assert ("error", "k8s/d.yaml:6",
            "Deployment web: spec.replicas: 'three' is not of type 'integer', 'null'") in got
    assert ("error", "k8s/d.yaml:14", "Deployment web: spec.template.spec.containers[0]: "
                                      "unknown field 'imagePullPolcy'") in got
    assert ("error", "k8s/d.yaml:17", "Deployment old: Kubernetes 1.32 has no kind "
                                      "'Deployment' in extensions/v1beta1 (removed or "
                                      "misspelt?)") in got


def test_lint_flags_an_object_defined_twice_at_both_locations(offline: Deployer) -> None:
    offline.write({"a.yaml": docs(configmap("cfg")),
                   "b.yaml": "# same object, namespace spelt out\n" + docs(
                       {**configmap("cfg"), "metadata": {"name": "cfg", "namespace": "default"}})})
    got = diagnostics(offline.lint())
    assert got == [("error", "k8s/b.yaml:2", "ConfigMap/default/cfg is defined twice: at "
                                             "k8s/a.yaml:1 and at k8s/b.yaml:2")]


def test_lint_warns_about_plain_secrets_without_showing_values(offline: Deployer) -> None:
    offline.write({"s.yaml": docs(secret())})
    result = offline.lint()
    assert result.ok
    [(severity, where, message)] = diagnostics(result)
    assert (severity, where) == ("warning", "k8s/s.yaml:6")
    assert "plain Secret with literal data and stringData" in message
    assert "SOPS" in message and "password, token" in message
    assert PASSWORD not in message and TOKEN not in message
    assert base64.b64encode(TOKEN.encode()).decode() not in message


def test_lint_reports_yaml_errors_with_file_and_line(offline: Deployer) -> None:
    offline.write({"a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"
                             "  name: b\n", "b.yml": "a: [1,\n"})
    got = diagnostics(offline.lint())
    assert got[0][:2] == ("error", "k8s/a.yaml:5") and "duplicate key 'name'" in got[0][2]
    assert got[1][:2] == ("error", "k8s/b.yml:2") and "invalid YAML" in got[1][2]


def test_lint_of_a_kustomization_points_at_the_source_files(offline: Deployer) -> None:
    offline.path = "k8s/overlay"
    offline.write({
        "../base/kustomization.yaml": "resources: [deploy.yaml]\n",
        "../base/deploy.yaml": "# base\n" + docs(deployment("web", replicas=None,
                                                            progressDeadlineSeconds="x")),
        "kustomization.yaml": ("resources: [../base]\nnamePrefix: prod-\n"
                               "secretGenerator:\n- name: creds\n  literals: [pw=s3cr3t-value]\n"),
    })
    got = diagnostics(offline.lint())
    assert ("error", "k8s/base/deploy.yaml:18", "Deployment prod-web: "
            "spec.progressDeadlineSeconds: 'x' is not of type 'integer', 'null'") in got
    [warning] = [g for g in got if g[0] == "warning"]
    assert warning[1] == "k8s/overlay/kustomization.yaml"
    assert "s3cr3t-value" not in warning[2]


def test_lint_reports_a_broken_kustomization(offline: Deployer) -> None:
    offline.write({"kustomization.yaml": "resources: [missing.yaml]\n"})
    [(severity, where, message)] = diagnostics(offline.lint())
    assert (severity, where) == ("error", "k8s/kustomization.yaml")
    assert message.startswith("kustomize failed: ") and "missing.yaml" in message


def test_lint_rejects_a_stack_name_that_cannot_be_a_label_value(offline: Deployer) -> None:
    offline.name = "web_"
    offline.write({"a.yaml": docs(configmap("a"))})
    assert "cannot be the value of the gitops-push.io/stack label" in diagnostics(
        offline.lint())[0][2]


def test_a_destroy_plan_deletes_everything_the_stack_applied(deployer: Deployer, kube: Any
                                                             ) -> None:
    deployer.write({"a.yaml": docs(configmap("a"), configmap("b"))})
    deployer.apply()
    kube.apply(configmap("unrelated"))
    plan = deployer.plan(destroy=True)
    ns = kube.namespace
    assert actions(plan) == {f"ConfigMap/{ns}/a": "delete", f"ConfigMap/{ns}/b": "delete"}
    ctx = deployer.ctx("apply")
    deployer.engine.apply(deployer.stack, ctx, deployer.engine.load_plan(
        deployer.stack, ctx, ctx.work_dir))
    assert kube.get("configmap", "a") is None and kube.get("configmap", "b") is None
    assert kube.get("configmap", INVENTORY) is None
    assert kube.get("configmap", "unrelated") is not None


def test_apply_refuses_a_plan_made_before_another_apply(deployer: Deployer, kube: Any) -> None:
    deployer.write({"a.yaml": docs(configmap("a"))})
    deployer.plan()
    ctx = deployer.ctx("apply")
    stale = deployer.engine.load_plan(deployer.stack, ctx, ctx.work_dir)
    other = Deployer(deployer.root, deployer.env, settings_text=deployer.settings_text)
    other.root = deployer.root / "other-job"
    other.write({"a.yaml": docs(configmap("a"), configmap("b"))})
    other.apply()
    with pytest.raises(UserError, match="the plan is stale: the stack was applied after"):
        deployer.engine.apply(deployer.stack, ctx, stale)


# -- pure pieces --------------------------------------------------------------------------

def test_check_names_how_to_install_kubectl(tmp_path: Path) -> None:
    stack = Stack("web", "k8s", "kubernetes", settings=k8s.KubernetesSettings())
    with pytest.raises(ToolError) as info:
        k8s.KubernetesEngine().check([stack], {"PATH": str(tmp_path)})
    assert "kubectl is needed for the Kubernetes stacks (web)" in info.value.message
    assert "https://kubernetes.io/docs/tasks/tools/" in info.value.message
    k8s.KubernetesEngine().check([stack], os.environ)  # the real one is fine


@pytest.mark.parametrize(("output", "expected"), [
    ('E1126 06:39:22.710964   18842 memcache.go:265] "Unhandled Error" err="couldn\'t get '
     'current server API group list: Get \\"https://127.0.0.1:1/api?timeout=32s\\": dial tcp '
     '127.0.0.1:1: connect: connection refused"\nThe connection to the server 127.0.0.1:1 was '
     'refused - did you specify the right host or port?',
     "cannot reach the Kubernetes API server at 127.0.0.1:1: dial tcp 127.0.0.1:1: connect: "
     "connection refused"),
    ("error: You must be logged in to the server (Unauthorized)",
     "the API server rejected the credentials (401 Unauthorized)"),
    ('Error from server (Forbidden): configmaps "a" is forbidden: User "ci" cannot patch '
     'resource "configmaps" in API group "" in the namespace "web"',
     'forbidden (403, RBAC): User "ci" cannot patch resource "configmaps"'),
    ('error: resource mapping not found for name: "w" namespace: "" from "STDIN": no matches '
     'for kind "Widget" in version "example.com/v1"\nensure CRDs are installed first',
     'unknown kind: no matches for kind "Widget" in version "example.com/v1"'),
    ('Error from server (NotFound): namespaces "web" not found',
     'namespace "web" does not exist'),
    ('The Deployment "web" is invalid: spec.replicas: Invalid value: -1: must be greater than '
     'or equal to 0', "invalid object: spec.replicas: Invalid value: -1"),
    ("error: context was not found for specified context: prod",
     "the kubeconfig has no such context (prod)"),
    ("error: current-context must exist in order to minify",
     "no cluster configured: the kubeconfig has no current context; set kubeconfig_env"),
    ("error: something new", "something new"),
])
def test_kubectl_failures_are_explained_in_one_sentence(output: str, expected: str) -> None:
    assert explain(output).startswith(expected)


def test_server_side_apply_conflicts_name_managers_and_fields() -> None:
    one = ('error: Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: '
           '.spec.replicas\nPlease review the fields above--they currently have other managers.')
    assert conflicts(one) == [("kubectl-edit", ".spec.replicas")]
    many = ('Apply failed with 2 conflicts: conflicts with "helm":\n- .data.a\n- .data.b\n'
            'Please review the fields above')
    assert conflicts(many) == [("helm", ".data.a"), ("helm", ".data.b")]
    managers = 'Apply failed with 2 conflicts: conflicts with\n"a":\n- .x\n"b" using v1:\n- .y'
    assert conflicts(managers) == [("a", ".x"), ("b", ".y")]
    assert ('.data.a (owned by field manager "helm"); .data.b (owned by field manager "helm")'
            in explain(many))


def test_changed_paths_name_list_items_by_name() -> None:
    live = {"spec": {"replicas": 1, "containers": [{"name": "a", "image": "x"},
                                                    {"name": "b", "image": "y"}],
                     "args": ["1", "2"]},
            "metadata": {"labels": {"app.kubernetes.io/name": "w"}}}
    merged = {"spec": {"replicas": 2, "containers": [{"name": "a", "image": "x"},
                                                      {"name": "b", "image": "z"}],
                       "args": ["1", "3"]},
              "metadata": {"labels": {"app.kubernetes.io/name": "v"}}}
    assert changed_paths(live, merged) == [
        'metadata.labels["app.kubernetes.io/name"]', "spec.args[1]",
        "spec.containers[name=b].image", "spec.replicas"]


def test_rollout_status_rules() -> None:
    dep: dict[str, Any] = {"metadata": {"generation": 2}, "spec": {"replicas": 2},
                           "status": {"observedGeneration": 1}}
    assert deployment_status(dep)[0] == "waiting"
    dep["status"] = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2,
                     "availableReplicas": 2}
    assert deployment_status(dep) == ("waiting", "1 old replicas pending termination")
    dep["status"]["replicas"] = 2
    assert deployment_status(dep) == ("done", "rolled out (2 replicas available)")
    dep["status"]["conditions"] = [{"type": "Progressing", "status": "False",
                                    "reason": "ProgressDeadlineExceeded", "message": "slow"}]
    assert deployment_status(dep) == ("failed",
                                      "Progressing=False ProgressDeadlineExceeded: slow")
    job = {"status": {"conditions": [{"type": "Failed", "status": "True",
                                      "reason": "BackoffLimitExceeded"}]}}
    assert job_status(job) == ("failed", "Failed=True BackoffLimitExceeded")


def test_inventory_names_are_valid_and_unique() -> None:
    assert k8s.inventory_name("team-a", "web") == INVENTORY
    a, b = k8s.inventory_name("p", "a_b"), k8s.inventory_name("p", "a-b")
    assert a != b and a.startswith("gitops-push-inventory.p.a-b-")
    # project and stack cannot run into each other, nor into a name from before projects
    assert k8s.inventory_name("a-b", "c") != k8s.inventory_name("a", "b-c")
    assert k8s.legacy_inventory_name("web") == "gitops-push-inventory-web"
    assert k8s.legacy_inventory_name("p.web") != k8s.inventory_name("p", "web")



def test_fields_taken_over_come_from_the_servers_managed_fields() -> None:
    from gitops_push.engines.kubernetes.owners import taken_over, takeover_notes

    def obj(*entries: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        return {"metadata": {"managedFields": [
            {"manager": m, "operation": "Update", "fieldsV1": f} for m, f in entries]}}

    container = {"f:spec": {"f:template": {"f:spec": {"f:containers": {
        'k:{"name":"web"}': {".": {}, "f:image": {}}}}}}}
    live = obj(("gitops-push", {"f:data": {"f:a": {}}}),
               ("kubectl-patch", {"f:data": {"f:greeting": {}}}),
               ("kubectl-label", {"f:metadata": {"f:labels": {"f:team": {}}}}),
               ("kubectl-edit", container))
    merged = obj(("gitops-push", {"f:data": {"f:a": {}, "f:greeting": {}}}),
                 ("kubectl-label", {"f:metadata": {"f:labels": {"f:team": {}}}}),
                 ("kubectl-edit", {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                     'k:{"name":"web"}': {".": {}}}}}}}))
    taken = taken_over(live, merged, "gitops-push")
    assert taken == {"kubectl-edit": (".spec.template.spec.containers[name=web].image",),
                     "kubectl-patch": (".data.greeting",)}
    assert takeover_notes("ConfigMap/ns/cm", {"kubectl-patch": (".data.greeting",)}) == [
        "ConfigMap/ns/cm: takes .data.greeting back from kubectl-patch"]
    assert taken_over(None, merged, "gitops-push") == {}
