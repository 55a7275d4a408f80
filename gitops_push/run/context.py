"""Everything one stack's engine call gets: its phase environment and secrets, the engine
context, the base worktree for a destroy, and the engine checks run once per run.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gitops_push import ci as ci_env
from gitops_push import engines, proc
from gitops_push.config import Config, Stack
from gitops_push.detect.changes import StackChange, StackStatus
from gitops_push.engines.base import EngineContext, PlanResult
from gitops_push.git import Repo
from gitops_push.run.model import NullReporter, Reporter, RunOptions, Session
from gitops_push.run.waves import go_threads


def phase_env(stack: Stack, phase: str, environ: Mapping[str, str]) -> tuple[dict[str, str],
                                                                             tuple[str, ...]]:
    """The filtered environment for one stack and phase, plus the values to redact.

    Base variables (PATH, HOME, locale, proxies), the names the engine settings pass
    through, and the stack's credentials for *this* phase only.
    """
    env, secrets = phase_env_names(stack, phase, environ)
    return env, tuple(secrets)


def phase_secrets(stack: Stack, phase: str, environ: Mapping[str, str]) -> dict[str, str]:
    """What counts as a secret for one stack and phase: value -> the variable it is in.

    The values of the variables the stack hands its tool (``credentials``, the engine's
    ``env`` list), except those that only say where something is (a kubeconfig path, a
    cache directory, gitops-push's own settings). docs/config.md#what-is-a-secret.
    """
    return phase_env_names(stack, phase, environ)[1]


def phase_env_names(stack: Stack, phase: str, environ: Mapping[str, str]
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
        extra={**engines.spec(stack.type).context(session.environ, session.work_root,
                                                  session.options_map),
               "run_id": session.run_id, "project": session.config.project},
    )


@contextmanager
def base_worktree(session: Session, change: StackChange, base: str | None
                  ) -> Iterator[Path | None]:
    """A removed stack is planned against its configuration at the base commit.

    Files the working tree still holds in the stack directory without tracking them (a
    local backend's state: the engine's ``carried_suffixes``) are copied into the temporary
    worktree and copied back afterwards, so a destroy sees, and updates, the real state.
    """
    if change.status != StackStatus.REMOVED or base is None:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="gitops-push-base-"))
    wt = path / "wt"
    session.repo.add_worktree(wt, base)
    live = session.repo.root / change.stack.path
    old = wt / change.stack.path
    spec = engines.spec(change.stack.type)
    carried = carry(live, old, skip=spec.not_carried)
    try:
        yield old
    finally:
        carry(old, live, only=carried, new_suffixes=spec.carried_suffixes,
              skip=spec.not_carried)
        session.repo.remove_worktree(wt)
        shutil.rmtree(path, ignore_errors=True)


def carry(src: Path, dst: Path, *, only: set[str] | None = None,
          new_suffixes: tuple[str, ...] = (), skip: frozenset[str] = frozenset()) -> set[str]:
    """Copy files of ``src`` that ``dst`` lacks (or, with ``only``, those names back)."""
    copied: set[str] = set()
    if not src.is_dir() or src.is_symlink():
        return copied
    for f in src.rglob("*"):
        rel = f.relative_to(src)
        if not f.is_file() or f.is_symlink() or skip.intersection(rel.parts):
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


def prefetch_tools(config: Config, environ: Mapping[str, str]) -> threading.Thread:
    """Probe the tools the configured stacks need (a tool's version) in a thread,
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


def lint_message(lint: Any) -> str:
    errors = [str(d) for d in lint.diagnostics if d.severity == "error"]
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "lint failed: " + "; ".join(errors[:3]) + more


def plan_message(plan: PlanResult) -> str:
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
    from gitops_push.audit.record import new_run_id

    run_id = environ.get(ci_env.ENV_RUN_ID) or new_run_id()
    return Session(repo=repo, config=config, environ=environ, options=opts,
                   run_id=ci_env.clean(run_id, 80) or new_run_id(), head=head,
                   reporter=reporter or NullReporter(), cancel=cancel or threading.Event(),
                   work_root=work_root, ci=ci_env.detect(environ))
