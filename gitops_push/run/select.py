"""Choosing the stacks a command runs on: changed since the base, named with --stack, or what
the audit trail says is not yet deployed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gitops_push.config import Config, Stack
from gitops_push.detect import changes
from gitops_push.detect import range as range_mod
from gitops_push.detect.changes import ChangeSet, StackChange, StackStatus
from gitops_push.detect.discovery import resolve_stacks
from gitops_push.detect.range import Range
from gitops_push.errors import UserError
from gitops_push.git import Repo
from gitops_push.run.model import DEPLOY_COMMANDS, Result, RunOptions, StackOutcome


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
        return named_for_apply(repo, config, opts, environ, records)
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
            picked[s.name] = StackChange(s, StackStatus.CHANGED,
                                         note="first deployment (not in the audit trail)")
        else:
            by_base.setdefault(sha, []).append(s)
    for sha, group in by_base.items():
        if sha == head:
            continue
        if not range_mod.ensure_commit(repo, sha):
            warnings.append(f"last deployed commit {sha[:12]} is not available locally: "
                            f"treating {', '.join(s.name for s in group)} as changed")
            for s in group:
                picked[s.name] = StackChange(s, StackStatus.CHANGED,
                                             note="deployed commit unavailable")
            continue
        if repo.is_ancestor(head, sha):
            for s in group:
                stale.append(StackOutcome(
                    name=s.name, type=s.type, path=s.path, wave=0, status=StackStatus.STALE,
                    result=Result.SKIPPED,
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
            if c.status == StackStatus.REMOVED and c.stack.name == name:
                picked[name] = c
    ordered = changes.order([c for c in picked.values() if c.status != StackStatus.REMOVED], stacks,
                            [c for c in picked.values() if c.status == StackStatus.REMOVED])
    rng = Range(None, head, "audit-trail", tuple(warnings))
    return ChangeSet(rng, tuple(ordered), tuple(stacks)), stale, warnings


def named_for_apply(repo: Repo, config: Config, opts: RunOptions, environ: Mapping[str, str],
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
                name=name, type=st.type, path=st.path, wave=0, status=StackStatus.STALE,
                result=Result.SKIPPED, message=f"skipped: already deployed from newer commit "
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
    removed = {c.stack.name: c for c in full.stacks if c.status == StackStatus.REMOVED}
    unknown = [n for n in gone if n not in removed]
    if unknown:
        raise UserError(f"--stack: unknown stack(s): {', '.join(unknown)}; known: "
                        f"{', '.join(sorted(set(present) | set(removed))) or '(none)'}")
    ordered = changes.order(list(kept.stacks) if kept else [], list(full.all_stacks),
                            [replace(removed[n], note="--stack") for n in gone])
    return ChangeSet(full.range, tuple(ordered), full.all_stacks), stale, warnings
