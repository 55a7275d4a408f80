"""``apply`` and ``drift``: the commands that change live systems.

Guards first (default branch, clean tree, destroy consent, stale runs), then per stack:
saved or fresh plan, a per-stack lock around the apply, a drift check to confirm the
live state matches git. Every run writes a ``started`` and a ``finished`` audit record.
"""

from __future__ import annotations

import platform
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from gitops_push import __version__, audit, engines
from gitops_push import ci as ci_env
from gitops_push.config import Config, Stack
from gitops_push.detect import changes
from gitops_push.detect.changes import ChangeSet, Range, StackChange
from gitops_push.detect.discovery import resolve_stacks
from gitops_push.errors import AuditError, ExitCode, GitopsPushError, UserError
from gitops_push.git import Repo
from gitops_push.lock import LockSet, RunGate, RunLocks, active_run_ids
from gitops_push.run import saved_plans as plans
from gitops_push.run.plan import (
    RunOptions,
    RunReport,
    Session,
    _lint_message,
    _plan_message,
    base_worktree,
    check_engines,
    depends_fn,
    deployed_commits,
    make_ctx,
    new_session,
    phase_env,
    phase_secrets,
    prefetch_tools,
    select,
    select_for_apply,
)
from gitops_push.run.waves import (
    Reporter,
    StackOutcome,
    Task,
    base_outcome,
    default_parallel,
    run_waves,
    run_width,
)

T = TypeVar("T")


# -- guards ---------------------------------------------------------------------------
def check_branch(repo: Repo, config: Config, opts: RunOptions, environ: Mapping[str, str]
                 ) -> str | None:
    """Apply only from the default branch (``--allow-branch`` overrides, and is recorded)."""
    ctx = ci_env.detect(environ)
    default = changes.default_branch(repo, config, ctx)
    current = repo.current_branch() or ctx.branch
    if default is None:
        if opts.allow_branch:
            return current
        raise UserError("cannot tell the default branch (no origin/HEAD, no main/master, no "
                        "default_branch in the config); set default_branch or pass "
                        "--allow-branch")
    if current != default and not opts.allow_branch:
        raise UserError(
            f"refusing to {opts.command} from branch {current or '(detached HEAD)'!r}: only "
            f"the default branch {default!r} is deployed (--allow-branch overrides and is "
            "recorded in the audit trail)"
        )
    return current


def check_clean(repo: Repo) -> None:
    dirty = repo.dirty_paths()
    if dirty:
        shown = ", ".join(repr(p) for p in dirty[:5]) + (" ..." if len(dirty) > 5 else "")
        raise UserError(
            f"refusing to deploy from a dirty working tree ({len(dirty)} changed or untracked "
            f"file(s): {shown}); commit or stash them — git is the source of truth"
        )


# -- the audit record -------------------------------------------------------------------
def record_base(session: Session, command: str, rng: Range, branch: str | None) -> dict[str, Any]:
    ctx = ci_env.detect(session.environ)
    info = session.repo.commit_info(session.head)
    return {
        "schema_version": 1,
        "run_id": session.run_id,
        "command": command,
        "flags": dict(session.options.flags),
        "repository": ctx.repository or ci_env.clean(session.repo.remote_url() or "") or
        str(session.repo.root.name),
        "branch": branch,
        "head": session.head,
        "base": rng.base,
        "base_source": rng.source,
        "author": {"name": info.get("author_name"), "email": info.get("author_email")},
        "committer": {"name": info.get("committer_name"), "email": info.get("committer_email")},
        "commit_subject": ci_env.clean(info.get("subject"), 200),
        "ci": ctx.system,
        "actor": ctx.actor or ci_env.clean(session.repo.user()),
        "pipeline_url": ctx.pipeline_url,
        "job_url": ctx.job_url,
        "host": ci_env.clean(platform.node(), 100),
        "tool_versions": {"gitops-push": __version__},
        # every job of one CI pipeline shares it: audit log, status and summary group by it
        "deployment_id": ci_env.deployment_id(session.environ) or session.run_id,
    }


def stack_entry(o: StackOutcome) -> dict[str, Any]:
    plan = o.apply or o.plan
    counts = plan.counts if plan is not None else None
    entry: dict[str, Any] = {
        "name": o.name,
        "type": o.type,
        "path": o.path,
        "status": o.status,
        "result": o.result,
        "deployed": o.result in ("applied", "no-changes", "destroyed", "fixed"),
        "message": o.message,
        "error": (o.error or "")[-2000:] or None,
        "duration_s": round(o.duration, 3),
        "counts": None if counts is None else {
            "add": counts.add, "change": counts.change, "destroy": counts.destroy,
            "replace": counts.replace},
        "changed": [{"address": c.address, "action": c.action}
                    for c in (plan.changes if plan is not None else ())
                    if c.action not in ("no-op", "read")][:500],
    }
    if o.plan is not None and o.plan.tool_version:
        entry["tool_version"] = o.plan.tool_version
    for key, drift in (("drift", o.drift), ("verify", o.verify)):
        if drift is not None:
            entry[key] = {"drifted": drift.drifted,
                          "items": [{"address": i.address, "kind": i.kind}
                                    for i in drift.items][:500]}
    return entry


# -- apply ------------------------------------------------------------------------------
class _Background(Generic[T]):
    """One call run in a thread while the caller goes on; ``wait()`` returns its result
    or re-raises its exception in the waiting thread."""

    def __init__(self, call: Callable[[], T], name: str) -> None:
        self._call = call
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._call()
        except BaseException as exc:  # re-raised by wait()
            self._error = exc

    def wait(self, cancel: threading.Event | None = None,
             on_cancel: Callable[[], None] = lambda: None) -> T | None:
        """The call's result; ``on_cancel`` runs once if ``cancel`` is set meanwhile."""
        told = False
        while self._thread.is_alive():
            self._thread.join(0.2)
            if cancel is not None and cancel.is_set() and not told:
                on_cancel()
                told = True
        if self._error is not None:
            raise self._error
        return self._result


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
        self._job = _Background(lambda: gate.acquire(stack, self._stop), f"lock-{stack}")

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
               started: _Background[dict[str, Any]], *, fix_only: bool = False) -> Task:
    opts = session.options

    def task(change: StackChange) -> StackOutcome:
        stack = change.stack
        engine = session.engine(stack)
        removed = change.status == "removed"
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
                    return base_outcome(change, "lint-failed", _lint_message(lint), lint=lint,
                                        error=_lint_message(lint))
                # planned under the lock: a run that applied meanwhile is in the plan
                session.reporter.stack_step(stack.name, "lock")
                lock.wait()
                session.reporter.stack_step(stack.name, "plan")
                plan = engine.plan(stack, ctx, destroy=removed)
            if not plan.has_changes:
                return base_outcome(change, "no-changes", "no changes", lint=lint, plan=plan)
            if plan.destroy and not opts.allow_destroy:
                return base_outcome(change, "refused", "would destroy the stack; pass "
                                    "--allow-destroy", plan=plan)
            if plan.needs_consent and not opts.allow_destroy:
                return base_outcome(change, "refused", "; ".join(plan.needs_consent) +
                                    "; pass --allow-destroy", plan=plan)
            unrecorded = _unstored(started.wait())
            if unrecorded:  # every apply leaves a record: none, none applied
                return base_outcome(change, "failed", unrecorded, plan=plan, error=unrecorded)
            session.reporter.stack_step(stack.name, "lock")
            lock.wait()
            newer = _newer_deployment(session, gate, stack.name)
            if newer is not None:
                return replace(base_outcome(
                    change, "skipped", f"skipped: a run deployed it from newer commit "
                    f"{newer[:12]} while this one waited (this pipeline is older; it never "
                    "rolls a stack back)", plan=plan), status="stale")
            session.reporter.stack_step(stack.name, "apply")
            applied = engine.apply(stack, ctx, plan)
            verify = None
            # a stack may turn the post-apply check off (docs/terraform.md#settings)
            if not removed and getattr(stack.settings, "verify_after_apply", True):
                session.reporter.stack_step(stack.name, "verify")
                verify = engine.drift(stack, make_ctx(session, stack, "drift"),
                                      after_apply=True)
        result = "destroyed" if removed else ("fixed" if fix_only else "applied")
        message = _plan_message(plan)
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
    if not session.repo.has_commit(sha) and not changes.ensure_commit(session.repo, sha):
        return None  # as at selection: a commit we cannot see is not known to be newer
    return sha if session.repo.is_ancestor(session.head, sha) else None


def _refuse_destroy(cs: ChangeSet, opts: RunOptions) -> None:
    removed = [c.stack.name for c in cs.stacks if c.status == "removed"]
    if removed and not opts.allow_destroy:
        raise UserError(
            f"these stacks were removed from git and would be DESTROYED: {', '.join(removed)}; "
            "re-run with --allow-destroy to destroy them (nothing was applied)"
        )


def _secrets(repo: Repo, stacks: list[Stack] | None, environ: Mapping[str, str]
             ) -> dict[str, str]:
    """Secret value -> what it is (a variable, a kubeconfig credential), for redaction."""
    secrets: dict[str, str] = {}
    for stack in stacks or []:
        for phase in ("plan", "apply", "drift"):
            env, _ = phase_env(stack, phase, environ)
            secrets.update(engines.spec(stack.type).file_secrets(stack.settings, env, repo.root))
            secrets.update(phase_secrets(stack, phase, environ))
    return secrets


def open_trail(repo: Repo, config: Config, environ: Mapping[str, str],
               stacks: list[Stack] | None = None) -> audit.Trail:
    """The audit trail; a credential's value in a record is replaced by a marker naming it."""
    branch = changes.default_branch(repo, config, ci_env.detect(environ))
    return audit.Trail(repo, config.audit, environ=environ, default_branch=branch,
                       secrets=_secrets(repo, stacks, environ))


def _interrupted(repo: Repo, records: list[dict[str, Any]], run_id: str) -> tuple[list[str],
                                                                                  list[str]]:
    """Runs that started and never finished (killed), reported once each.

    Runs still holding an unexpired lock may be alive (in another pipeline), so they
    are not reported until their lock expires.
    """
    if not audit.interrupted_runs(records, run_id):
        return [], []  # the usual case: no need to ask origin which runs hold locks
    try:
        active = active_run_ids(repo)
    except GitopsPushError:
        active = set()
    runs = audit.interrupted_runs(records, run_id, active_run_ids=active)
    warnings = [f"run {r.get('run_id')} ({r.get('command')} of {str(r.get('head'))[:12]} by "
                f"{r.get('actor')}) started at {r.get('started_at')} and never finished: it was "
                "interrupted" for r in runs]
    return warnings, [str(r.get("run_id")) for r in runs]


def _locks(repo: Repo, session: Session, base_rec: Mapping[str, Any]) -> RunLocks:
    opts = session.options
    return RunLocks(repo, owner=_owner(session, base_rec), environ=session.environ,
                   timeout=opts.lock_timeout, ttl=opts.lock_ttl)


def _lock_notes(locks: LockSet, trail: audit.Trail, report: RunReport) -> None:
    for info in locks.takeovers:
        report.warnings.append(f"took over an expired lock: {info.describe()}")
    for stack, why in locks.lost.items():
        report.warnings.append(f"lock of stack {stack} was lost during the run: {why}")
    report.warnings.extend(locks.warnings)
    report.warnings.extend(trail.warnings)


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
        trail.secrets = {**known, **_secrets(repo, stacks, environ)}
    warnings: list[str] = []
    warnings += _flush(trail)
    records = trail.records(fetch=fetch)
    cs, stale, sel_warnings = select_for_apply(repo, config, opts, environ, records)
    warnings += list(cs.range.warnings) + sel_warnings
    _refuse_destroy(cs, opts)
    with tempfile.TemporaryDirectory(prefix="gitops-push-") as tmp:
        session = new_session(repo, config, opts, environ, reporter, cancel, cs.range.head,
                              Path(tmp))
        interrupted, interrupted_ids = _interrupted(repo, records, session.run_id)
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
        _run_recorded(session, trail, report, cs, {**base_rec, "started_at": started_at},
                      {"interrupted_runs": interrupted_ids,
                       "stacks": [{"name": c.stack.name, "status": c.status}
                                  for c in cs.stacks]},
                      lambda gate, started: apply_task(session, base_of, gate, started),
                      depends_fn(cs.all_stacks), _overall)
    report.exit_code = apply_exit_code(report)
    return report


def _run_recorded(session: Session, trail: audit.Trail, report: RunReport, cs: ChangeSet,
                  base_rec: Mapping[str, Any], started_rec: Mapping[str, Any],
                  make_task: Callable[[RunGate, _Background[dict[str, Any]]], Task],
                  depends: Callable[[str], set[str]],
                  overall: Callable[[RunReport], str], *, lock: bool = True,
                  record: bool = True) -> None:
    """Run the stacks under this run's locks; always release them and write ``finished``.

    The locks of every stack (``lock``) and the ``started`` record are pushed in one
    atomic push, in a thread while the stacks lint; every apply waits for it first, so
    nothing is applied before the record is in the trail (or the spool). ``finished``
    and the release of the locks are the second push (lock_batch.RunGate). ``record``
    False (a local drift check): no record, no lock, nothing written to origin.
    """
    locks = _locks(session.repo, session, base_rec)  # bad lock settings: nothing recorded
    gate = RunGate(locks, trail, [c.stack.name for c in cs.stacks] if lock else [])
    started_full = {**base_rec, **started_rec, "phase": "started"}

    def store_started() -> dict[str, Any]:
        if not record:
            gate.unrecorded()
            return {}
        return _append(lambda: gate.start(started_full), report)

    started = _Background(store_started, "audit-started")
    outcomes: dict[str, StackOutcome] = {}
    session.width = run_width(cs.stacks, session.options.parallel or default_parallel())
    try:
        run_waves(cs.stacks, make_task(gate, started),
                  parallel=session.options.parallel or default_parallel(),
                  reporter=session.reporter, cancel=session.cancel, depends=depends,
                  outcomes=outcomes)
    except BaseException:  # Ctrl-C: recorded as an interruption, then re-raised
        session.cancel.set()
        raise
    finally:
        report.outcomes += [outcomes[c.stack.name] for c in cs.stacks
                            if c.stack.name in outcomes]
        try:
            report.audit = started.wait() if record else None
        except Exception as exc:  # not an AuditError (those _append reports): still finish
            report.warnings.append(f"the started audit record was not stored: {exc}")
        report.interrupted = session.cancel.is_set()
        final = {**base_rec, "phase": "finished", "finished_at": audit.now_utc(),
                 "outcome": "interrupted" if report.interrupted else overall(report),
                 "stacks": [stack_entry(o) for o in report.outcomes]}
        try:
            if record:
                report.audit = _append(lambda: gate.finish(final), report)
        finally:
            locks.release_all()  # whatever the finished push did not release
            _lock_notes(locks, trail, report)


def _unstored(info: Mapping[str, Any] | None) -> str | None:
    """Why the ``started`` record is in neither the trail nor the spool, if it is not."""
    if info is None or info.get("pushed", True) or info.get("spool"):
        return None
    return (f"not applied: the started audit record could be neither pushed nor kept in "
            f"the spool ({info.get('error') or info.get('message')})")


def _base_for(change: StackChange, cs: ChangeSet, records: list[dict[str, Any]]
              ) -> str | None:
    if cs.range.base is not None:
        return cs.range.base
    return deployed_commits(records).get(change.stack.name)


def _owner(session: Session, base_rec: Mapping[str, Any]) -> dict[str, Any]:
    return {"run_id": session.run_id, "actor": base_rec.get("actor"),
            "pipeline_url": base_rec.get("pipeline_url"), "host": base_rec.get("host"),
            "command": base_rec.get("command")}


def _overall(report: RunReport) -> str:
    if all(o.ok for o in report.outcomes):
        return "success"
    return "partial" if any(o.ok for o in report.outcomes) else "failed"


def _flush(trail: audit.Trail) -> list[str]:
    try:
        pushed = trail.flush_spool()
    except AuditError as exc:
        return [f"spooled audit records could not be pushed yet: {exc.message}"]
    return [f"pushed {len(pushed)} audit record(s) left in the spool by an earlier run"
            ] if pushed else []


def _append(store: Callable[[], audit.AppendResult], report: RunReport) -> dict[str, Any]:
    try:
        res = store()
    except AuditError as exc:
        report.warnings.append(str(exc))
        return {"pushed": False, "error": exc.message}
    info = {"pushed": res.pushed, "path": res.path, "spool": str(res.spool_path)
            if res.spool_path else None, "message": res.message}
    if not res.pushed:
        report.warnings.append(res.message)
    return info


def apply_exit_code(report: RunReport) -> int:
    if report.interrupted:
        return ExitCode.TERMINATED
    failures = [o for o in report.outcomes if not o.ok and o.status != "stale"]
    locked = [o for o in failures if o.extra.get("error_code") == "locked"]
    if locked and all(o in locked or o.result == "skipped" for o in failures):
        return ExitCode.LOCKED  # only lock waits failed: retrying later is the fix
    if failures:
        return ExitCode.FAILED
    if report.audit is not None and not report.audit.get("pushed", True):
        return ExitCode.AUDIT_NOT_PUSHED
    return ExitCode.OK


# -- drift ------------------------------------------------------------------------------
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
    cs = ChangeSet(cs.range, tuple(c for c in cs.stacks if c.status != "removed"),
                   cs.all_stacks)
    record = drift_records(opts, environ)
    trail = open_trail(repo, config, environ, list(cs.all_stacks))
    # a check that records nothing reads and writes nothing on origin (not even the spool)
    warnings = _flush(trail) if record else []
    records = trail.records() if record else []
    with tempfile.TemporaryDirectory(prefix="gitops-push-") as tmp:
        session = new_session(repo, config, opts, environ, reporter, cancel, cs.range.head,
                              Path(tmp))
        interrupted, interrupted_ids = _interrupted(repo, records, session.run_id)
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
        def make_task(gate: RunGate, started: _Background[dict[str, Any]]) -> Task:
            fixer = apply_task(session, {}, gate, started, fix_only=True)

            def task(change: StackChange) -> StackOutcome:
                stack = change.stack
                session.reporter.stack_step(stack.name, "drift")
                result = session.engine(stack).drift(stack, make_ctx(session, stack, "drift"))
                if not result.drifted:
                    return base_outcome(change, "clean", "no drift", drift=result)
                message = f"{len(result.items)} resource(s) drifted"
                if not opts.fix:
                    return base_outcome(change, "drifted", message, drift=result)
                fixed = fixer(change)
                return replace(fixed, drift=result, message=f"{message}; {fixed.message}")

            return task

        def overall(rep: RunReport) -> str:
            drifted = any(o.result == "drifted" for o in rep.outcomes)
            return "drift" if drifted else _overall(rep)

        _run_recorded(session, trail, report, cs, {**base_rec, "started_at": started_at},
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
    if any(o.result in ("failed", "lint-failed", "refused") for o in report.outcomes):
        return ExitCode.FAILED
    if any(o.result == "drifted" for o in report.outcomes):
        return ExitCode.DRIFT_DETECTED
    if fix and report.audit is not None and not report.audit.get("pushed", True):
        return ExitCode.AUDIT_NOT_PUSHED
    return ExitCode.OK
