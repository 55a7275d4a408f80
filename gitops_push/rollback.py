"""``gitops-push rollback --to REF``: roll back through git, so main stays the truth.

The stacks' files are restored to REF in a new commit on the default branch, which is
pushed, and then the affected stacks are applied through the normal apply path (locks,
audit). The audit record links the rollback to the run it undoes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gitops_push import changes, deploy
from gitops_push.changes import Range, stack_inputs
from gitops_push.config import Config
from gitops_push.discovery import resolve_stacks
from gitops_push.errors import GitError, UserError
from gitops_push.git import Repo
from gitops_push.refs import RefIndex
from gitops_push.runner import Reporter, StackOutcome
from gitops_push.workflow import RunOptions, RunReport


def resolve_target(repo: Repo, records: list[dict[str, Any]], to: str) -> tuple[str, str | None]:
    """A commit SHA from a ref or an audit run id (the commit that run deployed)."""
    for rec in reversed(records):
        if rec.get("run_id") == to and isinstance(rec.get("head"), str):
            sha = str(rec["head"])
            if not changes.ensure_commit(repo, sha):
                raise GitError(f"run {to!r} deployed {sha[:12]}, which is not in this clone")
            return sha, to
    return repo.resolve(to, what="--to"), None


def paths_to_restore(repo: Repo, config: Config, target: str, head: str,
                     only: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(stack names, paths) whose content differs between ``target`` and HEAD."""
    cs = changes.compute(repo, config, Range(target, head, "rollback"))
    names = [c.stack.name for c in cs.stacks if not only or c.stack.name in only]
    if only:
        unknown = set(only) - {c.stack.name for c in cs.stacks} - {
            s.name for s in cs.all_stacks}
        if unknown:
            raise UserError(f"--stack: unknown stack(s): {', '.join(sorted(unknown))}")
    target_tree = repo.tree(target)
    target_stacks = {s.name: s for s in resolve_stacks(config, repo, target_tree, strict=False)}
    refs = RefIndex.of(repo, target_tree)
    paths: set[str] = set()
    for c in cs.stacks:
        if c.stack.name not in names:
            continue
        paths.add(c.stack.path)
        old = target_stacks.get(c.stack.name)
        if old is not None:
            paths.update(i.path for i in stack_inputs(refs, old))
        paths.update(r.file for r in c.reasons)
    return names, sorted(paths)


def rollback(repo: Repo, config: Config, opts: RunOptions, *, to: str, dry_run: bool,
             environ: Mapping[str, str], reporter: Reporter | None = None,
             cancel: threading.Event | None = None) -> RunReport:
    trail = deploy.open_trail(repo, config, environ)
    records = trail.records()
    target, run_id = resolve_target(repo, records, to)
    head = repo.head()
    if not dry_run:
        branch = deploy.check_branch(repo, config, replace(opts, command="rollback"), environ)
        deploy.check_clean(repo)
    else:
        branch = repo.current_branch()
    names, paths = paths_to_restore(repo, config, target, head, opts.stacks)
    report = RunReport("rollback", "dry-run" if dry_run else "", head, target, "rollback")
    if not names:
        report.notes.append(f"nothing to roll back: the stacks already match {target[:12]}")
        return report
    if dry_run:
        diff = repo.diff(head, target)
        for name in names:
            files = [c.path for c in diff if any(c.path == p or c.path.startswith(p + "/")
                                                 for p in paths)]
            report.outcomes.append(StackOutcome(
                name=name, type="", path="", wave=0, status="rollback", result="planned",
                message=f"would restore {len(files)} file(s) to {target[:12]} and apply"))
        report.notes.append(f"dry run: would commit a rollback of {', '.join(names)} to "
                            f"{target[:12]} on {branch or 'HEAD'}, push it, and apply")
        return report
    message = (f"Roll back {', '.join(names)} to {target[:12]}\n\n"
               f"Restored by gitops-push rollback.\nRollback-To: {target}\n"
               + (f"Rollback-Of-Run: {run_id}\n" if run_id else ""))
    repo.run("restore", f"--source={target}", "--staged", "--worktree", "--", *paths)
    repo.run("commit", "--no-verify", "-m", message)
    new_head = repo.head()
    if repo.has_remote("origin") and branch:
        res = repo.run("push", "origin", f"HEAD:refs/heads/{branch}", check=False)
        if res.returncode != 0:
            repo.run("reset", "--hard", head)
            raise GitError(f"could not push the rollback commit to origin/{branch} (did it move? "
                           f"pull and retry); nothing was applied:\n{res.tail}")
    extra = {"rollback_to": target, "rollback_of_run": run_id, "rollback_commit": new_head}
    result = deploy.apply(repo, config, replace(opts, command="rollback", stacks=()), environ,
                          reporter, cancel, command="rollback", extra_record=extra,
                          trail=trail)  # read above: not fetched again
    result.notes.insert(0, f"committed {new_head[:12]} restoring {', '.join(names)} to "
                           f"{target[:12]}")
    return result
