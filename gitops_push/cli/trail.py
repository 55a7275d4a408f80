"""The commands that read shared state: the audit trail (log, verify), status, and locks.
"""

from __future__ import annotations

import os

import click

from gitops_push.cli.options import (
    State,
    emit,
    open_repo,
    output_option,
)


@click.group()
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
    repo, config = open_repo(state)
    entries = audit_mod.Trail(repo, config.audit, environ=os.environ).log(stack=stack,
                                                                          since=since)
    from gitops_push.run.deployment import merge_log

    entries = merge_log(entries)  # the jobs of one fan-out are one deployment
    emit(output, lambda: out.Envelope("audit log", data={"runs": entries}),
         lambda: out.audit_table(entries))


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
    repo, config = open_repo(state)
    result = audit_mod.Trail(repo, config.audit, environ=os.environ).verify()
    code = ExitCode.OK if result.ok else ExitCode.AUDIT_INVALID
    emit(output, lambda: out.Envelope("audit verify", exit_code=int(code),
                                      status="success" if result.ok else "error",
                                      data=out.verify_data(result)),
         lambda: out.verify_text(result))
    state.extra["exit_code"] = int(code)


@click.command()
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
    repo, config = open_repo(state)
    rows = status_mod.status(repo, config, os.environ)
    emit(output, lambda: out.Envelope("status", data={"stacks": rows}),
         lambda: out.status_table(rows))


@click.group()
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
    emit(output, lambda: out.Envelope("locks list", data={"locks": rows}),
         lambda: out.locks_table(rows))


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
    emit(output, lambda: out.Envelope("locks break", data=data),
         lambda: out.message(f"stack {stack} is not locked" if broken is None else
                             f"broke the lock of stack {stack}: {broken.describe()}"))


def _check_stack_exists(state: State, stack: str) -> None:
    """``locks break`` of a stack that holds no lock: fine if the stack exists (nothing
    to do), a usage error if no such stack exists at HEAD (a typo must not look like
    success). A lock of a stack removed since is still broken above, before this."""
    from gitops_push.detect.discovery import resolve_stacks
    from gitops_push.errors import UserError

    repo, config = open_repo(state)
    if not repo.has_commits():
        return
    names = sorted(s.name for s in resolve_stacks(config, repo, repo.tree(repo.head()),
                                                  strict=False))
    if stack not in names:
        raise UserError(f"locks break: no stack {stack!r} in this repository and no lock "
                        f"held under that name; known stacks: {', '.join(names) or '(none)'}")
