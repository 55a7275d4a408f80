"""Engines: one subpackage per tool (``terraform/``, ``kubernetes/``), the interface they
share (``base.py``) and the registry that finds them, built in or installed through the
``gitops_push.engines`` entry-point group (``registry.py``).
"""

from __future__ import annotations

from gitops_push.engines.registry import ENTRY_POINT_GROUP, names, spec

__all__ = ["ENTRY_POINT_GROUP", "names", "spec"]
