"""Configuration: ``gitops-push.yaml`` (``file.py``), the located-error reader every
section goes through (``schema.py``), safe YAML (``yamlsafe.py``) and the project name
(``project.py``). ``from gitops_push import config; config.load(...)`` is the API."""

from __future__ import annotations

from gitops_push.config.file import (
    AUDIT_MODES,
    CONFIG_FILE,
    CONFIG_NAMES,
    DEFAULT_DISCOVER,
    ENV_NAME_RE,
    MAX_CONFIG_BYTES,
    NAME_RE,
    PHASES,
    AuditSettings,
    Config,
    PhaseCredentials,
    Stack,
    StackSpec,
    check_graph,
    find_config,
    load,
    normalize_path,
    parse,
)

__all__ = [
    "AUDIT_MODES", "CONFIG_FILE", "CONFIG_NAMES", "DEFAULT_DISCOVER", "ENV_NAME_RE",
    "MAX_CONFIG_BYTES", "NAME_RE", "PHASES", "AuditSettings", "Config", "PhaseCredentials",
    "Stack", "StackSpec", "check_graph", "find_config", "load", "normalize_path", "parse",
]
