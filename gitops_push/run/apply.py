"""``apply`` and ``drift``: the commands that change live systems.

Guards first (default branch, clean tree, destroy consent, stale runs), then per stack:
saved or fresh plan, a per-stack lock around the apply, a drift check to confirm the
live state matches git. Every run writes a ``started`` and a ``finished`` audit record.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from gitops_push import audit
from gitops_push.config import Config
from gitops_push.detect import range as range_mod
from gitops_push.detect.changes import ChangeSet, StackChange, StackStatus
from gitops_push.detect.discovery import resolve_stacks
from gitops_push.errors import ExitCode
from gitops_push.git import Repo
from gitops_push.lock import RunGate
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
from gitops_push.run.guards import check_branch, check_clean, refuse_destroy
from gitops_push.run.model import Reporter, Result, RunOptions, RunReport, Session, StackOutcome
from gitops_push.run.record import (
    Background,
    flush_spool,
    interrupted_warnings,
    open_trail,
    overall_outcome,
    record_base,
    run_recorded,
    secrets_of,
    unstored,
)
from gitops_push.run.select import depends_fn, deployed_commits, select_for_apply
from gitops_push.run.waves import Task, base_outcome

# -- guards ---------------------------------------------------------------------------


# -- the audit record -------------------------------------------------------------------


# -- apply ------------------------------------------------------------------------------


class _StackLock:
    """A stack's lock, requested on entry while the caller goes on (lint runs while the
    run's locks and ``started`` record are pushed); ``wait()`` before planning. On exit
    the stack is done: its lock goes back with the run's ``finished`` record (or at once
    when another stack of the run waits for a lock, see lock_batch). If it was never
    waited for (lint failed), the request is withdrawn instead of waiting out a holder."""

    def __init__(self, gate: RunGate, stack: str, cancel: threading.Event) -> None:
        self._gate, self._stack, self._cancel = gate, stack, cancel
        self._stop = threading.Event()
        gate.enter(stack)
        self._job = Background(lambda: gate.acquire(stack, self._stop), f"lock-{stack}")

    def wait(self) -> None:
        """Until the lock is held; a stopped run (SIGTERM) stops waiting for it."""
        self._job.wait(self._cancel, self._stop.set)

    def __enter__(self) -> _StackLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            self._job.wait()
        except Exception:  # noqa: S110  # never taken: nothing to release (wait() said why)
            pass
        finally:
            self._gate.leave(self._stack)


def apply_task(session: Session, base_of: Mapping[str, str | None], gate: RunGate,
               started: Background[dict[str, Any]], *, fix_only: bool = False) -> Task:
    opts = session.options

    def task(change: StackChange) -> StackOutcome:
        stack = change.stack
        engine = session.engine(stack)
        removed = change.status == StackStatus.REMOVED
        with base_worktree(session, change, base_of.get(stack.name)) as old_dir, \
                _StackLock(gate, stack.name, session.cancel) as lock:
            ctx = make_ctx(session, stack, "apply", stack_dir=old_dir)
            if opts.plan_dir is not None:
                session.reporter.stack_step(stack.name, "load plan")
                meta = plans.read(opts.plan_dir, stack)
                sha = base_of.get(stack.name) if removed else session.head
                current = plans.files_hash(session.repo, sha or session.head, stack)
                plans.verify(meta, stack, session.head, current)
                plan = engine.load_plan(stack, ctx, plans.stack_dir(opts.plan_dir, stack))
                lint = None
            else:
                session.reporter.stack_step(stack.name, "lint")
                lint = engine.lint(stack, ctx)
                if not lint.ok:
                    return base_outcome(change, Result.LINT_FAILED, lint_message(lint), lint=lint,
                                        error=lint_message(lint))
                # planned under the lock: a run that applied meanwhile is in the plan
                session.reporter.stack_step(stack.name, "lock")
                lock.wait()
                session.reporter.stack_step(stack.name, "plan")
                plan = engine.plan(stack, ctx, destroy=removed)
            if not plan.has_changes:
                return base_outcome(change, Result.NO_CHANGES, "no changes", lint=lint, plan=plan)
            if plan.destroy and not opts.allow_destroy:
                return base_outcome(change, Result.REFUSED, "would destroy the stack; pass "
                                    "--allow-destroy", plan=plan)
            if plan.needs_consent and not opts.allow_destroy:
                return base_outcome(change, Result.REFUSED, "; ".join(plan.needs_consent) +
                                    "; pass --allow-destroy", plan=plan)
            unrecorded = unstored(started.wait())
            if unrecorded:  # every apply leaves a record: none, none applied
                return base_outcome(change, Result.FAILED, unrecorded, plan=plan, error=unrecorded)
            session.reporter.stack_step(stack.name, "lock")
            lock.wait()
            newer = _newer_deployment(session, gate, stack.name)
            if newer is not None:
                return replace(base_outcome(
                    change, Result.SKIPPED, f"skipped: a run deployed it from newer commit "
                    f"{newer[:12]} while this one waited (this pipeline is older; it never "
                    "rolls a stack back)", plan=plan), status=StackStatus.STALE)
            session.reporter.stack_step(stack.name, "apply")
            applied = engine.apply(stack, ctx, plan)
            verify = None
            # a stack may turn the post-apply check off (docs/terraform.md#settings)
            if not removed and getattr(stack.settings, "verify_after_apply", True):
                session.reporter.stack_step(stack.name, "verify")
                verify = engine.drift(stack, make_ctx(session, stack, "drift"),
                                      after_apply=True)
        result = (Result.DESTROYED if removed else
                  Result.FIXED if fix_only else Result.APPLIED)
        message = plan_message(plan)
        if verify is not None and verify.drifted:
            message += f"; after apply {len(verify.items)} resource(s) still differ from git"
        return base_outcome(change, result, message, lint=lint, plan=plan, apply=applied,
                            verify=verify)

    return task


def _newer_deployment(session: Session, gate: RunGate, stack: str) -> str | None:
    """The commit another run deployed ``stack`` from after this run chose it, when that
    commit is newer than this run's (it contains HEAD): applying would roll it back."""
    sha = deployed_commits(gate.records_under_lock(stack)).get(stack)
    if sha is None or sha == session.head:
        return None
    if not session.repo.has_commit(sha) and not range_mod.ensure_commit(session.repo, sha):
        return None  # as at selection: a commit we cannot see is not known to be newer
    return sha if session.repo.is_ancestor(session.head, sha) else None


def apply(repo: Repo, config: Config, opts: RunOptions, environ: Mapping[str, str],
          reporter: Reporter | None = None, cancel: threading.Event | None = None,
          *, command: str = "apply", extra_record: Mapping[str, Any] | None = None,
          trail: audit.Trail | None = None) -> RunReport:
    """``trail``: one the caller has just read (rollback), so it is not fetched again."""
    branch = check_branch(repo, config, opts, environ)
    check_clean(repo)
    probe = prefetch_tools(config, environ)
    stacks = resolve_stacks(config, repo, repo.tree(repo.head()))
    fetch = trail is None
    if trail is None:
        trail = open_trail(repo, config, environ, stacks)
    else:
        known = trail.secrets if isinstance(trail.secrets, Mapping) else dict.fromkeys(
            trail.secrets, "a secret")
        trail.secrets = {**known, **secrets_of(repo, stacks, environ)}
    warnings: list[str] = []
    warnings += flush_spool(trail)
    records = trail.records(fetch=fetch)
    cs, stale, sel_warnings = select_for_apply(repo, config, opts, environ, records)
    warnings += list(cs.range.warnings) + sel_warnings
    refuse_destroy(cs, opts)
    with tempfile.TemporaryDirectory(prefix="gitops-push-") as tmp:
        session = new_session(repo, config, opts, environ, reporter, cancel, cs.range.head,
                              Path(tmp))
        interrupted, interrupted_ids = interrupted_warnings(repo, records, session.run_id)
        warnings += interrupted
        report = RunReport(command, session.run_id, cs.range.head, cs.range.base,
                           cs.range.source, warnings=warnings)
        base_rec = record_base(session, command, cs.range, branch)
        if extra_record:
            base_rec.update(extra_record)
        if opts.allow_branch:
            base_rec["allow_branch"] = True
        started_at = audit.now_utc()
        if not cs.stacks:
            report.outcomes = stale
            report.notes.append("nothing to apply: every stack matches its last deployment")
            return report
        probe.join()
        check_engines(session, [c.stack for c in cs.stacks])
        base_of = {c.stack.name: _base_for(c, cs, records) for c in cs.stacks}
        report.outcomes = list(stale)
        run_recorded(session, trail, report, cs, {**base_rec, "started_at": started_at},
                      {"interrupted_runs": interrupted_ids,
                       "stacks": [{"name": c.stack.name, "status": c.status}
                                  for c in cs.stacks]},
                      lambda gate, started: apply_task(session, base_of, gate, started),
                      depends_fn(cs.all_stacks), overall_outcome)
    report.exit_code = apply_exit_code(report)
    return report


def _base_for(change: StackChange, cs: ChangeSet, records: list[dict[str, Any]]
              ) -> str | None:
    if cs.range.base is not None:
        return cs.range.base
    return deployed_commits(records).get(change.stack.name)


def apply_exit_code(report: RunReport) -> int:
    if report.interrupted:
        return ExitCode.TERMINATED
    failures = [o for o in report.outcomes if not o.ok and o.status != "stale"]
    locked = [o for o in failures if o.extra.get("error_code") == "locked"]
    if locked and all(o in locked or o.result == Result.SKIPPED for o in failures):
        return ExitCode.LOCKED  # only lock waits failed: retrying later is the fix
    if failures:
        return ExitCode.FAILED
    if report.audit is not None and not report.audit.get("pushed", True):
        return ExitCode.AUDIT_NOT_PUSHED
    return ExitCode.OK


# -- drift ------------------------------------------------------------------------------


