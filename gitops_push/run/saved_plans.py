"""Saved plans (``plan --plan-dir``): metadata that lets ``apply`` refuse a stale plan.

Each stack's directory under the plan dir holds the engine's artifact plus
``gitops-push-plan.json``: stack, commit, a hash of every file the stack reads (its own
files, local modules, file() targets, kustomize references), tool version, created-at.
``apply --plan-dir`` applies a plan only when commit and hash match what is checked out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gitops_push import __version__
from gitops_push.config import Stack
from gitops_push.detect.changes import stack_inputs
from gitops_push.detect.discovery import glob_match
from gitops_push.detect.inputs import RefIndex
from gitops_push.errors import GitopsPushError, UserError
from gitops_push.fsutil import atomic_write
from gitops_push.git import Repo

METADATA = "gitops-push-plan.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PlanMeta:
    """What a saved plan was made from, checked before it is applied."""

    stack: str
    type: str
    commit: str
    files_hash: str
    tool_version: str
    created_at: str
    destroy: bool
    has_changes: bool

    def to_json(self) -> str:
        body = {"schema_version": SCHEMA_VERSION, "gitops_push_version": __version__,
                **self.__dict__}
        return json.dumps(body, indent=2, sort_keys=True)


class StalePlan(GitopsPushError):
    code = "stale-plan"


def stack_dir(plan_dir: Path, stack: Stack) -> Path:
    return plan_dir / stack.name


def files_hash(repo: Repo, sha: str, stack: Stack) -> str:
    """sha256 over (path, mode, blob) of every file the stack reads at ``sha``."""
    tree = repo.tree(sha)
    paths = set(tree.files_under(stack.path))
    for inp in stack_inputs(RefIndex.of(repo, tree), stack):
        if inp.is_dir:
            paths.update(tree.files_under(inp.path))
        elif tree.is_file(inp.path):
            paths.add(inp.path)
    for g in stack.watch:
        paths.update(p for p in tree.listing if glob_match(g, p))
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(f"{p}\0{tree.mode(p)}\0{tree.blob(p)}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def write(plan_dir: Path, meta: PlanMeta) -> Path:
    path = plan_dir / meta.stack / METADATA
    atomic_write(path, meta.to_json(), what="plan metadata")
    return path


def read(plan_dir: Path, stack: Stack) -> PlanMeta:
    path = stack_dir(plan_dir, stack) / METADATA
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UserError(
            f"no saved plan for stack {stack.name!r} in {plan_dir} "
            "(run `gitops-push plan --plan-dir` for this commit first)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable plan metadata {path}: {exc}") from exc
    try:
        return PlanMeta(**{k: raw[k] for k in PlanMeta.__dataclass_fields__})
    except (KeyError, TypeError) as exc:
        raise UserError(f"plan metadata {path} is incomplete ({exc})") from exc


def verify(meta: PlanMeta, stack: Stack, commit: str, current_hash: str) -> None:
    """Refuse a plan made for other files than the ones being applied."""
    if meta.stack != stack.name or meta.type != stack.type:
        raise StalePlan(f"stack {stack.name!r}: the saved plan belongs to {meta.stack!r}")
    if meta.commit != commit:
        raise StalePlan(
            f"stack {stack.name!r}: the saved plan was made at commit {meta.commit[:12]}, "
            f"but {commit[:12]} is checked out; re-run plan for this commit"
        )
    if meta.files_hash != current_hash:
        raise StalePlan(
            f"stack {stack.name!r}: the stack's files changed since the plan was saved "
            "(file hash differs); re-run plan"
        )


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
