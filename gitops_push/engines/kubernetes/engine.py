"""Kubernetes engine: manifests or a kustomization, server-side applied with kubectl.

lint is offline (YAML, identity, schemas, duplicates, committed Secrets). plan runs
``kubectl diff --server-side`` and saves the exact objects (Secret values excepted) to
the plan directory; apply applies those objects - Namespaces and CRDs first - records
them in the stack's inventory ConfigMap, waits for rollouts, and prunes what the
inventory holds, git no longer has and still carries the stack label. See
docs/kubernetes.md for the settings, the inventory and the drift rules.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitops_push import proc
from gitops_push.engines.base import (
    ApplyResult,
    Change,
    Diagnostic,
    DriftItem,
    DriftResult,
    EngineContext,
    LintResult,
    PlanResult,
)
from gitops_push.engines.kubernetes import lint as lintmod
from gitops_push.engines.kubernetes.compare import (
    ClusterState,
    Desired,
    Target,
    action_of,
    cascading_prunes,
)
from gitops_push.engines.kubernetes.diff import (
    IgnoreRule,
    is_secret,
    masked,
    secret_fields,
    secret_values,
)
from gitops_push.engines.kubernetes.kubectl import (
    INSTALL_HINT,
    KUBECTL,
    MIN_KUBECTL,
    Inventory,
    Kubectl,
    kubectl_version,
)
from gitops_push.engines.kubernetes.objects import (
    STACK_LABEL,
    ObjRef,
    dump_yaml,
    kustomization_file,
    label_value_problem,
    phase_of,
    sort_key,
)
from gitops_push.engines.kubernetes.owners import (
    inventory_name,
    legacy_inventory_name,
    takeover_notes,
)
from gitops_push.engines.kubernetes.render import lint_kustomize, read_files, render
from gitops_push.engines.kubernetes.saved import (
    MANIFESTS_FILE,
    PLAN_FILE,
    PLAN_FORMAT,
    digest_matches,
    read_plan,
    secret_digest,
)
from gitops_push.engines.kubernetes.settings import (
    KubernetesSettings,
    env_names,
    parse_settings,
    settings_of,
)
from gitops_push.engines.kubernetes.wait import CRD, Waiter, waits_for
from gitops_push.errors import ToolError, UserError
from gitops_push.fsutil import atomic_write

if TYPE_CHECKING:
    from gitops_push.config import Stack

__all__ = ["IgnoreRule", "KubernetesEngine", "KubernetesSettings", "env_names",
           "inventory_name", "legacy_inventory_name", "parse_settings"]


# -- plan data -----------------------------------------------------------------------


# -- the engine ----------------------------------------------------------------------

class KubernetesEngine(ClusterState):
    name = "kubernetes"


    # -- check ----------------------------------------------------------------------
    def check(self, stacks: list[Stack], env: Mapping[str, str]) -> None:
        """kubectl must be on PATH and new enough for server-side apply and diff."""
        if not stacks:
            return
        try:
            result = proc.run([KUBECTL, "version", "--client", "-o", "json"],
                              env=proc.filtered_env(env), timeout=60)
        except ToolError as exc:
            raise ToolError(f"kubectl is needed for the Kubernetes stacks "
                            f"({', '.join(s.name for s in stacks)}) but "
                            f"{exc.message.split(': ', 1)[-1]}; {INSTALL_HINT}") from exc
        version = kubectl_version(result.stdout)
        if version is not None and version < MIN_KUBECTL:
            raise ToolError(f"kubectl {version[0]}.{version[1]} is too old; {INSTALL_HINT}")

    # -- lint -----------------------------------------------------------------------
    def lint(self, stack: Stack, ctx: EngineContext) -> LintResult:
        """Offline: everything that can be wrong in git is found before a cluster is asked."""
        s = settings_of(stack)
        diags: list[Diagnostic] = []
        problem = label_value_problem(stack.name)
        if problem:
            diags.append(Diagnostic("error", problem, file=stack.origin.rsplit(":", 1)[0]
                                    if stack.origin != "discovered" else None))
        if not lintmod.version_supported(s.kubernetes_version):
            diags.append(Diagnostic("error", f"kubernetes_version {s.kubernetes_version}: "
                                    "no offline schemas for it"))
            return LintResult(stack.name, tuple(diags))
        kfile = kustomization_file(ctx.stack_dir)
        if kfile is None:
            manifests, errors = read_files(stack, ctx)
        else:
            manifests, errors = lint_kustomize(stack, ctx, kfile)
        diags.extend(errors)
        diags.extend(lintmod.lint_objects(manifests, version=s.kubernetes_version,
                                          default_ns=s.namespace or "default"))
        if not manifests and not errors:
            diags.append(Diagnostic("warning", "the stack has no Kubernetes objects",
                                    file=stack.path))
        return LintResult(stack.name, tuple(diags))


    # -- plan -----------------------------------------------------------------------
    def plan(self, stack: Stack, ctx: EngineContext, *, destroy: bool = False) -> PlanResult:
        s = settings_of(stack)
        manifests = [] if destroy else render(stack, ctx)
        target = self._target(stack, ctx, s)
        desired = self._desired(stack, s, target, manifests)
        inventory = self._inventory(stack, target)
        compared = self._compare(stack, s, target, desired, target.force)
        changes = [Change(d.ref.address, action_of(compared[d.ref]), compared[d.ref].fields)
                   for d in desired]
        gone = sorted(inventory.refs - {d.ref for d in desired}, key=sort_key, reverse=True)
        notes = [n for d in desired for n in takeover_notes(d.ref.address,
                                                            compared[d.ref].taken)]
        prune: list[ObjRef] = []
        if gone and (s.prune or destroy):
            live = self._labelled(stack, target, gone, inventory)
            prune = [r for r in gone if r in live]
            changes += [Change(r.address, "delete" if destroy else "prune") for r in prune]
        elif gone:
            notes.append(f"{len(gone)} object(s) removed from git are left in the cluster "
                         "(prune: false)")
        version = self._version(target.kubectl)
        self._save(ctx, stack, s, target, inventory, desired, changes, prune, notes, destroy,
                   version)
        return PlanResult(stack.name, tuple(changes), destroy=destroy, artifact=ctx.work_dir,
                          tool_version=version, notes=tuple(notes),
                          needs_consent=cascading_prunes(prune, destroy))

    def _save(self, ctx: EngineContext, stack: Stack, s: KubernetesSettings, target: Target,
              inventory: Inventory, desired: Sequence[Desired], changes: Sequence[Change],
              prune: Sequence[ObjRef], notes: Sequence[str], destroy: bool, version: str
              ) -> None:
        """The plan artifact: exact objects (Secret values only as a salted slow hash)."""
        objects: list[dict[str, Any]] = []
        for d in desired:
            fields = secret_fields(d.body) if is_secret(d.body) else {}
            objects.append({"ref": d.ref.to_json(), "version": d.version, "source": d.source,
                            "body": masked(d.body),
                            "secret_digest": secret_digest(fields) if fields else None})
        data = {
            "format": PLAN_FORMAT, "stack": stack.name, "destroy": destroy,
            "settings": s.fingerprint(), "tool_version": version,
            "project": target.project,
            "inventory": {"name": inventory.name or target.inventory_name,
                          "namespace": target.inventory_ns,
                          "resource_version": inventory.resource_version},
            "objects": objects,
            "changes": [{"address": c.address, "action": c.action, "fields": list(c.fields)}
                        for c in changes],
            "prune": [r.to_json() for r in prune], "notes": list(notes),
        }
        atomic_write(ctx.work_dir / PLAN_FILE, json.dumps(data, indent=1, sort_keys=True),
                     what="kubernetes plan")
        atomic_write(ctx.work_dir / MANIFESTS_FILE, dump_yaml([o["body"] for o in objects]),
                     what="rendered manifests")

    def load_plan(self, stack: Stack, ctx: EngineContext, artifact: Path) -> PlanResult:
        data = read_plan(artifact, stack, settings_of(stack))
        changes = tuple(Change(c["address"], c["action"], tuple(c.get("fields", ())))
                        for c in data["changes"])
        return PlanResult(stack.name, changes, destroy=bool(data["destroy"]), artifact=artifact,
                          tool_version=str(data.get("tool_version", "")),
                          notes=tuple(data.get("notes", ())),
                          needs_consent=cascading_prunes(
                              [ObjRef.from_json(r) for r in data["prune"]],
                              bool(data["destroy"])))

    # -- apply ----------------------------------------------------------------------
    def apply(self, stack: Stack, ctx: EngineContext, plan: PlanResult) -> ApplyResult:
        """Apply exactly the planned objects; stop at the first failure."""
        start = time.monotonic()
        s = settings_of(stack)
        data = read_plan(plan.artifact or ctx.work_dir, stack, s)
        tail: deque[str] = deque(maxlen=40)

        def on_line(line: str) -> None:
            tail.append(line)
            ctx.on_line(line)

        target = self._target(stack, ctx, s, on_line)
        kc = target.kubectl
        if data.get("project") != target.project:
            raise UserError(f"stack {stack.name!r}: the plan is stale: it was made for project "
                            f"{data.get('project')!r}, this run is project {target.project!r}; "
                            "plan again")
        desired = self._planned_objects(stack, ctx, target, data)
        inventory = self._inventory(stack, target)
        if inventory.resource_version != data["inventory"]["resource_version"]:
            raise UserError(f"stack {stack.name!r}: the plan is stale: the stack was applied "
                            "after this plan was made (its inventory changed); plan again")
        waiter = Waiter(stack.name, kc.access.client_config_file(), s.context, on_line,
                        ctx.cancel, in_cluster="KUBERNETES_SERVICE_HOST" in ctx.env)
        first = [d for d in desired if phase_of(d.ref) == 0]
        rest = [d for d in desired if phase_of(d.ref) == 1]
        self._apply_batch(kc, first, target.force)
        waiter.wait([(d.ref, d.version) for d in first if (d.ref.group, d.ref.kind) == CRD],
                    s.timeout, "CustomResourceDefinition establishment")
        recorded = inventory.refs | {d.ref for d in desired}
        migrating = inventory.name not in ("", target.inventory_name)
        if recorded != inventory.refs or migrating:  # before creating: a failure leaves no
            self._write_inventory(target, inventory, recorded)  # orphans
            inventory = replace(inventory, name=target.inventory_name)
        self._apply_batch(kc, rest, target.force)
        if s.wait:
            waiter.wait([(d.ref, d.version) for d in rest if waits_for(d.ref)], s.timeout,
                        "rollout")
        planned_prune = [ObjRef.from_json(r) for r in data["prune"]]
        dropped = self._prune(stack, target, planned_prune, inventory)
        final = recorded - dropped
        if data["destroy"] and not final:
            for name in {target.inventory_name, inventory.name or target.inventory_name}:
                kc.run("delete", "configmap", name, "-n", target.inventory_ns,
                       "--ignore-not-found", what="inventory ConfigMap")
        elif final != recorded:
            self._write_inventory(target, inventory, final)
        return ApplyResult(stack.name, plan.changes, time.monotonic() - start, "\n".join(tail))

    def _planned_objects(self, stack: Stack, ctx: EngineContext, target: Target,
                         data: Mapping[str, Any]) -> list[Desired]:
        """The plan's objects, Secret values put back from the checkout (hash-checked)."""
        desired = [Desired(ObjRef.from_json(o["ref"]), o["version"], o["body"], o["source"])
                   for o in data["objects"]]
        digests = {ObjRef.from_json(o["ref"]): o["secret_digest"] for o in data["objects"]
                   if o.get("secret_digest")}
        if not digests:
            return desired
        current: dict[ObjRef, dict[str, Any]] = {}
        for m in render(stack, ctx):
            if is_secret(m.body):
                ref = ObjRef("", "Secret", m.namespace or target.default_ns, m.name)
                current[ref] = secret_fields(m.body)
        out: list[Desired] = []
        for d in desired:
            if d.ref in digests:
                fields = current.get(d.ref)
                if fields is None or not digest_matches(fields, digests[d.ref]):
                    raise UserError(f"stack {stack.name!r}: the plan is stale: {d.ref.address} "
                                    "changed since the plan was made; plan again")
                body = {**d.body, **fields}
                target.kubectl.add_secrets(secret_values(body))
                d = replace(d, body=body)
            out.append(d)
        return out

    def _apply_batch(self, kc: Kubectl, items: Sequence[Desired], force: bool) -> None:
        """Dry-run the whole batch, then apply it: a bad object stops the batch before any
        change (``kubectl apply`` itself carries on past a failing object)."""
        if not items:
            return
        bodies = [d.body for d in items]
        try:
            kc.apply(bodies, force=force, dry_run=True)
        except ToolError as exc:
            raise self._blame(exc, items, lambda d: kc.apply(
                [d.body], force=force, dry_run=True, what=d.ref)) from exc
        try:
            kc.apply(bodies, force=force, dry_run=False)
        except ToolError as exc:
            raise self._blame(exc, items, lambda d: kc.apply(
                [d.body], force=force, dry_run=True, what=d.ref)) from exc

    def _prune(self, stack: Stack, target: Target, planned: Sequence[ObjRef],
               inventory: Inventory) -> set[ObjRef]:
        """Delete planned prunes still carrying the labels; returns what leaves the inventory."""
        if not planned:
            return set()
        kc = target.kubectl
        live = self._labelled(stack, target, planned, inventory)
        for ref in sorted(planned, key=sort_key, reverse=True):
            resource = target.resources.get((ref.group, ref.kind))
            if ref not in live or resource is None:
                kc.ctx.on_line(f"{ref.address}: already gone or no longer labelled "
                               f"{STACK_LABEL}={stack.name} of project {target.project}; "
                               "not deleted")
                continue
            kc.delete(ref, resource)
        return set(planned)

    # -- drift ----------------------------------------------------------------------
    def drift(self, stack: Stack, ctx: EngineContext, *, after_apply: bool = False
              ) -> DriftResult:
        """Hand edits (changed), hand deletes (deleted), labelled strays (extra).

        One comparison answers both questions, so ``after_apply`` changes nothing."""
        s = settings_of(stack)
        manifests = render(stack, ctx)
        target = self._target(stack, ctx, s)
        desired = self._desired(stack, s, target, manifests)
        inventory = self._inventory(stack, target)
        compared = self._compare(stack, s, target, desired, force=True)
        items: list[DriftItem] = []
        for d in desired:
            live, fields = compared[d.ref].live, compared[d.ref].fields
            if live is None:
                items.append(DriftItem(d.ref.address,
                                       "deleted" if d.ref in inventory.refs else "config"))
            elif fields:
                items.append(DriftItem(d.ref.address, "changed", fields))
        wanted = {d.ref for d in desired}
        scope = [*wanted, *inventory.refs]
        extra = {r for r, lab in self._labelled(stack, target, scope, inventory).items()
                 if not lab.child} - wanted
        items += [DriftItem(r.address, "extra") for r in sorted(extra, key=sort_key)]
        return DriftResult(stack.name, tuple(items))


# -- helpers -------------------------------------------------------------------------
