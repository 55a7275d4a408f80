"""The command line: click only. Options become arguments of one core call; the result
goes to output.py; the exit code comes from the result. Errors are mapped once, in
``main``. Heavy modules are imported inside commands so ``--help`` stays instant.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from gitops_push import __version__
from gitops_push.cli.options import duration, refuse_empty_values, usage_envelope
from gitops_push.errors import DOCUMENTED_EXIT_CODES, ExitCode, GitopsPushError

F = TypeVar("F", bound=Callable[..., Any])
OUTPUTS = click.Choice(["table", "json"])


@dataclass
class State:
    repo: Path = Path()
    config: Path | None = None
    verbose: int = 0
    output: str = "table"
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def env(flag: str) -> str:
    """The GITOPS_PUSH_<FLAG> variable of a flag (CI templates set these)."""
    return "GITOPS_PUSH_" + flag.upper().replace("-", "_")


def output_option(f: F) -> F:
    return click.option("--output", "-o", type=OUTPUTS, default="table", show_default=True,
                        envvar=env("output"), help="Table for people, JSON envelope for tools.")(f)


def selection_options(f: F) -> F:
    f = click.option("--stack", "stacks", multiple=True, metavar="NAME", envvar=env("stack"),
                     help="Run only this stack (repeatable; env: space-separated).")(f)
    return click.option("--all", "all_stacks", is_flag=True, envvar=env("all"),
                        help="Every stack, changed or not.")(f)


def range_options(f: F) -> F:
    f = click.option("--head", metavar="REF", envvar=env("head"),
                     help="Commit to compare (default HEAD).")(f)
    return click.option("--base", metavar="REF", envvar=env("base"),
                        help="Commit to compare with (default: from CI, else merge-base with "
                             "the default branch).")(f)


def run_options(f: F) -> F:
    f = click.option("--summary-md", type=click.Path(dir_okay=False, path_type=Path),
                     envvar=env("summary-md"), help="Write a Markdown summary (PR/MR comment).")(f)
    f = click.option("--parallel", type=click.IntRange(1, 64), default=None,
                     envvar=env("parallel"), help="Stacks run at once per wave (default: CPUs).")(f)
    return output_option(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="gitops-push")
@click.option("-C", "--repo", type=click.Path(file_okay=False, path_type=Path), default=".",
              envvar=env("repo"), help="Repository to work in (default: current directory).")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar=env("config"), help="Config file (default: gitops-push.yaml at the root).")
@click.option("-v", "--verbose", count=True, help="More detail; -vv logs every command run.")
@click.pass_context
def cli(ctx: click.Context, repo: Path, config: Path | None, verbose: int) -> None:
    """Push-based GitOps: plan and apply changed Terraform and Kubernetes stacks from CI,
    with a tamper-evident audit trail in git.

    \b
    Examples:
      gitops-push changed                    # which stacks changed, and why
      gitops-push plan --plan-dir plans      # in a merge request
      gitops-push apply --plan-dir plans     # on the default branch
      gitops-push drift                      # scheduled: is live state still git's?
    """
    state: State = ctx.ensure_object(State)
    state.repo, state.config, state.verbose = repo, config, verbose
    if verbose >= 2:
        import logging

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(asctime)s %(name)s: %(message)s")


def _open(state: State) -> tuple[Any, Any]:
    from gitops_push import config as config_mod
    from gitops_push.git import Repo

    repo = Repo(state.repo)
    cfg_path = state.config
    if cfg_path is not None and not cfg_path.is_absolute():
        cfg_path = Path.cwd() / cfg_path
    return repo, config_mod.load(repo.root, cfg_path)


@cli.command()
@range_options
@click.option("--all", "all_stacks", is_flag=True, envvar=env("all"),
              help="List every stack as changed.")
@output_option
@click.pass_obj
def changed(state: State, base: str | None, head: str | None, all_stacks: bool,
            output: str) -> None:
    """Show the stacks whose files changed between two commits, in run order.

    \b
    Examples:
      gitops-push changed
      gitops-push changed --base origin/main --output json
      gitops-push changed --base v1.2.0 --head HEAD~1
    """
    from gitops_push import output as out
    from gitops_push.detect import changes

    state.output, state.command = output, "changed"
    repo, config = _open(state)
    cs = changes.changed(repo, config, base=base, head=head, environ=os.environ,
                         all_stacks=all_stacks)
    for w in cs.range.warnings:
        out.warn(w)
    if output == "json":
        out.print_json(out.Envelope("changed", data=out.changeset_data(cs),
                                    warnings=list(cs.range.warnings)))
    else:
        out.changeset_table(cs)


def _run_report(state: State, report: Any, output: str, summary_md: Path | None) -> None:
    """Print a run's result and write its Markdown summary; set the exit code."""
    from gitops_push import output as out
    from gitops_push.ci import step_summary_path

    for w in report.warnings:
        out.warn(w)
    markdown = out.report_markdown(report)
    if summary_md is not None:
        from gitops_push.fsutil import atomic_write

        atomic_write(summary_md, markdown, what="Markdown summary")
    step_summary = step_summary_path(os.environ)
    if step_summary:
        try:
            with open(step_summary, "a", encoding="utf-8") as fh:
                fh.write(markdown + "\n")
        except OSError as exc:
            out.warn(f"cannot append to GITHUB_STEP_SUMMARY: {exc.strerror}")
    if output == "json":
        out.print_json(out.report_envelope(report))
    else:
        out.report_table(report)
    state.extra["exit_code"] = int(report.exit_code)


def _execute(state: State, fn: Callable[..., Any], output: str, summary_md: Path | None,
             *args: Any, **kwargs: Any) -> None:
    """Run a plan/apply/drift function with progress, SIGTERM handling and the summary."""
    import signal
    import threading

    from gitops_push import output as out

    cancel = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        cancel.set()  # stop children gracefully; the run records the interruption

    previous = signal.signal(signal.SIGTERM, on_term)
    reporter = out.reporter(os.environ, quiet=output == "json")
    try:
        report = fn(*args, environ=os.environ, reporter=reporter, cancel=cancel, **kwargs)
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        reporter.close()
        signal.signal(signal.SIGTERM, previous)
    _run_report(state, report, output, summary_md)


def _flags(ctx: click.Context) -> dict[str, Any]:
    """The flags of this invocation for the audit record (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in ctx.params.items() if v not in (None, False, ())}


def _stacks(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for v in values for n in v.replace(",", " ").split())


@cli.command()
@range_options
@selection_options
@run_options
@click.pass_context
def lint(ctx: click.Context, base: str | None, head: str | None, all_stacks: bool,
         stacks: tuple[str, ...], parallel: int | None, output: str,
         summary_md: Path | None) -> None:
    """Offline checks of the changed stacks: formatting, validation, manifest schemas.

    Needs no credentials and no cluster, so it is safe for fork merge requests.

    \b
    Examples:
      gitops-push lint
      gitops-push lint --all --output json
    """
    from gitops_push.run import model as model_mod
    from gitops_push.run import plan as workflow

    state: State = ctx.obj
    state.output, state.command = output, "lint"
    repo, config = _open(state)
    opts = model_mod.RunOptions("lint", base=base, head=head, all_stacks=all_stacks,
                               stacks=_stacks(stacks), parallel=parallel, flags=_flags(ctx))
    _execute(state, workflow.lint, output, summary_md, repo, config, opts)


@cli.command()
@range_options
@selection_options
@click.option("--plan-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar=env("plan-dir"), help="Save plans here for a later `apply --plan-dir`.")
@click.option("--detailed-exitcode", is_flag=True, envvar=env("detailed-exitcode"),
              help="Exit 3 when changes are pending (0: none, 1: failure).")
@run_options
@click.pass_context
def plan(ctx: click.Context, base: str | None, head: str | None, all_stacks: bool,
         stacks: tuple[str, ...], plan_dir: Path | None, detailed_exitcode: bool,
         parallel: int | None, output: str, summary_md: Path | None) -> None:
    """Lint and plan the changed stacks (nothing is applied).

    \b
    Examples:
      gitops-push plan                              # on a laptop, before a merge request
      gitops-push plan --plan-dir plans --summary-md plan.md
      gitops-push plan --stack network --detailed-exitcode
    """
    from gitops_push.run import model as model_mod
    from gitops_push.run import plan as workflow

    state: State = ctx.obj
    state.output, state.command = output, "plan"
    repo, config = _open(state)
    opts = model_mod.RunOptions("plan", base=base, head=head, all_stacks=all_stacks,
                               stacks=_stacks(stacks), plan_dir=plan_dir, parallel=parallel,
                               detailed_exitcode=detailed_exitcode, flags=_flags(ctx))
    _execute(state, workflow.plan, output, summary_md, repo, config, opts)


def apply_options(f: F) -> F:
    f = click.option("--lock-ttl", default="1h", show_default=True, envvar=env("lock-ttl"),
                     callback=duration,
                     help="A lock left by a killed run expires after this (renewed while "
                          "alive).")(f)
    f = click.option("--lock-timeout", default="10m", show_default=True, callback=duration,
                     envvar=env("lock-timeout"), help="Wait this long for a held stack lock.")(f)
    f = click.option("--force-conflicts", is_flag=True, envvar=env("force-conflicts"),
                     help="Kubernetes: take over fields owned by another field manager "
                          "also in stacks with conflicts: fail (the default, force, always "
                          "does).")(f)
    f = click.option("--allow-destroy", is_flag=True, envvar=env("allow-destroy"),
                     help="Destroy stacks whose directory was removed from git.")(f)
    return click.option("--allow-branch", is_flag=True, envvar=env("allow-branch"),
                        help="Deploy from a branch other than the default (recorded).")(f)


@cli.command()
@click.option("--base", metavar="REF", envvar=env("base"),
              help="Compare with REF instead of each stack's last successful deployment.")
@selection_options
@click.option("--plan-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar=env("plan-dir"), help="Apply the plans saved by `plan --plan-dir`.")
@apply_options
@run_options
@click.pass_context
def apply(ctx: click.Context, base: str | None, all_stacks: bool, stacks: tuple[str, ...],
          plan_dir: Path | None, allow_branch: bool, allow_destroy: bool, force_conflicts: bool,
          lock_timeout: float, lock_ttl: float, parallel: int | None, output: str,
          summary_md: Path | None) -> None:
    """Apply the changed stacks from the default branch and record it in the audit trail.

    Each stack is compared with its last successful deployment (from the audit trail),
    so a failed pipeline is retried by the next one.

    \b
    Examples:
      gitops-push apply                             # plan-then-apply, in CI on main
      gitops-push apply --plan-dir plans            # exactly the plans saved earlier
      gitops-push apply --stack web --lock-timeout 30m
    """
    from gitops_push.run import apply as deploy
    from gitops_push.run import model as model_mod

    state: State = ctx.obj
    state.output, state.command = output, "apply"
    repo, config = _open(state)
    opts = model_mod.RunOptions("apply", base=base, all_stacks=all_stacks, stacks=_stacks(stacks),
                               plan_dir=plan_dir, parallel=parallel, allow_branch=allow_branch,
                               allow_destroy=allow_destroy, force_conflicts=force_conflicts,
                               lock_timeout=lock_timeout,
                               lock_ttl=lock_ttl, flags=_flags(ctx))
    _execute(state, deploy.apply, output, summary_md, repo, config, opts)


@cli.command()
@selection_options
@click.option("--fix", is_flag=True, envvar=env("fix"),
              help="Re-apply git's state to drifted stacks (locks and audit as apply).")
@click.option("--record/--no-record", "record", default=None, envvar=env("record"),
              help="Record this check in the audit trail. Default: in CI yes, locally no. "
                   "A record that cannot be pushed waits in the spool; the exit code stays "
                   "the check's (--fix always records).")
@apply_options
@run_options
@click.pass_context
def drift(ctx: click.Context, all_stacks: bool, stacks: tuple[str, ...], fix: bool,
          record: bool | None, allow_branch: bool, allow_destroy: bool,
          force_conflicts: bool, lock_timeout: float, lock_ttl: float, parallel: int | None,
          output: str, summary_md: Path | None) -> None:
    """Check every stack's live state against git (exit 4 when something drifted).

    \b
    Examples:
      gitops-push drift                             # in a scheduled CI job
      gitops-push drift --stack web --output json
      gitops-push drift --fix                       # restore git's state
    """
    from gitops_push.run import drift as drift_mod
    from gitops_push.run import model as model_mod

    state: State = ctx.obj
    state.output, state.command = output, "drift"
    repo, config = _open(state)
    opts = model_mod.RunOptions("drift", all_stacks=True, stacks=_stacks(stacks), fix=fix,
                               record=record, parallel=parallel, allow_branch=allow_branch,
                               allow_destroy=allow_destroy, force_conflicts=force_conflicts,
                               lock_timeout=lock_timeout,
                               lock_ttl=lock_ttl, flags=_flags(ctx))
    _execute(state, drift_mod.drift, output, summary_md, repo, config, opts)


@cli.command()
@click.option("--to", "to", required=True, metavar="REF", envvar=env("to"),
              help="A commit, or an audit run id, to roll back to.")
@click.option("--dry-run", is_flag=True, envvar=env("dry-run"),
              help="Show what would change; commit and apply nothing.")
@click.option("--stack", "stacks", multiple=True, metavar="NAME", envvar=env("stack"),
              help="Roll back only these stacks (default: every stack that differs).")
@apply_options
@run_options
@click.pass_context
def rollback(ctx: click.Context, to: str, dry_run: bool, stacks: tuple[str, ...],
             allow_branch: bool, allow_destroy: bool, force_conflicts: bool, lock_timeout: float,
             lock_ttl: float, parallel: int | None, output: str, summary_md: Path | None) -> None:
    """Restore the stacks' files to REF in a new commit on the default branch, push it,
    and apply the affected stacks.

    The stacks applied are those the rollback commit changes, shared modules included;
    --dry-run plans each of them (counts, waves, types). A --stack rollback that would
    also change other stacks is refused, naming them.

    \b
    Examples:
      gitops-push rollback --to 3f2c1ab --dry-run
      gitops-push rollback --to 20261126T101500Z-a1b2c3   # an audit run id
    """
    from gitops_push.run import model as model_mod
    from gitops_push.run import rollback as rollback_mod

    state: State = ctx.obj
    state.output, state.command = output, "rollback"
    repo, config = _open(state)
    opts = model_mod.RunOptions("rollback", stacks=_stacks(stacks), parallel=parallel,
                               allow_branch=allow_branch, allow_destroy=allow_destroy,
                               force_conflicts=force_conflicts,
                               lock_timeout=lock_timeout,
                               lock_ttl=lock_ttl, flags=_flags(ctx))
    _execute(state, rollback_mod.rollback, output, summary_md, repo, config, opts,
             to=to, dry_run=dry_run)


@cli.group()
def audit() -> None:
    """Read and verify the audit trail."""


@audit.command("log")
@click.option("--stack", metavar="NAME", help="Only runs that touched this stack.")
@click.option("--since", metavar="DATE", help="Only runs since this date (YYYY-MM-DD or ISO).")
@output_option
@click.pass_obj
def audit_log(state: State, stack: str | None, since: str | None, output: str) -> None:
    """List deployments, newest last.

    \b
    Examples:
      gitops-push audit log
      gitops-push audit log --stack network --since 2026-11-01 --output json
    """
    from gitops_push import audit as audit_mod
    from gitops_push import output as out

    state.output, state.command = output, "audit log"
    repo, config = _open(state)
    entries = audit_mod.Trail(repo, config.audit, environ=os.environ).log(stack=stack,
                                                                          since=since)
    from gitops_push.run.deployment import merge_log

    entries = merge_log(entries)  # the jobs of one fan-out are one deployment
    if output == "json":
        out.print_json(out.Envelope("audit log", data={"runs": entries}))
    else:
        out.audit_table(entries)


@audit.command("verify")
@output_option
@click.pass_obj
def audit_verify(state: State, output: str) -> None:
    """Check the hash chain and that the trail's history only ever added records.

    \b
    Examples:
      gitops-push audit verify
    """
    from gitops_push import audit as audit_mod
    from gitops_push import output as out
    from gitops_push.errors import ExitCode

    state.output, state.command = output, "audit verify"
    repo, config = _open(state)
    result = audit_mod.Trail(repo, config.audit, environ=os.environ).verify()
    code = ExitCode.OK if result.ok else ExitCode.AUDIT_INVALID
    if output == "json":
        out.print_json(out.Envelope("audit verify", exit_code=int(code),
                                    status="success" if result.ok else "error",
                                    data=out.verify_data(result)))
    else:
        out.verify_text(result)
    state.extra["exit_code"] = int(code)


@cli.command()
@output_option
@click.pass_obj
def status(state: State, output: str) -> None:
    """Per stack: the last deployed commit, when, by whom, and whether HEAD is ahead.

    \b
    Examples:
      gitops-push status
    """
    from gitops_push import output as out
    from gitops_push.run import status as status_mod

    state.output, state.command = output, "status"
    repo, config = _open(state)
    rows = status_mod.status(repo, config, os.environ)
    if output == "json":
        out.print_json(out.Envelope("status", data={"stacks": rows}))
    else:
        out.status_table(rows)


@cli.group()
def locks() -> None:
    """The per-stack locks on origin (refs/gitops-push/locks/*)."""


@locks.command("list")
@output_option
@click.pass_obj
def locks_list(state: State, output: str) -> None:
    """List the stacks locked right now, by whom, and until when.

    \b
    Examples:
      gitops-push locks list
    """
    from gitops_push import lock
    from gitops_push import output as out
    from gitops_push.git import Repo

    state.output, state.command = output, "locks list"
    repo = Repo(state.repo)
    now = lock.utcnow()
    rows = [lock.lock_data(info, now) for info in lock.LockStore(repo).list()]
    if output == "json":
        out.print_json(out.Envelope("locks list", data={"locks": rows}))
    else:
        out.locks_table(rows)


@locks.command("break")
@click.argument("stack")
@click.option("--force", is_flag=True,
              help="Also break a lock that has not expired (its run may still be applying).")
@output_option
@click.pass_obj
def locks_break(state: State, stack: str, force: bool, output: str) -> None:
    """Delete a stack's lock left by a run that is gone.

    Only an expired lock is broken unless --force is given. A name that is neither a
    stack at HEAD nor a held lock is an error (exit 2), not "not locked".

    \b
    Examples:
      gitops-push locks break network
      gitops-push locks break network --force
    """
    from gitops_push import lock
    from gitops_push import output as out
    from gitops_push.git import Repo

    state.output, state.command = output, "locks break"
    repo = Repo(state.repo)
    broken = lock.break_stack_lock(repo, stack, force=force)
    if broken is None:
        _check_stack_exists(state, stack)
    data = {"stack": stack, "broken": lock.lock_data(broken) if broken else None}
    if output == "json":
        out.print_json(out.Envelope("locks break", data=data))
    elif broken is None:
        out.message(f"stack {stack} is not locked")
    else:
        out.message(f"broke the lock of stack {stack}: {broken.describe()}")


def _check_stack_exists(state: State, stack: str) -> None:
    """``locks break`` of a stack that holds no lock: fine if the stack exists (nothing
    to do), a usage error if no such stack exists at HEAD (a typo must not look like
    success). A lock of a stack removed since is still broken above, before this."""
    from gitops_push.detect.discovery import resolve_stacks
    from gitops_push.errors import UserError

    repo, config = _open(state)
    if not repo.has_commits():
        return
    names = sorted(s.name for s in resolve_stacks(config, repo, repo.tree(repo.head()),
                                                  strict=False))
    if stack not in names:
        raise UserError(f"locks break: no stack {stack!r} in this repository and no lock "
                        f"held under that name; known stacks: {', '.join(names) or '(none)'}")


@cli.command()
@click.option("--ci", type=click.Choice(["github", "gitlab", "none"]), default="none",
              show_default=True, help="Copy this CI system's templates into the repository.")
@click.option("--force", is_flag=True,
              help="Overwrite existing CI files (gitops-push.yaml is never overwritten).")
@click.option("--pip-spec", metavar="SPEC", default=None,
              help="What CI jobs pip install (GITOPS_PUSH_PIP_SPEC), e.g. a git URL pinned to "
                   "a commit (default: this install's, if it came from one).")
@click.pass_obj
def init(state: State, ci: str, force: bool, pip_spec: str | None) -> None:
    """Write a starter gitops-push.yaml (stacks discovered) and copy CI templates.

    An existing gitops-push.yaml is kept as it is, so this also adds CI files to a
    repository that is already set up.

    \b
    Examples:
      gitops-push init --ci github
      gitops-push init --ci gitlab --pip-spec git+https://github.com/ORG/gitops-push@COMMIT
      gitops-push init --ci gitlab --force
    """
    from gitops_push import init as init_mod
    from gitops_push import output as out
    from gitops_push.git import Repo

    state.command = "init"
    repo = Repo(state.repo)
    result = init_mod.init(repo, ci=ci, force=force, pip_spec=pip_spec)
    out.init_text(result)


@cli.group()
def templates() -> None:
    """The CI templates shipped with gitops-push."""


@templates.command("list")
def templates_list() -> None:
    """List the shipped templates.

    \b
    Examples:
      gitops-push templates list
    """
    from gitops_push import init as init_mod

    for name, description in init_mod.list_templates():
        click.echo(f"{name}\t{description}")


@templates.command("show")
@click.argument("name")
def templates_show(name: str) -> None:
    """Print a shipped template.

    \b
    Examples:
      gitops-push templates list
      gitops-push templates show github/workflows/gitops-push-plan.yml
      gitops-push templates show gitlab/gitops-push.gitlab-ci.yml > ci/gitops-push.yml
    """
    from gitops_push import init as init_mod

    click.echo(init_mod.read_template(name), nl=False)


from gitops_push.cli import scale as cli_scale  # noqa: E402  # fan-out, summary, comment (issue 15)

cli_scale.register(cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map every outcome to a documented exit code."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    state = State()
    refuse_empty_values(cli)
    try:
        cli.main(args=argv, prog_name="gitops-push", standalone_mode=False, obj=state)
        code = int(state.extra.get("exit_code", 0))
    except click.exceptions.Exit as exc:
        code = int(exc.exit_code)
    except click.Abort:
        code = ExitCode.INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        code = ExitCode.USAGE
        usage_envelope(exc, sys.argv[1:] if argv is None else argv,
                       os.environ.get(env("output")) == "json")
    except GitopsPushError as exc:
        code = _report(state, exc)
    except KeyboardInterrupt:
        from gitops_push import output as out

        out.message("interrupted", style="red")
        code = ExitCode.INTERRUPTED
    except Exception as exc:  # a bug: short message, traceback with -v
        from gitops_push import output as out

        if state.verbose:
            import traceback

            traceback.print_exc()
        out.error(f"internal error: {type(exc).__name__}: {exc} (run with -v for a traceback)")
        code = ExitCode.INTERNAL
    assert code in DOCUMENTED_EXIT_CODES, code
    return code


def _report(state: State, exc: GitopsPushError) -> int:
    from gitops_push import output as out

    code = int(exc.exit_code)
    out.error(exc)
    if state.output == "json" and state.command:
        out.print_json(out.Envelope(state.command, exit_code=code, status="error",
                                    errors=[out.error_entry(exc)]))
    return code
