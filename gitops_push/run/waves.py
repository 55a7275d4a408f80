"""Running stacks: dependency waves, parallel workers, failure propagation.

The runner knows nothing about plan vs apply: it runs a task per stack, wave by wave,
``parallel`` at a time, and turns a failed stack into ``skipped: dependency failed``
for every stack that depends on it. Progress goes to a ``Reporter``; results are data.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from gitops_push.detect.changes import StackChange
from gitops_push.errors import GitopsPushError, ToolError
from gitops_push.run.model import Reporter, Result, StackOutcome

Task = Callable[[StackChange], StackOutcome]


def default_parallel() -> int:
    return max(1, os.cpu_count() or 1)


def run_width(changes: Sequence[StackChange], parallel: int) -> int:
    """How many stacks can run at once: ``parallel``, or fewer if no wave is that wide."""
    widths: dict[int, int] = {}
    for c in changes:
        widths[c.wave] = widths.get(c.wave, 0) + 1
    return max(1, min(parallel, max(widths.values(), default=1)))


def go_threads(width: int, environ: Mapping[str, str]) -> dict[str, str]:
    """``GOMAXPROCS`` for the tools (terraform, kubectl and providers are Go programs) when
    ``width`` stacks run at once: each gets its share of the CPUs instead of all of them,
    which on a 2-CPU runner made 8 concurrent plans about 15% faster. A value the user
    set wins; one stack at a time gets no limit."""
    if width <= 1 or "GOMAXPROCS" in environ:
        return {}
    return {"GOMAXPROCS": str(max(1, (os.cpu_count() or 1) // width))}


def base_outcome(change: StackChange, result: Result, message: str = "", **kw: Any
                 ) -> StackOutcome:
    s = change.stack
    return StackOutcome(name=s.name, type=s.type, path=s.path, wave=change.wave,
                        status=change.status, result=result, message=message, **kw)


def guarded(task: Task, change: StackChange, cancel: threading.Event) -> StackOutcome:
    """Run a task; any error becomes a failed outcome carrying the message (never a crash)."""
    start = time.monotonic()
    if cancel.is_set():
        return base_outcome(change, Result.INTERRUPTED, "run interrupted before this stack started")
    try:
        outcome = task(change)
    except ToolError as exc:
        result = Result.INTERRUPTED if cancel.is_set() else Result.FAILED
        outcome = base_outcome(change, result, exc.message, error=str(exc))
    except GitopsPushError as exc:  # a lock wait given up because the run was stopped, too
        result = Result.INTERRUPTED if cancel.is_set() else Result.FAILED
        outcome = base_outcome(change, result, exc.message, error=str(exc),
                               extra={"error_code": exc.code})
    except Exception as exc:  # a bug in an engine must not take the other stacks down
        why = f"internal error: {type(exc).__name__}: {exc}"
        outcome = base_outcome(change, Result.FAILED, why, error=why)
    return replace(outcome, duration=time.monotonic() - start)


def run_waves(changes: Sequence[StackChange], task: Task, *, parallel: int,
              reporter: Reporter, cancel: threading.Event,
              depends: Callable[[str], set[str]],
              outcomes: dict[str, StackOutcome] | None = None) -> list[StackOutcome]:
    """Run ``task`` per stack, wave by wave; dependents of failures are skipped.

    ``outcomes`` (stack -> outcome) is filled as stacks finish, so a caller still has
    them when Ctrl-C ends the wait: the run is then cancelled (running tools stop
    gracefully) and every started stack is waited for before the exception goes on.
    """
    outcomes = {} if outcomes is None else outcomes
    waves: dict[int, list[StackChange]] = {}
    for c in changes:
        waves.setdefault(c.wave, []).append(c)
    with ThreadPoolExecutor(max_workers=max(1, parallel),
                            thread_name_prefix="gitops-push") as pool:
        for wave in sorted(waves):
            futures: dict[str, Future[StackOutcome]] = {}
            for c in waves[wave]:
                failed_deps = sorted(
                    d for d in depends(c.stack.name)
                    if d in outcomes and not outcomes[d].ok
                )
                if failed_deps:
                    out = base_outcome(c, Result.SKIPPED,
                                       f"skipped: dependency failed ({', '.join(failed_deps)})")
                    outcomes[c.stack.name] = out
                    reporter.stack_finished(out)
                    continue
                if cancel.is_set():
                    out = base_outcome(c, Result.INTERRUPTED, "run interrupted before this stack")
                    outcomes[c.stack.name] = out
                    reporter.stack_finished(out)
                    continue
                reporter.stack_started(c.stack.name)
                futures[c.stack.name] = pool.submit(guarded, task, c, cancel)
            for name, fut in futures.items():
                try:
                    out = fut.result()
                except BaseException:  # Ctrl-C in this thread: stop the others, then go
                    cancel.set()
                    _drain(futures, outcomes)
                    raise
                outcomes[name] = out
                reporter.stack_finished(out)
    return [outcomes[c.stack.name] for c in changes]


def _drain(futures: Mapping[str, Future[StackOutcome]],
           outcomes: dict[str, StackOutcome]) -> None:
    """Collect what the cancelled stacks return (a further Ctrl-C skips the one
    being waited for)."""
    for name, fut in futures.items():
        if name not in outcomes:
            with contextlib.suppress(BaseException):
                outcomes[name] = fut.result()
