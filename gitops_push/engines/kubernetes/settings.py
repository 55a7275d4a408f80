"""The ``kubernetes:`` settings of a stack, validated with file:line errors.

Kept apart from the engine because config.py parses them for every command, so this
module imports nothing heavy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from gitops_push.engines.kubernetes.diff import IgnoreRule, pointer_parts

if TYPE_CHECKING:
    from gitops_push.config import Stack
    from gitops_push.config.schema import Section

DEFAULT_TIMEOUT = 300.0
DEFAULT_K8S_VERSION = "1.32"  # schemas for lint; matches the kubectl we test with
IN_CLUSTER_ENV = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
SETTINGS_KEYS = (
    "kubeconfig", "kubeconfig_env", "context", "namespace", "inventory_namespace", "prune",
    "wait", "timeout", "server_side", "field_manager", "ignore_differences", "env",
    "kubernetes_version", "conflicts",
)
CONFLICTS = ("force", "fail")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_FIELD_MANAGER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
_K8S_VERSION = re.compile(r"\d+\.\d+")


@dataclass(frozen=True)
class KubernetesSettings:
    """The ``kubernetes:`` settings of a stack (docs/kubernetes.md#settings)."""

    kubeconfig: str | None = None
    kubeconfig_env: str | None = None
    context: str | None = None
    namespace: str | None = None
    inventory_namespace: str | None = None
    prune: bool = True
    wait: bool = True
    timeout: float = DEFAULT_TIMEOUT
    server_side: bool = True
    field_manager: str = "gitops-push"
    ignore_differences: tuple[IgnoreRule, ...] = ()
    env: tuple[str, ...] = ()
    kubernetes_version: str = DEFAULT_K8S_VERSION
    conflicts: str = "force"  # git wins for the fields it declares; "fail" stops instead

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between plan and apply (where and how objects go)."""
        return {"kubeconfig": self.kubeconfig, "kubeconfig_env": self.kubeconfig_env,
                "context": self.context, "namespace": self.namespace,
                "inventory_namespace": self.inventory_namespace,
                "field_manager": self.field_manager, "server_side": self.server_side,
                "conflicts": self.conflicts}


def parse_settings(section: Section) -> KubernetesSettings:
    section.only(SETTINGS_KEYS)
    kubeconfig = section.str("kubeconfig")
    kubeconfig_env = section.str("kubeconfig_env", pattern=_ENV_NAME)
    if kubeconfig is not None and kubeconfig_env is not None:
        raise section.error("kubeconfig_env", "set either kubeconfig or kubeconfig_env, not both")
    if kubeconfig is not None and ("\x00" in kubeconfig or not kubeconfig.strip()):
        raise section.error("kubeconfig", "must be a file path")
    timeout = section.duration("timeout", DEFAULT_TIMEOUT)
    assert timeout is not None
    if timeout <= 0:
        raise section.error("timeout", "must be greater than zero")
    return KubernetesSettings(
        kubeconfig=kubeconfig,
        kubeconfig_env=kubeconfig_env,
        context=section.str("context"),
        namespace=section.str("namespace", pattern=_DNS_LABEL),
        inventory_namespace=section.str("inventory_namespace", pattern=_DNS_LABEL),
        prune=section.bool("prune", True),
        wait=section.bool("wait", True),
        timeout=timeout,
        server_side=section.bool("server_side", True),
        field_manager=section.str("field_manager", "gitops-push", pattern=_FIELD_MANAGER)
        or "gitops-push",
        ignore_differences=_parse_ignore(section),
        env=section.str_list("env", pattern=_ENV_NAME),
        kubernetes_version=section.str("kubernetes_version", DEFAULT_K8S_VERSION,
                                       pattern=_K8S_VERSION) or DEFAULT_K8S_VERSION,
        conflicts=_conflicts(section),
    )


def _conflicts(section: Section) -> str:
    return section.str("conflicts", "force", choices=CONFLICTS) or "force"


def _parse_ignore(section: Section) -> tuple[IgnoreRule, ...]:
    from gitops_push.config.schema import Section as _Section

    node = section.value_node("ignore_differences")
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
        return ()
    if not isinstance(node, yaml.SequenceNode):
        raise section.error("ignore_differences", "must be a list of "
                            "{kind, name, namespace, json_pointers}", node)
    rules: list[IgnoreRule] = []
    for i, item in enumerate(node.value):
        sub = _Section(item, section.file, f"{section.what}: ignore_differences[{i}]")
        sub.only(["kind", "group", "name", "namespace", "json_pointers"])
        kind = sub.str("kind", required=True)
        pointers = sub.str_list("json_pointers")
        if not pointers:
            raise sub.error("json_pointers", "must list at least one JSON pointer like "
                            "/spec/replicas")
        for p in pointers:
            try:
                parts = pointer_parts(p)
            except ValueError as exc:
                raise sub.error("json_pointers", str(exc), sub.value_node("json_pointers")
                                ) from exc
            if not parts or parts[0] in ("apiVersion", "kind") or parts[:2] == [
                    "metadata", "name"] or parts == ["metadata"]:
                raise sub.error("json_pointers", f"{p!r} names the object itself; it "
                                "cannot be ignored", sub.value_node("json_pointers"))
        assert kind is not None
        rules.append(IgnoreRule(kind=kind, json_pointers=pointers, group=sub.str("group"),
                                name=sub.str("name"), namespace=sub.str("namespace")))
    return tuple(rules)


def env_names(settings: KubernetesSettings) -> tuple[str, ...]:
    """kubectl's own variables, the stack's kubeconfig variable and its ``env`` names.

    KUBERNETES_SERVICE_HOST/PORT let kubectl use the pod's service account when a CI job
    runs inside the cluster and no kubeconfig is given (neither is a secret).
    """
    named = (settings.kubeconfig_env,) if settings.kubeconfig_env else ()
    return tuple(dict.fromkeys(("KUBECONFIG", "KUBECACHEDIR", *IN_CLUSTER_ENV, *named,
                                *settings.env)))


def location_env_names(settings: KubernetesSettings) -> tuple[str, ...]:
    """Variables that say where the cluster and its kubeconfig are: not secrets (the
    credentials inside the kubeconfig are; see ``file_secrets``)."""
    named = (settings.kubeconfig_env,) if settings.kubeconfig_env else ()
    return ("KUBECONFIG", "KUBECACHEDIR", *IN_CLUSTER_ENV, *named)


def settings_of(stack: Stack) -> KubernetesSettings:
    s = stack.settings
    return s if isinstance(s, KubernetesSettings) else KubernetesSettings()
