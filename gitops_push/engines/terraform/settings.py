"""The ``terraform:`` settings of a stack, validated with file:line errors, and the binary.

Kept apart from the engine because config.py parses settings for every command and the
runner asks which environment variables a stack may see; none of that runs Terraform.
A relative ``binary`` or a var/backend file outside the stack is refused here, before
any stack starts (docs/terraform.md#settings).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import yaml

from gitops_push.ci import ENV_TERRAFORM_BIN
from gitops_push.errors import UserError

if TYPE_CHECKING:
    from gitops_push.config import Stack
    from gitops_push.config.schema import Section

BIN_ENV = ENV_TERRAFORM_BIN  # overrides the default binary, not a stack's setting
DEFAULT_BINARY = "terraform"
DEFAULT_LOCK_TIMEOUT = 300.0
SETTINGS_KEYS = (
    "binary",
    "workspace",
    "var_files",
    "vars",
    "backend_config",
    "env",
    "timeout",
    "parallelism",
    "lock_timeout",
    "verify_after_apply",
)

_WORKSPACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_VAR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class TerraformSettings:
    """A stack's ``terraform:`` settings (docs/terraform.md#settings)."""

    binary: str | None = None  # None: $GITOPS_PUSH_TERRAFORM_BIN, else "terraform"
    workspace: str | None = None  # None: leave Terraform's selection alone ("default")
    var_files: tuple[str, ...] = ()  # relative to the stack, inside it
    vars: tuple[tuple[str, str], ...] = ()  # non-secret; passed as -var name=value
    backend_config: tuple[str, ...] = ()  # each a file in the stack or key=value
    env: tuple[str, ...] = ()  # environment variables passed through (TF_VAR_*, tokens)
    timeout: float | None = None  # per terraform command
    parallelism: int | None = None
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    # the post-apply plan refreshes every resource: minutes of API calls on a big stack
    verify_after_apply: bool = True


def parse_settings(section: Section) -> TerraformSettings:
    """Validate ``terraform:`` (merged over ``defaults: terraform``), errors at file:line."""
    section.only(SETTINGS_KEYS)
    binary = section.str("binary", None)
    if binary is not None and (problem := binary_problem(binary)):
        raise section.error("binary", problem, section.value_node("binary"))
    timeout = section.duration("timeout", None)
    if timeout is not None and timeout <= 0:
        raise section.error("timeout", "must be greater than 0", section.value_node("timeout"))
    var_files = section.str_list("var_files")
    _check_stack_files(section, "var_files", var_files)
    return TerraformSettings(
        binary=binary,
        workspace=section.str("workspace", None, pattern=_WORKSPACE_RE),
        var_files=var_files,
        vars=tuple(section.str_map("vars", key_pattern=_VAR_NAME_RE).items()),
        backend_config=_parse_backend_config(section),
        env=section.str_list("env", pattern=_ENV_NAME_RE),
        timeout=timeout,
        parallelism=section.int("parallelism", None, minimum=1),
        lock_timeout=section.duration("lock_timeout", DEFAULT_LOCK_TIMEOUT) or 0.0,
        verify_after_apply=section.bool("verify_after_apply", True),
    )


def binary_problem(value: str) -> str | None:
    """Why ``value`` cannot name the binary: a relative path would resolve against the stack."""
    if not value.strip() or "\x00" in value or "\n" in value:
        return "must be a program name or an absolute path"
    if "/" in value and not PurePosixPath(value).is_absolute():
        return (f"{value!r} is a relative path; use an absolute path or a name looked up "
                "on PATH (like 'tofu')")
    return None


def _inside_problem(value: str) -> str | None:
    p = PurePosixPath(value)
    if not value or p.is_absolute() or re.match(r"^[A-Za-z]:", value) or "\x00" in value:
        return f"{value!r} must be a path relative to the stack directory"
    if ".." in p.parts:
        return f"{value!r} escapes the stack directory ('..' is not allowed)"
    return None


def _check_stack_files(section: Section, key: str, values: Sequence[str | None]) -> None:
    """Files Terraform reads must live in the stack: a merge request cannot point at /etc."""
    node = section.value_node(key)
    items = node.value if isinstance(node, yaml.SequenceNode) else []
    for value, item in zip(values, items, strict=True):
        if value is not None and (problem := _inside_problem(value)):
            raise section.error(key, problem, item)


def _parse_backend_config(section: Section) -> tuple[str, ...]:
    """A mapping, or a list of files and ``key=value`` strings (Terraform's own rule)."""
    node = section.value_node("backend_config")
    if node is None or section.raw("backend_config") is None:
        return ()
    if isinstance(node, yaml.MappingNode):
        return tuple(f"{k}={v}" for k, v in section.str_map("backend_config").items())
    if not isinstance(node, yaml.SequenceNode):
        raise section.error(
            "backend_config", "must be a list (files or key=value) or a mapping", node)
    items = tuple(str(i) for i in section.str_list("backend_config"))
    _check_stack_files(section, "backend_config", [None if "=" in i else i for i in items])
    return items


def env_names(settings: TerraformSettings) -> tuple[str, ...]:
    """Variables the runner passes through: the stack's ``env`` and the binary override."""
    return (*settings.env, BIN_ENV)


def resolve_binary(settings: TerraformSettings, env: Mapping[str, str]) -> str:
    """The stack's ``binary``, else $GITOPS_PUSH_TERRAFORM_BIN, else ``terraform``."""
    if settings.binary:
        return settings.binary
    value = env.get(BIN_ENV, "")
    if value:
        if problem := binary_problem(value):
            raise UserError(f"{BIN_ENV}: {problem}")
        return value
    return DEFAULT_BINARY


def settings_of(stack: Stack) -> TerraformSettings:
    settings = stack.settings
    return settings if isinstance(settings, TerraformSettings) else TerraformSettings()
