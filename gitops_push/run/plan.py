"""The deploy workflow: ``plan``, ``apply`` and ``drift`` across stacks.

Composes change detection, engines, the runner, saved plans, locks and the audit
trail. Returns a ``RunReport`` (data); the CLI prints it and takes the exit code.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from gitops_push import ci as ci_env
from gitops_push.config import Config
from gitops_push.detect import range as range_mod
from gitops_push.detect.changes import ChangeSet, StackChange, StackStatus
from gitops_push.errors import ExitCode
from gitops_push.git import Repo
from gitops_push.run import saved_plans as plans
from gitops_push.run.context import (
    base_worktree,
    check_engines,
    lint_message,
    make_ctx,
    new_session,
    plan_message,
    prefetch_tools,
)
from gitops_push.run.model import Reporter, Result, RunOptions, RunReport, Session, StackOutcome
from gitops_push.run.select import depends_fn, select, select_for_apply
from gitops_push.run.waves import Task, base_outcome, default_parallel, run_waves, run_width

# -- environment per stack and phase ---------------------------------------------------


# -- selection --------------------------------------------------------------------------


# -- what to apply: per-stack base from the audit trail -----------------------------------


# -- plan ---------------------------------------------------------------------------------
def plan_task(session: Session, base: str | None) -> Task:
    opts = session.options

    def task(change: StackChange) -> StackOutcome:
        stack = change.stack
        engine = session.engine(stack)
        with base_worktree(session, change, base) as old_dir:
            ctx = make_ctx(session, stack, "plan", stack_dir=old_dir)
            session.reporter.stack_step(stack.name, "lint")
            lint = engine.lint(stack, ctx)
            if not lint.ok:
                return base_outcome(change, Result.LINT_FAILED, lint_message(lint), lint=lint,
                                    error=lint_message(lint))
            session.reporter.stack_step(stack.name, "plan")
            plan = engine.plan(stack, ctx, destroy=change.status == StackStatus.REMOVED)
        if opts.plan_dir is not None:
            removed = change.status == StackStatus.REMOVED
            fhash = (plans.files_hash(session.repo, base, stack) if removed and base
                     else plans.files_hash(session.repo, session.head, stack))
            plans.write(opts.plan_dir, plans.PlanMeta(
                stack=stack.name, type=stack.type, commit=session.head, files_hash=fhash,
                tool_version=plan.tool_version, created_at=plans.now(),
                destroy=plan.destroy, has_changes=plan.has_changes))
        result = Result.PLANNED if plan.has_changes else Result.NO_CHANGES
        return base_outcome(change, result, plan_message(plan), lint=lint, plan=plan)

    return task


def plan_selection(repo: Repo, config: Config, opts: RunOptions, environ: Mapping[str, str]
                   ) -> tuple[ChangeSet, list[StackOutcome], list[str]]:
    """On the default branch, plan what ``apply`` would apply (audit-trail bases);
    elsewhere (a merge request, a laptop branch), the changes against the base."""
    explicit = opts.base is not None or opts.head is not None or opts.all_stacks or opts.stacks
    if not explicit:
        ctx = ci_env.detect(environ)
        default = range_mod.default_branch(repo, config, ctx)
        is_mr = ctx.base_kind == "pr-base"
        current = repo.current_branch() or ctx.branch  # CI runners often detach HEAD
        if default is not None and not is_mr and current == default:
            from gitops_push.audit.trail import Trail

            records = Trail(repo, config.audit, environ=environ).records()
            return select_for_apply(repo, config, opts, environ, records)
    return select(repo, config, opts, environ), [], []


def plan(repo: Repo, config: Config, opts: RunOptions, environ: Mapping[str, str],
         reporter: Reporter | None = None, cancel: threading.Event | None = None) -> RunReport:
    probe = prefetch_tools(config, environ)
    cs, stale, sel_warnings = plan_selection(repo, config, opts, environ)
    with tempfile.TemporaryDirectory(prefix="gitops-push-") as tmp:
        session = new_session(repo, config, opts, environ, reporter, cancel, cs.range.head,
                              Path(tmp))
        report = RunReport("plan", session.run_id, cs.range.head, cs.range.base,
                           cs.range.source, warnings=[*cs.range.warnings, *sel_warnings],
                           outcomes=list(stale))
        if not cs.stacks:
            report.notes.append("no stack changed")
            return report
        if opts.plan_dir is not None:
            opts.plan_dir.mkdir(parents=True, exist_ok=True)
        probe.join()
        check_engines(session, [c.stack for c in cs.stacks])
        session.width = run_width(cs.stacks, opts.parallel or default_parallel())
        report.outcomes = stale + run_waves(cs.stacks, plan_task(session, cs.range.base),
                                    parallel=opts.parallel or default_parallel(),
                                    reporter=session.reporter, cancel=session.cancel,
                                    depends=depends_fn(cs.all_stacks))
    report.interrupted = session.cancel.is_set()
    report.exit_code = plan_exit_code(report, opts)
    return report


def lint(repo: Repo, config: Config, opts: RunOptions, environ: Mapping[str, str],
         reporter: Reporter | None = None, cancel: threading.Event | None = None) -> RunReport:
    """Offline checks only (formatting, validation, schemas): no credentials, no cluster."""
    cs = select(repo, config, opts, environ)
    with tempfile.TemporaryDirectory(prefix="gitops-push-") as tmp:
        session = new_session(repo, config, opts, environ, reporter, cancel, cs.range.head,
                              Path(tmp))
        report = RunReport("lint", session.run_id, cs.range.head, cs.range.base,
                           cs.range.source, warnings=list(cs.range.warnings))
        if not cs.stacks:
            report.notes.append("no stack changed")
            return report
        check_engines(session, [c.stack for c in cs.stacks if c.status != StackStatus.REMOVED])

        def task(change: StackChange) -> StackOutcome:
            if change.status == StackStatus.REMOVED:
                return base_outcome(change, Result.SKIPPED, "removed from git: nothing to lint")
            ctx = make_ctx(session, change.stack, "plan")
            ctx.lint_only = True
            session.reporter.stack_step(change.stack.name, "lint")
            result = session.engine(change.stack).lint(change.stack, ctx)
            if not result.ok:
                return base_outcome(change, Result.LINT_FAILED, lint_message(result), lint=result,
                                    error=lint_message(result))
            warnings = sum(d.severity == "warning" for d in result.diagnostics)
            return base_outcome(change, Result.CLEAN, f"lint ok ({warnings} warning(s))" if warnings
                                else "lint ok", lint=result)

        session.width = run_width(cs.stacks, opts.parallel or default_parallel())
        report.outcomes = run_waves(cs.stacks, task, parallel=opts.parallel or default_parallel(),
                                    reporter=session.reporter, cancel=session.cancel,
                                    depends=lambda name: set())
    report.interrupted = session.cancel.is_set()
    report.exit_code = plan_exit_code(report, opts)
    return report


def plan_exit_code(report: RunReport, opts: RunOptions) -> int:
    if report.interrupted:
        return ExitCode.TERMINATED
    if any(not o.ok and o.status != "stale" for o in report.outcomes):
        return ExitCode.FAILED
    if opts.detailed_exitcode and any(o.result == Result.PLANNED for o in report.outcomes):
        return ExitCode.CHANGES_PENDING
    return ExitCode.OK
