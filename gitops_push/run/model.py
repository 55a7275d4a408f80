"""The state of one run, shared by every command module: options, the report, the session, each
stack's outcome and the words results and statuses are made of.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from gitops_push import ci as ci_env
from gitops_push import engines
from gitops_push.config import Config, Stack
from gitops_push.detect.changes import StackStatus
from gitops_push.engines.base import (
    ApplyResult,
    DriftResult,
    Engine,
    LintResult,
    PlanResult,
)
from gitops_push.errors import ExitCode
from gitops_push.git import Repo
from gitops_push.words import Word

DEPLOY_COMMANDS = ("apply", "rollback", "drift")


@dataclass(frozen=True)
class RunOptions:
    """What the command line asked of one run."""

    command: str  # plan | apply | drift
    base: str | None = None
    head: str | None = None
    all_stacks: bool = False
    stacks: tuple[str, ...] = ()
    plan_dir: Path | None = None
    parallel: int | None = None
    detailed_exitcode: bool = False
    allow_branch: bool = False
    allow_destroy: bool = False
    force_conflicts: bool = False
    lock_timeout: float = 600.0
    lock_ttl: float = 3600.0
    fix: bool = False
    record: bool | None = None  # drift: --record / --no-record (None: record in CI only)
    flags: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class RunReport:
    """Everything one run did, for the output and the audit record."""

    command: str
    run_id: str
    head: str
    base: str | None
    base_source: str
    outcomes: list[StackOutcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    audit: dict[str, Any] | None = None
    exit_code: int = ExitCode.OK
    interrupted: bool = False

    @property
    def status(self) -> RunStatus:
        if self.exit_code in (ExitCode.OK, ExitCode.CHANGES_PENDING, ExitCode.DRIFT_DETECTED):
            return RunStatus.SUCCESS
        if any(o.ok for o in self.outcomes):
            return RunStatus.PARTIAL
        return RunStatus.ERROR


@dataclass
class Session:
    """Per-run state shared by the stack tasks."""

    repo: Repo
    config: Config
    environ: Mapping[str, str]
    options: RunOptions
    run_id: str
    head: str
    reporter: Reporter
    cancel: threading.Event
    work_root: Path
    # the CI context, built once per run (ci.detect) and read from here by the run
    ci: ci_env.CIContext = field(default_factory=lambda: ci_env.CIContext(system="local"))
    engines: dict[str, Engine] = field(default_factory=dict)
    width: int = 1  # stacks running at once (runner.run_width), set before the run
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def engine(self, stack: Stack) -> Engine:
        with self._lock:
            if stack.type not in self.engines:
                self.engines[stack.type] = engines.spec(stack.type).factory()
            return self.engines[stack.type]

    @property
    def options_map(self) -> dict[str, Any]:
        """The run's options by name, for the engines' context extras."""
        return {f.name: getattr(self.options, f.name) for f in fields(self.options)}


class Result(Word):
    """What happened to one stack: one word, the ``result`` of the envelope and record."""

    PLANNED = "planned"
    NO_CHANGES = "no-changes"
    APPLIED = "applied"
    DESTROYED = "destroyed"
    CLEAN = "clean"
    DRIFTED = "drifted"
    FIXED = "fixed"
    FAILED = "failed"
    LINT_FAILED = "lint-failed"
    SKIPPED = "skipped"
    REFUSED = "refused"
    INTERRUPTED = "interrupted"


class RunStatus(Word):
    """The envelope's ``status`` of a whole run."""

    SUCCESS = "success"
    PARTIAL = "partial"
    ERROR = "error"


SUCCESS_RESULTS = frozenset({Result.APPLIED, Result.NO_CHANGES, Result.PLANNED, Result.CLEAN,
                             Result.FIXED, Result.DESTROYED})


@dataclass(frozen=True)
class StackOutcome:
    """What happened to one stack. ``result`` is one word; ``message`` says why."""

    name: str
    type: str
    path: str
    wave: int
    status: StackStatus  # from change detection
    result: Result
    message: str = ""
    error: str | None = None
    duration: float = 0.0
    lint: LintResult | None = None
    plan: PlanResult | None = None
    apply: ApplyResult | None = None
    drift: DriftResult | None = None
    verify: DriftResult | None = None  # the drift check right after an apply
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.result in SUCCESS_RESULTS


class Reporter(Protocol):
    """Where progress goes (output.py implements it for terminals and CI logs)."""

    def stack_started(self, name: str) -> None: ...
    def stack_step(self, name: str, step: str) -> None: ...
    def stack_line(self, name: str, line: str) -> None: ...
    def stack_finished(self, outcome: StackOutcome) -> None: ...
    def warn(self, text: str) -> None: ...


class NullReporter:
    def stack_started(self, name: str) -> None:
        pass

    def stack_step(self, name: str, step: str) -> None:
        pass

    def stack_line(self, name: str, line: str) -> None:
        pass

    def stack_finished(self, outcome: StackOutcome) -> None:
        pass

    def warn(self, text: str) -> None:
        pass
