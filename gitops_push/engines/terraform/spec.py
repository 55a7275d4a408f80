"""The Terraform engine as the registry sees it: settings, environment, discovery and
the inputs a stack reads, without the engine itself (engine.py: lint, plan, apply,
drift), which is imported only when a run needs it. ``changed`` and discovery load no
more than they use (issue 14).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gitops_push.ci import ENV_PLUGIN_CACHE
from gitops_push.engines.base import Engine, EngineSpec
from gitops_push.engines.terraform import inputs as tf_inputs
from gitops_push.engines.terraform.settings import env_names, parse_settings
from gitops_push.engines.terraform.version import prefetch


def _factory() -> Engine:
    from gitops_push.engines.terraform.engine import TerraformEngine

    return TerraformEngine()


def context(environ: Mapping[str, str], work_root: Path, options: Mapping[str, object]
            ) -> dict[str, object]:
    """The provider plugin cache every stack of every run shares (created here)."""
    cache = environ.get(ENV_PLUGIN_CACHE) or str(
        Path(environ.get("XDG_CACHE_HOME")
             or Path(environ.get("HOME", str(work_root))) / ".cache")
        / "gitops-push" / "terraform-plugins"
    )
    Path(cache).mkdir(parents=True, exist_ok=True)
    return {"plugin_cache_dir": cache}


ENGINE = EngineSpec(
    name="terraform",
    parse_settings=parse_settings,
    factory=_factory,
    env_names=env_names,
    prefetch=prefetch,
    inputs=tf_inputs.inputs,
    preload_inputs=tf_inputs.preload,
    discover=tf_inputs.discover,
    area=tf_inputs.area,
    context=context,
    # a local backend's state lives untracked in the stack directory: a destroy planned in
    # a worktree of the base commit must see it and write it back
    carried_suffixes=(".tfstate", ".tfstate.backup"),
    not_carried=frozenset({".terraform"}),
)

__all__ = ["ENGINE"]
