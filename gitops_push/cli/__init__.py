"""The command line: ``app.py`` (the group, ``main`` and the one error -> exit-code
mapping), ``options.py`` (shared flags and value checks) and one module per command group.
"""

from __future__ import annotations

from gitops_push.cli.app import cli, main, run

__all__ = ["cli", "main", "run"]
