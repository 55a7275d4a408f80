"""The small interface every engine implements: lint / plan / apply / drift.

Engines return data (the dataclasses below) and never print. Progress lines go to
``ctx.on_line``; the orchestration (run/waves.py) decides what to show.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gitops_push.config import Stack
    from gitops_push.config.schema import Section
    from gitops_push.detect.inputs import Input, RefIndex


@dataclass(frozen=True)
class Diagnostic:
    """A lint finding, located as precisely as the tool allows."""

    severity: str  # "error" | "warning" | "note"
    message: str
    file: str | None = None  # repo-relative path
    line: int | None = None

    @property
    def location(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}"
        return self.file or ""

    def __str__(self) -> str:
        loc = self.location
        return f"{loc}: {self.message}" if loc else self.message


@dataclass(frozen=True)
class LintResult:
    """What lint found in one stack; an error fails the stack."""

    stack: str
    diagnostics: tuple[Diagnostic, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


@dataclass(frozen=True)
class Change:
    """One resource/object a plan or apply touches.

    ``action``: create | update | delete | replace | read | no-op | prune.
    ``fields``: changed attribute paths (never values of sensitive fields).
    """

    address: str
    action: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutputChange:
    """An output a plan changes (its value is never kept)."""

    name: str
    action: str
    sensitive: bool = False


@dataclass(frozen=True)
class Counts:
    """Changes of a plan or apply by kind, as tables and records show them."""

    add: int = 0
    change: int = 0
    destroy: int = 0
    replace: int = 0

    @property
    def total(self) -> int:
        return self.add + self.change + self.destroy + self.replace

    @classmethod
    def of(cls, changes: tuple[Change, ...]) -> Counts:
        return cls(
            add=sum(c.action == "create" for c in changes),
            change=sum(c.action == "update" for c in changes),
            destroy=sum(c.action in ("delete", "prune") for c in changes),
            replace=sum(c.action == "replace" for c in changes),
        )


@dataclass(frozen=True)
class PlanResult:
    """What a plan would do. ``artifact`` is the engine's saved-plan directory, if any."""

    stack: str
    changes: tuple[Change, ...] = ()
    outputs: tuple[OutputChange, ...] = ()
    destroy: bool = False
    artifact: Path | None = None
    tool_version: str = ""
    notes: tuple[str, ...] = ()
    # Why applying this plan destroys more than its changes name (pruning a Namespace
    # deletes everything in it): the runner applies it only with --allow-destroy.
    needs_consent: tuple[str, ...] = ()

    @property
    def counts(self) -> Counts:
        return Counts.of(self.changes)

    @property
    def has_changes(self) -> bool:
        return any(c.action not in ("no-op", "read") for c in self.changes) or any(
            o.action not in ("no-op",) for o in self.outputs
        )


@dataclass(frozen=True)
class ApplyResult:
    """What an apply did, with the tail of the tool's output."""

    stack: str
    changes: tuple[Change, ...] = ()
    duration: float = 0.0
    output_tail: str = ""

    @property
    def counts(self) -> Counts:
        return Counts.of(self.changes)


@dataclass(frozen=True)
class DriftItem:
    """One drifted resource/object.

    ``kind``: ``changed`` (live differs from git/state), ``deleted`` (gone from the live
    system), ``extra`` (live but not in git), ``config`` (git differs from recorded state).
    """

    address: str
    kind: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class DriftResult:
    """Where live state differs from git for one stack."""

    stack: str
    items: tuple[DriftItem, ...] = ()

    @property
    def drifted(self) -> bool:
        return bool(self.items)


@dataclass
class EngineContext:
    """Everything an engine call may use; built by the runner per stack and phase.

    ``env`` is already filtered to the base variables plus what the stack names for the
    current ``phase`` (plan / apply / drift): engines pass it on unchanged.
    """

    repo_root: Path
    stack_dir: Path  # absolute directory of the stack's files (may be a temp worktree)
    env: Mapping[str, str]
    phase: str
    work_dir: Path  # scratch space for this stack and run (plans, rendered manifests)
    secrets: tuple[str, ...] = ()  # values to redact from anything captured
    on_line: Callable[[str], None] = lambda line: None
    cancel: threading.Event = field(default_factory=threading.Event)
    lint_only: bool = False  # no plan follows: lint must not need backend/cluster access
    # what the engine's ``EngineSpec.context`` added (a plugin cache, a flag only this
    # engine reads), plus ``run_id`` and ``project``
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """What the runner calls. One instance per run; methods are called from worker threads."""

    name: str

    def check(self, stacks: list[Stack], env: Mapping[str, str]) -> None:
        """Fail fast (ToolError) if the tool is missing or too old, before any stack runs."""

    def lint(self, stack: Stack, ctx: EngineContext) -> LintResult: ...

    def plan(self, stack: Stack, ctx: EngineContext, *, destroy: bool = False) -> PlanResult:
        """Plan; with ``ctx.work_dir`` holding the artifact a later ``apply`` uses."""

    def load_plan(self, stack: Stack, ctx: EngineContext, artifact: Path) -> PlanResult:
        """Re-read a saved plan (from ``plan --plan-dir``) for apply; raise if stale."""

    def apply(self, stack: Stack, ctx: EngineContext, plan: PlanResult) -> ApplyResult: ...

    def drift(self, stack: Stack, ctx: EngineContext, *, after_apply: bool = False
              ) -> DriftResult:
        """Live state vs git. ``after_apply``: the post-apply check of a stack this run
        just applied; an engine may skip what cannot have changed since its plan."""


@dataclass(frozen=True)
class EngineSpec:
    """Module-level ``ENGINE`` of each engine module."""

    name: str
    parse_settings: Callable[[Section], Any]
    factory: Callable[[], Engine]
    # Settings that name environment variables to pass through, for least privilege.
    env_names: Callable[[Any], tuple[str, ...]] = lambda settings: ()
    # Of those (and of the credentials), the ones that say *where* rather than hold a
    # credential (a kubeconfig path): passed through, but their values are not secrets.
    location_env_names: Callable[[Any], tuple[str, ...]] = lambda settings: ()
    # Credentials the tool reads from files those variables point at (a kubeconfig's
    # tokens and keys): value -> what it is, for redaction and the audit record.
    file_secrets: Callable[[Any, Mapping[str, str], Path], dict[str, str]] = (
        lambda settings, env, root: {})
    # Probe the tools these stacks need and cache the answers for ``Engine.check``; run in
    # a thread while git is read, errors ignored (``check`` reports them).
    prefetch: Callable[[list[Stack], Mapping[str, str]], None] = lambda stacks, env: None
    # -- change detection and discovery (detect/ asks; it never names an engine) -------
    # The paths outside its directory a stack at ``stack_dir`` reads (local modules,
    # file() targets, kustomize bases), with why; from the commit the index holds.
    inputs: Callable[[RefIndex, str], list[Input]] = lambda index, stack_dir: []
    # Read everything ``inputs`` will need for many stacks at once (one batched read).
    preload_inputs: Callable[[RefIndex], None] = lambda index: None
    # Directories that are stacks of this engine, for ``discover:``; ``others`` is the
    # area other engines' files occupy, ``skipped`` says which directories never count.
    discover: Callable[[RefIndex, set[str], Callable[[str], bool]], list[str]] = (
        lambda index, others, skipped: [])
    # The directories this engine's files occupy, where no other engine discovers stacks.
    area: Callable[[RefIndex, Callable[[str], bool]], set[str]] = (
        lambda index, skipped: set())
    # -- the run --------------------------------------------------------------------
    # Extras for EngineContext.extra: (environment, scratch root, the run's options).
    context: Callable[[Mapping[str, str], Path, Mapping[str, Any]], dict[str, Any]] = (
        lambda environ, work_root, options: {})
    # Files a stack directory holds untracked that a run carries into a temporary
    # worktree and back (a local state file), by suffix; directories never carried.
    carried_suffixes: tuple[str, ...] = ()
    not_carried: frozenset[str] = frozenset()
