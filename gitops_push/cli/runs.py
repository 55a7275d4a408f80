"""The commands that run over stacks: changed, lint, plan, apply, drift and rollback. Each
maps its flags to one call of ``run/<command>`` (or ``detect``) and prints the result.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gitops_push.cli.options import (
    State,
    apply_options,
    emit,
    env,
    flags_of,
    open_repo,
    output_option,
    range_options,
    run_options,
    selection_options,
    stack_names,
    write_summaries,
)


@click.command()
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
    repo, config = open_repo(state)
    cs = changes.changed(repo, config, base=base, head=head, environ=os.environ,
                         all_stacks=all_stacks)
    for w in cs.range.warnings:
        out.warn(w)
    emit(output, lambda: out.Envelope("changed", data=out.changeset_data(cs),
                                      warnings=list(cs.range.warnings)),
         lambda: out.changeset_table(cs))


def report_run(state: State, report: Any, output: str, summary_md: Path | None) -> None:
    """Print a run's result and write its Markdown summary; set the exit code."""
    from gitops_push import output as out

    for w in report.warnings:
        out.warn(w)
    write_summaries(out.report_markdown(report), summary_md)
    emit(output, lambda: out.report_envelope(report), lambda: out.report_table(report))
    state.extra["exit_code"] = int(report.exit_code)


def execute(state: State, fn: Callable[..., Any], output: str, summary_md: Path | None,
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
    report_run(state, report, output, summary_md)


@click.command()
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
    repo, config = open_repo(state)
    opts = model_mod.RunOptions("lint", base=base, head=head, all_stacks=all_stacks,
                               stacks=stack_names(stacks), parallel=parallel, flags=flags_of(ctx))
    execute(state, workflow.lint, output, summary_md, repo, config, opts)


@click.command()
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
    repo, config = open_repo(state)
    opts = model_mod.RunOptions("plan", base=base, head=head, all_stacks=all_stacks,
                               stacks=stack_names(stacks), plan_dir=plan_dir, parallel=parallel,
                               detailed_exitcode=detailed_exitcode, flags=flags_of(ctx))
    execute(state, workflow.plan, output, summary_md, repo, config, opts)


@click.command()
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
    repo, config = open_repo(state)
    opts = model_mod.RunOptions("apply", base=base, all_stacks=all_stacks,
                                stacks=stack_names(stacks), plan_dir=plan_dir,
                                parallel=parallel, allow_branch=allow_branch,
                                allow_destroy=allow_destroy, force_conflicts=force_conflicts,
                                lock_timeout=lock_timeout, lock_ttl=lock_ttl,
                                flags=flags_of(ctx))
    execute(state, deploy.apply, output, summary_md, repo, config, opts)


@click.command()
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
    repo, config = open_repo(state)
    opts = model_mod.RunOptions("drift", all_stacks=True, stacks=stack_names(stacks), fix=fix,
                               record=record, parallel=parallel, allow_branch=allow_branch,
                               allow_destroy=allow_destroy, force_conflicts=force_conflicts,
                               lock_timeout=lock_timeout,
                               lock_ttl=lock_ttl, flags=flags_of(ctx))
    execute(state, drift_mod.drift, output, summary_md, repo, config, opts)


@click.command()
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
    repo, config = open_repo(state)
    opts = model_mod.RunOptions("rollback", stacks=stack_names(stacks), parallel=parallel,
                               allow_branch=allow_branch, allow_destroy=allow_destroy,
                               force_conflicts=force_conflicts,
                               lock_timeout=lock_timeout,
                               lock_ttl=lock_ttl, flags=flags_of(ctx))
    execute(state, rollback_mod.rollback, output, summary_md, repo, config, opts,
             to=to, dry_run=dry_run)
