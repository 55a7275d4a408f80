"""The Kubernetes engine as the registry sees it: settings, environment, the secrets a
kubeconfig holds, discovery and the inputs a stack reads, without the engine itself
(engine.py: lint, plan, apply, drift, with the cluster comparison behind them), which
is imported only when a run needs it (issue 14).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gitops_push.engines.base import Engine, EngineSpec
from gitops_push.engines.kubernetes import inputs as k8s_inputs
from gitops_push.engines.kubernetes.access import kubeconfig_paths, kubeconfig_secret_labels
from gitops_push.engines.kubernetes.settings import (
    KubernetesSettings,
    env_names,
    location_env_names,
    parse_settings,
)


def _factory() -> Engine:
    from gitops_push.engines.kubernetes.engine import KubernetesEngine

    return KubernetesEngine()


def _file_secrets(settings: Any, env: Mapping[str, str], repo_root: Path) -> dict[str, str]:
    s = settings if isinstance(settings, KubernetesSettings) else KubernetesSettings()
    out: dict[str, str] = {}
    for path in kubeconfig_paths(s.kubeconfig, s.kubeconfig_env, env, repo_root):
        out.update(kubeconfig_secret_labels(path))
    return out


def _context(environ: Mapping[str, str], work_root: Path, options: Mapping[str, Any]
             ) -> dict[str, Any]:
    return {"force_conflicts": bool(options.get("force_conflicts"))}


ENGINE = EngineSpec(
    name="kubernetes",
    parse_settings=parse_settings,
    factory=_factory,
    env_names=env_names,
    location_env_names=location_env_names,
    file_secrets=_file_secrets,
    inputs=k8s_inputs.inputs,
    discover=k8s_inputs.discover,
    context=_context,
)

__all__ = ["ENGINE"]
