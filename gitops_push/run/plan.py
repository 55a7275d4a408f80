"""The deploy workflow: ``plan``, ``apply`` and ``drift`` across stacks.

Composes change detection, engines, the runner, saved plans, locks and the audit
trail. Returns a ``RunReport`` (data); the CLI prints it and takes the exit code.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gitops_push import ci as ci_env
from gitops_push import engines, proc
from gitops_push.config import Config, Stack
from gitops_push.detect import changes
from gitops_push.detect.changes import ChangeSet, Range, StackChange
from gitops_push.detect.discovery import resolve_stacks
from gitops_push.engines.base import Engine, EngineContext, PlanResult
from gitops_push.errors import ExitCode, UserError
from gitops_push.git import Repo
from gitops_push.run import saved_plans as plans
from gitops_push.run.waves import (
    NullReporter,
    Reporter,
    StackOutcome,
    Task,
    base_outcome,
    default_parallel,
    go_threads,
    run_waves,
    run_width,
)

DEPLOY_COMMANDS = ("apply", "rollback", "drift")


@dataclass(frozen=True)
class RunOptions:
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
    def status(self) -> str:
        if self.exit_code in (ExitCode.OK, ExitCode.CHANGES_PENDING, ExitCode.DRIFT_DETECTED):
            return "success"
        if any(o.ok for o in self.outcomes):
            return "partial"
        return "error"


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
    engines: dict[str, Engine] = field(default_factory=dict)
    width: int = 1  # stacks running at once (runner.run_width), set before the run
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def engine(self, stack: Stack) -> Engine:
        with self._lock:
            if stack.type not in self.engines:
                self.engines[stack.type] = engines.spec(stack.type).factory()
            return self.engines[stack.type]


# -- environment per stack and phase ---------------------------------------------------
def phase_env(stack: Stack, phase: str, environ: Mapping[str, str]) -> tuple[dict[str, str],
                                                                             tuple[str, ...]]:
    """The filtered environment for one stack and phase, plus the values to redact.

    Base variables (PATH, HOME, locale, proxies), the names the engine settings pass
    through, and the stack's credentials for *this* phase only.
    """
    env, secrets = _phase_env(stack, phase, environ)
    return env, tuple(secrets)


def phase_secrets(stack: Stack, phase: str, environ: Mapping[str, str]) -> dict[str, str]:
    """What counts as a secret for one stack and phase: value -> the variable it is in.

    The values of the variables the stack hands its tool (``credentials``, the engine's
    ``env`` list), except those that only say where something is (a kubeconfig path, a
    cache directory, gitops-push's own settings). docs/config.md#what-is-a-secret.
    """
    return _phase_env(stack, phase, environ)[1]


def _phase_env(stack: Stack, phase: str, environ: Mapping[str, str]
               ) -> tuple[dict[str, str], dict[str, str]]:
    spec = engines.spec(stack.type)
    names = spec.env_names(stack.settings)
    where = set(spec.location_env_names(stack.settings))
    env = proc.filtered_env(environ, names)
    # gitops-push's own settings (GITOPS_PUSH_TERRAFORM_BIN) are not secrets
    secrets = {environ[n]: f"${n}" for n in names
               if n in environ and not n.startswith("GITOPS_PUSH_") and n not in where}
    creds = stack.credentials.get(phase)
    if creds is not None:
        for target, source in creds.env.items():
            if source in environ:
                env[target] = environ[source]
                if target not in where:
                    secrets[environ[source]] = f"${source}"
    return env, {v: k for v, k in secrets.items() if len(v) >= 4}


def make_ctx(session: Session, stack: Stack, phase: str, *, stack_dir: Path | None = None
             ) -> EngineContext:
    env, secrets = phase_env(stack, phase, session.environ)
    env.update(go_threads(session.width, session.environ))
    work = (session.options.plan_dir or session.work_root) / stack.name
    work.mkdir(parents=True, exist_ok=True)
    cache = session.environ.get(ci_env.ENV_PLUGIN_CACHE) or str(
        Path(session.environ.get("XDG_CACHE_HOME")
             or Path(session.environ.get("HOME", str(session.work_root))) / ".cache")
        / "gitops-push" / "terraform-plugins"
    )
    Path(cache).mkdir(parents=True, exist_ok=True)
    name = stack.name
    return EngineContext(
        repo_root=session.repo.root,
        stack_dir=stack_dir or session.repo.root / stack.path,
        env=env,
        phase=phase,
        work_dir=work,
        secrets=secrets,
        on_line=lambda line: session.reporter.stack_line(name, line),
        cancel=session.cancel,
        force_conflicts=session.options.force_conflicts,
        extra={"plugin_cache_dir": cache, "run_id": session.run_id,
               "project": session.config.project},
    )


@contextmanager
def base_worktree(session: Session, change: StackChange, base: str | None
                  ) -> Iterator[Path | None]:
    """A removed stack is planned against its configuration at the base commit.

    Files the working tree still holds in the stack directory without tracking them (a
    local backend's ``terraform.tfstate``) are copied into the temporary worktree and
    copied back afterwards, so a destroy sees, and updates, the real state.
    """
    if change.status != "removed" or base is None:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="gitops-push-base-"))
    wt = path / "wt"
    session.repo.add_worktree(wt, base)
    live = session.repo.root / change.stack.path
    old = wt / change.stack.path
    carried = _carry(live, old)
    try:
        yield old
    finally:
        _carry(old, live, only=carried, new_suffixes=(".tfstate", ".tfstate.backup"))
        session.repo.remove_worktree(wt)
        shutil.rmtree(path, ignore_errors=True)


def _carry(src: Path, dst: Path, *, only: set[str] | None = None,
           new_suffixes: tuple[str, ...] = ()) -> set[str]:
    """Copy files of ``src`` that ``dst`` lacks (or, with ``only``, those names back)."""
    copied: set[str] = set()
    if not src.is_dir() or src.is_symlink():
        return copied
    for f in src.rglob("*"):
        rel = f.relative_to(src)
        if not f.is_file() or f.is_symlink() or ".terraform" in rel.parts:
            continue
        target = dst / rel
        name = rel.as_posix()
        if only is not None:
            if name not in only and not name.endswith(new_suffixes):
                continue
        elif target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
        copied.add(name)
    return copied


# -- selection --------------------------------------------------------------------------
def select(repo: Repo, config: Config, opts: RunOptions, environ: Mapping[str, str]
           ) -> ChangeSet:
    """The stacks to run: changed ones, ``--all``, or the named ``--stack``s."""
    cs = changes.changed(repo, config, base=opts.base, head=opts.head, environ=environ,
                         all_stacks=opts.all_stacks or bool(opts.stacks))
    if opts.stacks:
        known = {c.stack.name for c in cs.stacks}
        unknown = [s for s in opts.stacks if s not in known]
        if unknown:
            raise UserError(f"--stack: unknown stack(s): {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(known)) or '(none)'}")
        wanted = [c for c in cs.stacks if c.stack.name in opts.stacks]
        picked = [replace(c, note="--stack") for c in wanted]
        cs = ChangeSet(cs.range, tuple(changes.order(picked, list(cs.all_stacks))), cs.all_stacks)
    return cs


def depends_fn(stacks: tuple[Stack, ...]) -> Any:
    by_name = {s.name: s for s in stacks}

    def depends(name: str) -> set[str]:
        out: set[str] = set()
        todo = list(by_name[name].depends_on) if name in by_name else []
        while todo:
            d = todo.pop()
            if d not in out:
                out.add(d)
                todo.extend(by_name[d].depends_on if d in by_name else ())
        return out

    return depends


def prefetch_tools(config: Config, environ: Mapping[str, str]) -> threading.Thread:
    """Probe the tools the configured stacks need (``terraform version``) in a thread,
    while git is read; ``check_engines`` then finds the answers cached. Join it first."""
    by_type: dict[str, list[Stack]] = {}
    for spec in config.stacks:
        by_type.setdefault(spec.stack.type, []).append(spec.stack)
    for engine_type in config.discover:  # discovered stacks use the engine's defaults
        if engine_type not in by_type:
            with contextlib.suppress(Exception):
                by_type[engine_type] = [Stack("(discovered)", ".", engine_type,
                                              settings=config.default_settings(engine_type))]

    def probe() -> None:
        for engine_type, group in by_type.items():
            with contextlib.suppress(Exception):  # check_engines reports problems
                engines.spec(engine_type).prefetch(group, environ)

    thread = threading.Thread(target=probe, name="tool-probe", daemon=True)
    thread.start()
    return thread


def check_engines(session: Session, stacks: list[Stack]) -> None:
    by_type: dict[str, list[Stack]] = {}
    for s in stacks:
        by_type.setdefault(s.type, []).append(s)
    for _type, group in sorted(by_type.items()):
        env, _ = phase_env(group[0], session.options.command, session.environ)
        session.engine(group[0]).check(group, env)


# -- what to apply: per-stack base from the audit trail -----------------------------------
def last_deployments(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """stack -> its newest successful deployment in the trail (commit, when, by whom)."""
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec.get("phase") != "finished" or rec.get("command") not in DEPLOY_COMMANDS:
            continue
        if not isinstance(rec.get("head"), str):
            continue
        for st in rec.get("stacks") or []:
            if isinstance(st, dict) and st.get("deployed"):
                out[str(st.get("name"))] = {
                    "commit": rec["head"], "at": rec.get("finished_at"),
                    "by": rec.get("actor"), "run_id": rec.get("run_id"),
                    "command": rec.get("command"), "result": st.get("result"),
                    "deployment_id": rec.get("deployment_id") or rec.get("run_id"),
                }
    return out


def deployed_commits(records: list[dict[str, Any]]) -> dict[str, str]:
    """stack -> head SHA of its last successful deployment, from the trail."""
    return {name: str(d["commit"]) for name, d in last_deployments(records).items()}


def select_for_apply(repo: Repo, config: Config, opts: RunOptions, environ: Mapping[str, str],
                     records: list[dict[str, Any]]) -> tuple[ChangeSet, list[StackOutcome],
                                                             list[str]]:
    """Changed stacks, each against its own last successful deployment.

    A failed pipeline is retried by the next one (its base stays the last success); a
    stack never deployed counts as changed; a stack already deployed from a commit that
    contains HEAD (a newer pipeline finished first) is skipped, never rolled back.
    """
    if opts.stacks and opts.base is None and not opts.all_stacks:
        return _named_for_apply(repo, config, opts, environ, records)
    if opts.base is not None or opts.all_stacks or opts.stacks:
        return select(repo, config, opts, environ), [], []
    head = repo.resolve("HEAD")
    stacks = resolve_stacks(config, repo, repo.tree(head))
    deployed = deployed_commits(records)
    warnings: list[str] = []
    stale: list[StackOutcome] = []
    picked: dict[str, StackChange] = {}
    by_base: dict[str, list[Stack]] = {}
    for s in stacks:
        sha = deployed.get(s.name)
        if sha is None:
            picked[s.name] = StackChange(s, "changed", note="first deployment (not in the audit "
                                                            "trail)")
        else:
            by_base.setdefault(sha, []).append(s)
    for sha, group in by_base.items():
        if sha == head:
            continue
        if not changes.ensure_commit(repo, sha):
            warnings.append(f"last deployed commit {sha[:12]} is not available locally: "
                            f"treating {', '.join(s.name for s in group)} as changed")
            for s in group:
                picked[s.name] = StackChange(s, "changed", note="deployed commit unavailable")
            continue
        if repo.is_ancestor(head, sha):
            for s in group:
                stale.append(StackOutcome(
                    name=s.name, type=s.type, path=s.path, wave=0, status="stale",
                    result="skipped",
                    message=f"skipped: already deployed from newer commit {sha[:12]} (this "
                            "pipeline is older; it never rolls a stack back)"))
            continue
        cs = changes.compute(repo, config, Range(sha, head, "audit"))
        names = {s.name for s in group}
        for c in cs.stacks:
            if c.stack.name in names and c.stack.name not in picked:
                picked[c.stack.name] = c
    # stacks deployed before and now gone: removed
    head_names = {s.name for s in stacks}
    for name, sha in deployed.items():
        if name in head_names or name in picked or not repo.has_commit(sha):
            continue
        cs = changes.compute(repo, config, Range(sha, head, "audit"))
        for c in cs.stacks:
            if c.status == "removed" and c.stack.name == name:
                picked[name] = c
    ordered = changes.order([c for c in picked.values() if c.status != "removed"], stacks,
                            [c for c in picked.values() if c.status == "removed"])
    rng = Range(None, head, "audit-trail", tuple(warnings))
    return ChangeSet(rng, tuple(ordered), tuple(stacks)), stale, warnings


def _named_for_apply(repo: Repo, config: Config, opts: RunOptions, environ: Mapping[str, str],
                     records: list[dict[str, Any]]) -> tuple[ChangeSet, list[StackOutcome],
                                                             list[str]]:
    """``apply --stack``: the named stacks, as a fan-out job runs them (issue 15).

    A name no longer at HEAD is a stack removed since its last deployment; a stack last
    deployed from a commit that contains HEAD is skipped as stale (a job of an older
    pipeline never rolls it back, as ``apply`` without ``--stack``).
    """
    head = repo.resolve("HEAD")
    present = {s.name: s for s in resolve_stacks(config, repo, repo.tree(head))}
    deployed = deployed_commits(records)
    stale: list[StackOutcome] = []
    fresh: list[str] = []
    for name in opts.stacks:
        sha = deployed.get(name)
        if name in present and sha and sha != head and repo.has_commit(sha) \
                and repo.is_ancestor(head, sha):
            st = present[name]
            stale.append(StackOutcome(
                name=name, type=st.type, path=st.path, wave=0, status="stale",
                result="skipped", message=f"skipped: already deployed from newer commit "
                                          f"{sha[:12]} (this pipeline is older; it never "
                                          "rolls a stack back)"))
        else:
            fresh.append(name)
    gone = [n for n in fresh if n not in present]
    if not gone and len(fresh) == len(opts.stacks):
        return select(repo, config, opts, environ), [], []
    kept_names = tuple(n for n in fresh if n in present)
    kept = select(repo, config, replace(opts, stacks=kept_names), environ) if kept_names \
        else None
    if not gone:
        if kept is not None:
            return kept, stale, []
        cs = select(repo, config, replace(opts, stacks=(), all_stacks=True), environ)
        return ChangeSet(cs.range, (), cs.all_stacks), stale, []
    full, _, warnings = select_for_apply(repo, config, replace(opts, stacks=()), environ,
                                         records)
    removed = {c.stack.name: c for c in full.stacks if c.status == "removed"}
    unknown = [n for n in gone if n not in removed]
    if unknown:
        raise UserError(f"--stack: unknown stack(s): {', '.join(unknown)}; known: "
                        f"{', '.join(sorted(set(present) | set(removed))) or '(none)'}")
    ordered = changes.order(list(kept.stacks) if kept else [], list(full.all_stacks),
                            [replace(removed[n], note="--stack") for n in gone])
    return ChangeSet(full.range, tuple(ordered), full.all_stacks), stale, warnings


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
                return base_outcome(change, "lint-failed", _lint_message(lint), lint=lint,
                                    error=_lint_message(lint))
            session.reporter.stack_step(stack.name, "plan")
            plan = engine.plan(stack, ctx, destroy=change.status == "removed")
        if opts.plan_dir is not None:
            fhash = (plans.files_hash(session.repo, base, stack) if change.status == "removed"
                     and base else plans.files_hash(session.repo, session.head, stack))
            plans.write(opts.plan_dir, plans.PlanMeta(
                stack=stack.name, type=stack.type, commit=session.head, files_hash=fhash,
                tool_version=plan.tool_version, created_at=plans.now(),
                destroy=plan.destroy, has_changes=plan.has_changes))
        result = "planned" if plan.has_changes else "no-changes"
        return base_outcome(change, result, _plan_message(plan), lint=lint, plan=plan)

    return task


def _lint_message(lint: Any) -> str:
    errors = [str(d) for d in lint.diagnostics if d.severity == "error"]
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "lint failed: " + "; ".join(errors[:3]) + more


def _plan_message(plan: PlanResult) -> str:
    """Counts, then what a reviewer must not miss (consents needed, engine notes)."""
    c = plan.counts
    if plan.destroy:
        text = f"destroy: {c.destroy} to destroy"
    elif not plan.has_changes:
        text = "no changes"
    else:
        text = (f"{c.add} to add, {c.change} to change, {c.replace} to replace, "
                f"{c.destroy} to destroy")
    extra = [f"needs --allow-destroy: {n}" for n in plan.needs_consent] + list(plan.notes)
    return "; ".join([text, *extra])


def new_session(repo: Repo, config: Config, opts: RunOptions, environ: Mapping[str, str],
                reporter: Reporter | None, cancel: threading.Event | None, head: str,
                work_root: Path) -> Session:
    from gitops_push.audit.trail import new_run_id

    run_id = environ.get(ci_env.ENV_RUN_ID) or new_run_id()
    return Session(repo=repo, config=config, environ=environ, options=opts,
                   run_id=ci_env.clean(run_id, 80) or new_run_id(), head=head,
                   reporter=reporter or NullReporter(), cancel=cancel or threading.Event(),
                   work_root=work_root)


def plan_selection(repo: Repo, config: Config, opts: RunOptions, environ: Mapping[str, str]
                   ) -> tuple[ChangeSet, list[StackOutcome], list[str]]:
    """On the default branch, plan what ``apply`` would apply (audit-trail bases);
    elsewhere (a merge request, a laptop branch), the changes against the base."""
    explicit = opts.base is not None or opts.head is not None or opts.all_stacks or opts.stacks
    if not explicit:
        ctx = ci_env.detect(environ)
        default = changes.default_branch(repo, config, ctx)
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
        check_engines(session, [c.stack for c in cs.stacks if c.status != "removed"])

        def task(change: StackChange) -> StackOutcome:
            if change.status == "removed":
                return base_outcome(change, "skipped", "removed from git: nothing to lint")
            ctx = make_ctx(session, change.stack, "plan")
            ctx.lint_only = True
            session.reporter.stack_step(change.stack.name, "lint")
            result = session.engine(change.stack).lint(change.stack, ctx)
            if not result.ok:
                return base_outcome(change, "lint-failed", _lint_message(result), lint=result,
                                    error=_lint_message(result))
            warnings = sum(d.severity == "warning" for d in result.diagnostics)
            return base_outcome(change, "clean", f"lint ok ({warnings} warning(s))" if warnings
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
    if opts.detailed_exitcode and any(o.result == "planned" for o in report.outcomes):
        return ExitCode.CHANGES_PENDING
    return ExitCode.OK
