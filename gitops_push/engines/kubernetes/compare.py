"""What a Kubernetes stack wants against what the cluster has: the target cluster and
namespace, the objects desired, their comparison with live state (server-side dry-run
diff), and the inventory of what the stack applied. ``KubernetesEngine`` builds on it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitops_push.config.project import default_project
from gitops_push.engines.base import (
    EngineContext,
)
from gitops_push.engines.kubernetes.access import (
    GLOBAL_CAUSES,
    resolve_access,
)
from gitops_push.engines.kubernetes.diff import (
    field_changes,
    prepared_body,
    secret_values,
)
from gitops_push.engines.kubernetes.kubectl import (
    ApiResource,
    Inventory,
    Kubectl,
    Labelled,
)
from gitops_push.engines.kubernetes.objects import (
    STACK_LABEL,
    Manifest,
    ObjRef,
    crd_kinds,
    label_value_problem,
    phase_of,
    sort_key,
)
from gitops_push.engines.kubernetes.owners import (
    Owner,
    check_owners,
    inventory_name,
    prunable,
    read_inventory,
    taken_over,
    write_inventory,
)
from gitops_push.engines.kubernetes.settings import (
    KubernetesSettings,
)
from gitops_push.engines.kubernetes.wait import CRD
from gitops_push.errors import ToolError, UserError

if TYPE_CHECKING:
    from gitops_push.config import Stack


@dataclass(frozen=True)
class Desired:
    """One object as it will be applied."""

    ref: ObjRef
    version: str  # apiVersion's version part (for reading status)
    body: dict[str, Any]
    source: str


@dataclass(frozen=True)
class Target:
    """Everything about where a stack goes: kubectl, scopes, namespaces, inventory."""

    kubectl: Kubectl
    resources: dict[tuple[str, str], ApiResource]
    default_ns: str
    inventory_name: str
    inventory_ns: str
    project: str
    force: bool  # take over the fields git declares (conflicts: force, or --force-conflicts)


@dataclass(frozen=True)
class Compared:
    """One object against the cluster: live state, changed fields, fields taken over."""

    live: dict[str, Any] | None
    fields: tuple[str, ...]
    taken: dict[str, tuple[str, ...]]  # other field manager -> fields applying takes back


def action_of(c: Compared) -> str:
    if c.live is None:
        return "create"
    return "update" if c.fields else "no-op"


def cascading_prunes(prune: Sequence[ObjRef], destroy: bool) -> tuple[str, ...]:
    """Prunes that delete more than themselves need the consent destroying a stack needs:
    a Namespace takes every object in it, a CustomResourceDefinition every custom resource
    of its kind in the cluster, also those no stack manages. (A removed stack's destroy
    already needs --allow-destroy.)"""
    if destroy:
        return ()
    out: list[str] = []
    for r in prune:
        if (r.group, r.kind) == ("", "Namespace"):
            out.append(f"pruning Namespace {r.name} deletes everything in it, also objects "
                       "gitops-push does not manage")
        elif (r.group, r.kind) == CRD:
            out.append(f"pruning CustomResourceDefinition {r.name} deletes every custom "
                       "resource of that kind in the cluster")
    return tuple(out)


class ClusterState:
    """The cluster side of the engine; one instance per run, thread-safe."""

    def __init__(self) -> None:
        self._versions: dict[str, str] = {}
        self._projects: dict[Path, str] = {}
        self._lock = threading.Lock()

    def _project(self, ctx: EngineContext) -> str:
        """The ``project:`` key, else derived from the repository (asked once per run)."""
        configured = ctx.extra.get("project")
        if isinstance(configured, str) and configured:
            return configured
        with self._lock:
            if ctx.repo_root not in self._projects:
                self._projects[ctx.repo_root] = default_project(ctx.repo_root, ctx.env)
            return self._projects[ctx.repo_root]

    def _version(self, kc: Kubectl) -> str:
        """kubectl's version, asked once per run (it is the same binary for every stack)."""
        path = kc.ctx.env.get("PATH", "")
        with self._lock:
            if path not in self._versions:
                self._versions[path] = kc.version()
            return self._versions[path]

    # -- the target cluster ---------------------------------------------------------
    def _target(self, stack: Stack, ctx: EngineContext, s: KubernetesSettings,
                on_line: Callable[[str], None] | None = None) -> Target:
        problem = label_value_problem(stack.name)
        if problem:
            raise UserError(f"stack {stack.name!r}: {problem}",
                            path=None if stack.origin == "discovered" else stack.origin)
        access = resolve_access(kubeconfig=s.kubeconfig, kubeconfig_env=s.kubeconfig_env,
                                context=s.context, ctx=ctx, stack=stack.name)
        kc = Kubectl(access, ctx if on_line is None else replace(ctx, on_line=on_line),
                     stack.name, field_manager=s.field_manager, server_side=s.server_side)
        default_ns = s.namespace or kc.context_namespace() or "default"
        resources = kc.api_resources()
        project = self._project(ctx)
        return Target(kc, resources, default_ns, inventory_name(project, stack.name),
                      s.inventory_namespace or default_ns, project,
                      force=bool(ctx.extra.get("force_conflicts")) or s.conflicts == "force")

    @staticmethod
    def _inventory(stack: Stack, target: Target) -> Inventory:
        return read_inventory(target.kubectl, target.inventory_name, target.inventory_ns,
                              stack.name, target.project)

    @staticmethod
    def _write_inventory(target: Target, inventory: Inventory,
                         refs: frozenset[ObjRef] | set[ObjRef]) -> None:
        write_inventory(target.kubectl, target.inventory_name, target.inventory_ns, refs,
                        target.project, inventory)

    def _desired(self, stack: Stack, s: KubernetesSettings, target: Target,
                 manifests: Sequence[Manifest]) -> list[Desired]:
        """Scope each object (discovery, or the stack's own CRDs), label it, order it."""
        crds = crd_kinds(manifests)
        out: dict[ObjRef, Desired] = {}
        for m in manifests:
            res = target.resources.get((m.group, m.kind))
            namespaced = res.namespaced if res else crds.get((m.group, m.kind))
            if namespaced is None:
                raise ToolError(
                    f"stack {stack.name!r}: {m.kind} {m.name} ({m.source}): unknown kind "
                    f"{m.kind} in {m.api_version} - the cluster has no such resource and no "
                    "CustomResourceDefinition in this stack defines it")
            ref = ObjRef(m.group, m.kind, (m.namespace or target.default_ns) if namespaced
                         else "", m.name)
            if ref in out:
                raise UserError(f"stack {stack.name!r}: {ref.address} is defined twice: at "
                                f"{out[ref].source} and at {m.source}", path=m.source)
            body = prepared_body(m, namespace=ref.namespace, stack=stack.name,
                                 project=target.project, rules=s.ignore_differences, ref=ref)
            out[ref] = Desired(ref, m.api_version.rpartition("/")[2], body, m.source)
            target.kubectl.add_secrets(secret_values(m.body))
        return sorted(out.values(), key=lambda d: sort_key(d.ref))

    def _compare(self, stack: Stack, s: KubernetesSettings, target: Target,
                 desired: Sequence[Desired], force: bool) -> dict[ObjRef, Compared]:
        """ref -> live object, changed fields and fields taken over, via kubectl diff in two
        stages; an object another project owns stops the stack.

        Objects in a Namespace, or of a CRD, that the stack itself has yet to create cannot
        be dry-run (the API server rejects them), so they count as created.
        """
        out: dict[ObjRef, Compared] = {}
        first = [d for d in desired if phase_of(d.ref) == 0]
        rest = [d for d in desired if phase_of(d.ref) == 1]
        out.update(self._diff(target, s, first, force))
        new_ns = {r.name for r, c in out.items() if r.kind == "Namespace" and not c.live}
        deferred = [d for d in rest if d.ref.namespace in new_ns
                    or (d.ref.group, d.ref.kind) not in target.resources]
        for d in deferred:
            out[d.ref] = Compared(None, (), {})
        out.update(self._diff(target, s, [d for d in rest if d not in deferred], force))
        check_owners(stack.name, target.project, {r: c.live for r, c in out.items()})
        return out

    def _diff(self, target: Target, s: KubernetesSettings, items: Sequence[Desired],
              force: bool) -> dict[ObjRef, Compared]:
        kc = target.kubectl
        try:
            pairs = kc.diff([d.body for d in items], force=force)
        except ToolError as exc:
            raise self._blame(exc, items, lambda d: kc.diff(
                [d.body], force=force, what=d.ref, stream=False)) from exc
        out: dict[ObjRef, Compared] = {}
        for d in items:
            if d.ref not in pairs:
                raise ToolError(f"stack {kc.stack!r}: {d.ref.address}: kubectl diff reported "
                                "nothing for it")
            live, merged = pairs[d.ref]
            out[d.ref] = Compared(live, field_changes(live, merged, d.ref, s.ignore_differences),
                                  taken_over(live, merged, kc.field_manager))
        return out

    @staticmethod
    def _blame(exc: ToolError, items: Sequence[Desired],
               probe: Callable[[Desired], object]) -> ToolError:
        """Re-run one object at a time to name the one a batch failed on.

        Not for failures that are about the cluster, not an object (unreachable...).
        """
        cause = exc.message.split(": ", 1)[-1]
        if cause.startswith(GLOBAL_CAUSES):
            return exc
        for d in items:
            try:
                probe(d)
            except ToolError as single:
                return single
        return exc

    def _labelled(self, stack: Stack, target: Target, refs: Sequence[ObjRef],
                  inventory: Inventory) -> dict[ObjRef, Labelled]:
        """This stack's live objects of the kinds and namespaces in ``refs``: the stack label
        and this project's (another project's same-named stack is not this one)."""
        types = [target.resources[(r.group, r.kind)] for r in refs
                 if (r.group, r.kind) in target.resources]
        namespaces = {r.namespace for r in refs if r.namespace}
        found = target.kubectl.labelled(types, namespaces, STACK_LABEL, stack.name)
        return {r: lab for r, lab in found.items()
                if prunable(Owner(lab.project, stack.name), target.project, stack.name, r,
                            inventory.refs)}
