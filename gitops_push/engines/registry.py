"""The one engine registry: a stack's ``type`` names an engine found here.

The built-in engines are listed below (as pre-commit lists its languages in one
module); any installed distribution can add more through the ``gitops_push.engines``
entry-point group, the way hatch finds its builder and environment plugins::

    [project.entry-points."gitops_push.engines"]
    helm = "gitops_push_helm:ENGINE"

The entry point names an ``EngineSpec`` (engines/base.py) whose ``name`` is the entry
point's name. Engines are imported only when a stack or a setting names them.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib import metadata

from gitops_push.engines.base import EngineSpec
from gitops_push.errors import UserError

ENTRY_POINT_GROUP = "gitops_push.engines"

# name -> module defining ENGINE
BUILTIN = {
    "kubernetes": "gitops_push.engines.kubernetes.engine",
    "terraform": "gitops_push.engines.terraform.engine",
}


def _entry_points() -> dict[str, metadata.EntryPoint]:
    """Engines other distributions provide; the one place entry points are read."""
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN:
            raise UserError(f"the engine entry point {ep.name!r} ({ep.value}) would replace the "
                            f"built-in {ep.name} engine; give it another name")
        found.setdefault(ep.name, ep)
    return found


@cache
def _plugins() -> dict[str, metadata.EntryPoint]:
    return _entry_points()


@cache
def names() -> tuple[str, ...]:
    return tuple(sorted({*BUILTIN, *_plugins()}))


@cache
def spec(name: str) -> EngineSpec:
    if name in BUILTIN:
        loaded: object = importlib.import_module(BUILTIN[name]).ENGINE
        where = BUILTIN[name]
    elif name in _plugins():
        ep = _plugins()[name]
        where = ep.value
        try:
            loaded = ep.load()
        except Exception as exc:  # a broken plugin is named, not a traceback
            raise UserError(f"the engine {name!r} ({where}) failed to load: {exc}") from exc
    else:
        raise KeyError(name)
    if not isinstance(loaded, EngineSpec) or loaded.name != name:
        raise UserError(f"the engine entry point {name!r} ({where}) must name an EngineSpec "
                        f"whose name is {name!r}")
    return loaded


def clear() -> None:
    """Forget what was found (tests that install an engine at run time)."""
    _plugins.cache_clear()
    names.cache_clear()
    spec.cache_clear()
