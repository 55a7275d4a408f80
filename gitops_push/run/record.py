"""A recorded run: the audit record it starts and finishes with, the locks taken with it in one
push, and the waves run in between. Shared by apply, drift --fix and rollback.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from gitops_push import __version__, audit, engines
from gitops_push import ci as ci_env
from gitops_push.config import Config, Stack
from gitops_push.detect import range as range_mod
from gitops_push.detect.changes import ChangeSet
from gitops_push.detect.range import Range
from gitops_push.errors import AuditError, GitopsPushError
from gitops_push.git import Repo
from gitops_push.lock import LockSet, RunGate, RunLocks, active_run_ids
from gitops_push.run.context import phase_env, phase_secrets
from gitops_push.run.model import RunReport, Session, StackOutcome
from gitops_push.run.serialize import outcome_data
from gitops_push.run.waves import Task, default_parallel, run_waves, run_width

T = TypeVar("T")


def record_base(session: Session, command: str, rng: Range, branch: str | None) -> dict[str, Any]:
    ctx = session.ci
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
    """A stack's part of the finished record (the serializer the envelope uses too)."""
    return outcome_data(o, for_audit=True)


class Background(Generic[T]):
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


def secrets_of(repo: Repo, stacks: list[Stack] | None, environ: Mapping[str, str]
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
    branch = range_mod.default_branch(repo, config, ci_env.detect(environ))
    return audit.Trail(repo, config.audit, environ=environ, default_branch=branch,
                       secrets=secrets_of(repo, stacks, environ))


def interrupted_warnings(repo: Repo, records: list[dict[str, Any]], run_id: str) -> tuple[list[str],
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


def run_locks(repo: Repo, session: Session, base_rec: Mapping[str, Any]) -> RunLocks:
    opts = session.options
    return RunLocks(repo, owner=lock_owner(session, base_rec), environ=session.environ,
                   timeout=opts.lock_timeout, ttl=opts.lock_ttl)


def lock_notes(locks: LockSet, trail: audit.Trail, report: RunReport) -> None:
    for info in locks.takeovers:
        report.warnings.append(f"took over an expired lock: {info.describe()}")
    for stack, why in locks.lost.items():
        report.warnings.append(f"lock of stack {stack} was lost during the run: {why}")
    report.warnings.extend(locks.warnings)
    report.warnings.extend(trail.warnings)


def run_recorded(session: Session, trail: audit.Trail, report: RunReport, cs: ChangeSet,
                  base_rec: Mapping[str, Any], started_rec: Mapping[str, Any],
                  make_task: Callable[[RunGate, Background[dict[str, Any]]], Task],
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
    locks = run_locks(session.repo, session, base_rec)  # bad lock settings: nothing recorded
    gate = RunGate(locks, trail, [c.stack.name for c in cs.stacks] if lock else [])
    started_full = {**base_rec, **started_rec, "phase": "started"}

    def store_started() -> dict[str, Any]:
        if not record:
            gate.unrecorded()
            return {}
        return append_record(lambda: gate.start(started_full), report)

    started = Background(store_started, "audit-started")
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
        except Exception as exc:  # not an AuditError (those append_record reports): still finish
            report.warnings.append(f"the started audit record was not stored: {exc}")
        report.interrupted = session.cancel.is_set()
        final = {**base_rec, "phase": "finished", "finished_at": audit.now_utc(),
                 "outcome": "interrupted" if report.interrupted else overall(report),
                 "stacks": [stack_entry(o) for o in report.outcomes]}
        try:
            if record:
                report.audit = append_record(lambda: gate.finish(final), report)
        finally:
            locks.release_all()  # whatever the finished push did not release
            lock_notes(locks, trail, report)


def unstored(info: Mapping[str, Any] | None) -> str | None:
    """Why the ``started`` record is in neither the trail nor the spool, if it is not."""
    if info is None or info.get("pushed", True) or info.get("spool"):
        return None
    return (f"not applied: the started audit record could be neither pushed nor kept in "
            f"the spool ({info.get('error') or info.get('message')})")


def lock_owner(session: Session, base_rec: Mapping[str, Any]) -> dict[str, Any]:
    return {"run_id": session.run_id, "actor": base_rec.get("actor"),
            "pipeline_url": base_rec.get("pipeline_url"), "host": base_rec.get("host"),
            "command": base_rec.get("command")}


def overall_outcome(report: RunReport) -> str:
    if all(o.ok for o in report.outcomes):
        return "success"
    return "partial" if any(o.ok for o in report.outcomes) else "failed"


def flush_spool(trail: audit.Trail) -> list[str]:
    try:
        pushed = trail.flush_spool()
    except AuditError as exc:
        return [f"spooled audit records could not be pushed yet: {exc.message}"]
    return [f"pushed {len(pushed)} audit record(s) left in the spool by an earlier run"
            ] if pushed else []


def append_record(store: Callable[[], audit.AppendResult], report: RunReport) -> dict[str, Any]:
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
