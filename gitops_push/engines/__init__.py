"""Engine registry: a stack's ``type`` is the name of a module in this package.

Adding an engine (OpenTofu is the terraform engine with ``binary: tofu``; Helm would be
``helm.py``) means adding one module that defines ``ENGINE`` (an EngineSpec). Modules
whose name starts with ``_`` are an engine's private helpers.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from gitops_push.engines.base import EngineSpec

_NOT_ENGINES = {"base"}


@cache
def names() -> tuple[str, ...]:
    return tuple(
        sorted(
            m.name
            for m in pkgutil.iter_modules(__path__)
            if m.name not in _NOT_ENGINES and not m.name.startswith("_")  # _helpers
        )
    )


@cache
def spec(name: str) -> EngineSpec:
    if name not in names():
        raise KeyError(name)
    module = importlib.import_module(f"{__name__}.{name}")
    engine_spec: EngineSpec = module.ENGINE
    return engine_spec
