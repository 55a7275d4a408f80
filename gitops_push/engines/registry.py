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
import importlib.machinery
import os
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from gitops_push.engines.base import EngineSpec
from gitops_push.errors import UserError

if TYPE_CHECKING:
    from importlib import metadata

ENTRY_POINT_GROUP = "gitops_push.engines"

# name -> module defining ENGINE (the engine itself is imported by ENGINE.factory)
BUILTIN = {
    "kubernetes": "gitops_push.engines.kubernetes.spec",
    "terraform": "gitops_push.engines.terraform.spec",
}


def _may_declare_engines() -> bool:
    """Whether any installed distribution may declare an engine entry point.

    Importing ``importlib.metadata`` costs about 25 ms (it pulls in ``email``, ``zipfile``
    and more), on every run, and almost no installation has a plugin engine. So look
    first where ``importlib.metadata`` would: the ``entry_points.txt`` of every
    ``*.dist-info``/``*.egg-info`` directory on ``sys.path``. Anything this look cannot
    see through (a zip on ``sys.path``, a finder of distributions other than the
    standard one) answers yes, and ``importlib.metadata`` decides.
    """
    if any(hasattr(f, "find_distributions") and f is not importlib.machinery.PathFinder
           for f in sys.meta_path):
        return True
    needle = ENTRY_POINT_GROUP.encode()
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as found:
                dists = [d.path for d in found if d.name.endswith((".dist-info", ".egg-info"))]
        except NotADirectoryError:
            return True
        except OSError:  # a sys.path entry that does not exist
            continue
        for dist in dists:
            try:
                if needle in Path(dist, "entry_points.txt").read_bytes():
                    return True
            except OSError:
                continue
    return False


def _entry_points() -> dict[str, metadata.EntryPoint]:
    """Engines other distributions provide; the one place entry points are read."""
    found: dict[str, metadata.EntryPoint] = {}
    if not _may_declare_engines():
        return found
    from importlib import metadata
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
