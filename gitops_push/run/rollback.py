"""``gitops-push rollback --to REF``: roll back through git, so main stays the truth.

The stacks' files are restored to REF in a new commit on the default branch, which is
pushed, and then the stacks that commit changes are applied through the normal apply
path (locks, audit). The audit record names the commit and the run rolled back to.

What a rollback applies is computed, not assumed (issue 12): the restored files are
written to a scratch tree first, and change detection between HEAD and that tree says
which stacks change (a shared module restored for one stack changes every stack that
uses it). ``--dry-run`` plans exactly those stacks in a temporary worktree, so it shows
real counts, waves and types; the real run applies exactly those stacks. A ``--stack``
rollback that would change stacks not named is refused, naming them and why.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from gitops_push import engines
from gitops_push.config import Config
from gitops_push.detect import changes
from gitops_push.detect import range as range_mod
from gitops_push.detect.changes import ChangeSet, StackStatus, stack_inputs
from gitops_push.detect.discovery import resolve_stacks
from gitops_push.detect.inputs import RefIndex
from gitops_push.detect.range import Range
from gitops_push.errors import GitError, UserError
from gitops_push.git import Repo
from gitops_push.git.plumbing import commit_restored, push_head, reset_hard, restored_commit
from gitops_push.run import apply as deploy
from gitops_push.run import guards as guards_mod
from gitops_push.run import plan as workflow
from gitops_push.run import record as record_mod
from gitops_push.run.model import Reporter, RunOptions, RunReport

SUBJECT_NAMES = 5  # stacks named in the commit subject; the body lists every one


def resolve_target(repo: Repo, records: list[dict[str, Any]], to: str) -> tuple[str, str | None]:
    """A commit SHA from a ref or an audit run id (the commit that run deployed)."""
    for rec in reversed(records):
        if rec.get("run_id") == to and isinstance(rec.get("head"), str):
            sha = str(rec["head"])
            if not range_mod.ensure_commit(repo, sha):
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


def preview_commit(repo: Repo, head: str, target: str, paths: list[str]) -> str:
    """A commit (on no branch) of HEAD with ``paths`` restored to ``target``: exactly the
    tree the rollback commits, built in a scratch index so nothing on disk changes."""
    return restored_commit(repo, head, target, paths, "gitops-push rollback preview")


def refuse_dragged(affected: ChangeSet, only: tuple[str, ...], target: str) -> None:
    """``--stack`` names what the operator means to roll back; a rollback that would also
    change other stacks (through a shared module, a ``file()`` or ``watch`` input) is
    refused rather than widened behind their back."""
    if not only:
        return
    dragged = [c for c in affected.stacks if c.stack.name not in only]
    if not dragged:
        return
    why = "; ".join(f"{c.stack.name} ({', '.join(str(r) for r in c.reasons[:3]) or c.note})"
                    for c in dragged)
    every = " ".join(f"--stack {c.stack.name}" for c in affected.stacks)
    raise UserError(
        f"rollback --stack {' --stack '.join(only)} to {target[:12]} would also change "
        f"{', '.join(c.stack.name for c in dragged)}: the files it restores are read by "
        f"them too: {why}. Roll them back together ({every}) or without --stack; nothing "
        "was committed or applied")


def refuse_unlisting(repo: Repo, config: Config, preview: str, target: str) -> None:
    """A rollback restores stack files, never the config: rolling back past the commit
    that added an explicitly listed stack would leave the config naming a directory that
    is gone. Say so, instead of committing something no later run can read."""
    tree = repo.tree(preview)
    gone = [spec for spec in config.stacks if not tree.is_dir(spec.stack.path)]
    if gone:
        raise UserError(
            f"rolling back to {target[:12]} would delete the directory of "
            + ", ".join(f"stack {s.stack.name!r} ({s.stack.path}, listed at {s.path_line})"
                        for s in gone)
            + ", which did not exist then; a rollback never edits the config: remove the "
            "stack from it in a reviewed change (applied with --allow-destroy), or leave it "
            "out with --stack; nothing was committed or applied")


def commit_message(affected: ChangeSet, target: str, run_id: str | None) -> str:
    names = [c.stack.name for c in affected.stacks]
    shown = ", ".join(names) if len(names) <= SUBJECT_NAMES else f"{len(names)} stacks"
    lines = [f"Roll back {shown} to {target[:12]}", "",
             "Restored by gitops-push rollback. Stacks applied (wave: stack, type):"]
    lines += [f"  {c.wave}: {c.stack.name} ({c.stack.type}"
              + (", removed)" if c.status == StackStatus.REMOVED else ")") for c in affected.stacks]
    lines += ["", f"Rollback-To: {target}"]
    if run_id:
        lines.append(f"Rollback-To-Run: {run_id}")
    return "\n".join(lines) + "\n"


def rollback(repo: Repo, config: Config, opts: RunOptions, *, to: str, dry_run: bool,
             environ: Mapping[str, str], reporter: Reporter | None = None,
             cancel: threading.Event | None = None) -> RunReport:
    trail = record_mod.open_trail(repo, config, environ)
    records = trail.records()
    target, run_id = resolve_target(repo, records, to)
    head = repo.head()
    if not dry_run:
        branch = guards_mod.check_branch(repo, config, replace(opts, command="rollback"), environ)
        guards_mod.check_clean(repo)
    else:
        branch = repo.current_branch()
    names, paths = paths_to_restore(repo, config, target, head, opts.stacks)
    report = RunReport("rollback", "dry-run" if dry_run else "", head, target, "rollback")
    affected = None
    if names:
        preview = preview_commit(repo, head, target, paths)
        refuse_unlisting(repo, config, preview, target)
        affected = changes.compute(repo, config, Range(head, preview, "rollback"))
    if affected is None or not affected.stacks:
        report.notes.append(f"nothing to roll back: the stacks already match {target[:12]}")
        return report
    refuse_dragged(affected, opts.stacks, target)
    removed = [c.stack.name for c in affected.stacks if c.status == StackStatus.REMOVED]
    if removed and not opts.allow_destroy:
        raise UserError(f"rolling back to {target[:12]} removes {', '.join(removed)}, which "
                        "would be DESTROYED; pass --allow-destroy (nothing was committed)")
    message = commit_message(affected, target, run_id)
    listing = ", ".join(f"{c.stack.name} (wave {c.wave}, {c.stack.type})"
                        for c in affected.stacks)
    if dry_run:
        result = _dry_run(repo, config, opts, environ, reporter, cancel, head, preview,
                          affected)
        result.command, result.run_id, result.head = "rollback", "dry-run", head
        result.base, result.base_source = target, "rollback"
        result.notes.insert(0, f"dry run: would commit \"{message.splitlines()[0]}\" on "
                               f"{branch or 'HEAD'}, push it, and apply {listing}; the plans "
                               "below are what that apply would do (nothing was committed "
                               "or applied)")
        return result
    commit_restored(repo, target, paths, message)
    new_head = repo.head()
    if repo.has_remote("origin") and branch:
        ok, tail = push_head(repo, "origin", branch)
        if not ok:
            reset_hard(repo, head)
            raise GitError(f"could not push the rollback commit to origin/{branch} (did it move? "
                           f"pull and retry); nothing was applied:\n{tail}")
    extra = {"rollback_to": target, "rollback_of_run": run_id, "rollback_commit": new_head}
    # exactly the stacks the rollback commit changes (compared with the commit before it),
    # not whatever else differs from its last deployment
    result = deploy.apply(repo, config, replace(opts, command="rollback", stacks=(), base=head),
                          environ, reporter, cancel, command="rollback", extra_record=extra,
                          trail=trail)  # read above: not fetched again
    result.notes.insert(0, f"committed {new_head[:12]} restoring {listing} to {target[:12]}")
    return result


def _dry_run(repo: Repo, config: Config, opts: RunOptions, environ: Mapping[str, str],
             reporter: Reporter | None, cancel: threading.Event | None, head: str,
             preview: str, affected: ChangeSet) -> RunReport:
    """Plan the rollback commit's changes in a temporary worktree of it. Files git does
    not track in the stacks' directories (a local backend's state) are copied in, so the
    plans compare with the real state; the worktree is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="gitops-push-rollback-") as tmp:
        wt = Path(tmp) / "wt"
        repo.add_worktree(wt, preview)
        try:
            tracked = repo.tree(head).listing
            for c in affected.stacks:
                _copy_untracked(repo.root, c.stack.path, wt, tracked,
                                engines.spec(c.stack.type).not_carried)
            plan_opts = RunOptions("plan", base=head, parallel=opts.parallel,
                                   flags=opts.flags)
            return workflow.plan(Repo(wt, environ), config, plan_opts, environ, reporter,
                                 cancel)
        finally:
            repo.remove_worktree(wt)


def _copy_untracked(root: Path, path: str, wt: Path, tracked: Mapping[str, Any],
                    skip: frozenset[str]) -> None:
    """Copy the files under ``root/path`` that git does not track at HEAD (state files)
    into the worktree; never the engine's ``not_carried`` directories or symlinks."""
    src = root / path
    if not src.is_dir() or src.is_symlink():
        return
    for f in src.rglob("*"):
        rel = f.relative_to(root)
        if (not f.is_file() or f.is_symlink() or skip.intersection(rel.parts)
                or rel.as_posix() in tracked):
            continue
        target = wt / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
