"""drift: compare live state with git for every (or the selected) stack; ``--fix`` re-applies
what drifted. Exit code 4 when something drifted.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from gitops_push import audit
from gitops_push import ci as ci_env
from gitops_push.config import Config
from gitops_push.detect.changes import ChangeSet, StackChange, StackStatus
from gitops_push.errors import ExitCode
from gitops_push.git import Repo
from gitops_push.lock import RunGate
from gitops_push.run.apply import apply_task
from gitops_push.run.context import check_engines, make_ctx, new_session, prefetch_tools
from gitops_push.run.guards import check_branch, check_clean
from gitops_push.run.model import Reporter, Result, RunOptions, RunReport, StackOutcome
from gitops_push.run.record import (
    Background,
    flush_spool,
    interrupted_warnings,
    open_trail,
    overall_outcome,
    record_base,
    run_recorded,
)
from gitops_push.run.select import depends_fn, select
from gitops_push.run.waves import Task, base_outcome


def drift(repo: Repo, config: Config, opts: RunOptions, environ: Mapping[str, str],
          reporter: Reporter | None = None, cancel: threading.Event | None = None
          ) -> RunReport:
    """Compare live state with git for every (or the selected) stack; ``--fix`` re-applies."""
    if opts.fix:
        check_branch(repo, config, opts, environ)
        check_clean(repo)
    probe = prefetch_tools(config, environ)
    sel = replace(opts, all_stacks=not opts.stacks, base=None)
    cs = select(repo, config, sel, environ)
    cs = ChangeSet(cs.range, tuple(c for c in cs.stacks if c.status != StackStatus.REMOVED),
                   cs.all_stacks)
    record = drift_records(opts, environ)
    trail = open_trail(repo, config, environ, list(cs.all_stacks))
    # a check that records nothing reads and writes nothing on origin (not even the spool)
    warnings = flush_spool(trail) if record else []
    records = trail.records() if record else []
    with tempfile.TemporaryDirectory(prefix="gitops-push-") as tmp:
        session = new_session(repo, config, opts, environ, reporter, cancel, cs.range.head,
                              Path(tmp))
        interrupted, interrupted_ids = interrupted_warnings(repo, records, session.run_id)
        report = RunReport("drift", session.run_id, cs.range.head, None, "all",
                           warnings=warnings + interrupted)
        if not record:
            report.notes.append("not recorded in the audit trail (a local check; --record "
                                "records it)")
        if not cs.stacks:
            report.notes.append("no stacks")
            return report
        probe.join()
        check_engines(session, [c.stack for c in cs.stacks])
        base_rec = record_base(session, "drift", cs.range, repo.current_branch())
        started_at = audit.now_utc()
        def make_task(gate: RunGate, started: Background[dict[str, Any]]) -> Task:
            fixer = apply_task(session, {}, gate, started, fix_only=True)

            def task(change: StackChange) -> StackOutcome:
                stack = change.stack
                session.reporter.stack_step(stack.name, "drift")
                result = session.engine(stack).drift(stack, make_ctx(session, stack, "drift"))
                if not result.drifted:
                    return base_outcome(change, Result.CLEAN, "no drift", drift=result)
                message = f"{len(result.items)} resource(s) drifted"
                if not opts.fix:
                    return base_outcome(change, Result.DRIFTED, message, drift=result)
                fixed = fixer(change)
                return replace(fixed, drift=result, message=f"{message}; {fixed.message}")

            return task

        def overall(rep: RunReport) -> str:
            drifted = any(o.result == Result.DRIFTED for o in rep.outcomes)
            return "drift" if drifted else overall_outcome(rep)

        run_recorded(session, trail, report, cs, {**base_rec, "started_at": started_at},
                      {"interrupted_runs": interrupted_ids,
                       "stacks": [{"name": c.stack.name} for c in cs.stacks]},
                      make_task,
                      # detection reports every stack; a fix skips dependents of a failure
                      depends_fn(cs.all_stacks) if opts.fix else (lambda name: set()),
                      # --fix may apply any stack: its locks are taken with the record.
                      # A check that changes nothing takes no lock (docs/audit.md).
                      overall, lock=opts.fix, record=record)
    report.exit_code = drift_exit_code(report, fix=opts.fix)
    return report


def drift_records(opts: RunOptions, environ: Mapping[str, str]) -> bool:
    """Whether a drift run writes to the audit trail (issue 12). ``--fix`` changes
    things and always records, like apply. A check that changes nothing records when
    asked (``--record``), or in CI unless told not to (``--no-record``): a drift history
    is worth having, but a laptop writes nothing to shared state unless asked."""
    if opts.fix:
        return True
    if opts.record is not None:
        return opts.record
    return ci_env.detect(environ).system != "local"


def drift_exit_code(report: RunReport, *, fix: bool = True) -> int:
    """A check that changes nothing keeps its own exit code (0 clean, 4 drift) when its
    record could not be pushed: the record waits in the spool, with a warning."""
    if report.interrupted:
        return ExitCode.TERMINATED
    failed = (Result.FAILED, Result.LINT_FAILED, Result.REFUSED)
    if any(o.result in failed for o in report.outcomes):
        return ExitCode.FAILED
    if any(o.result == Result.DRIFTED for o in report.outcomes):
        return ExitCode.DRIFT_DETECTED
    if fix and report.audit is not None and not report.audit.get("pushed", True):
        return ExitCode.AUDIT_NOT_PUSHED
    return ExitCode.OK
