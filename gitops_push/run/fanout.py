"""``gitops-push fan-out``: plan one CI job per stack (or group of stacks) for GitHub
Actions or GitLab CI, in dependency order, without a scheduler of our own (issue 15).

The stacks are selected exactly as the named command selects them (``apply``: each
stack against its last successful deployment in the audit trail). They are cut into
*levels*: normally one per wave; when there are more waves than ``max_levels``,
neighbouring waves share a level. A level's stacks are packed into jobs whose stacks
never depend on a stack of another job of the same level, so every job only waits for
jobs of earlier levels and the job graph has no cycle. A job of several stacks runs
them with ``--parallel`` and gitops-push orders them inside the job.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from gitops_push.config import Config, Stack
from gitops_push.detect.changes import ChangeSet, StackChange, StackStatus
from gitops_push.errors import UserError
from gitops_push.git import Repo

DEFAULT_MAX_JOBS = 256  # GitHub's limit of jobs per matrix
PHASES = {"apply": ("apply", "drift"), "plan": ("plan",), "drift": ("drift", "apply")}


@dataclass(frozen=True)
class Job:
    """One CI job of a fan-out: the stacks it runs and the jobs it waits for."""

    key: str  # stable and unique: "<level>-<n>"
    level: int  # 1-based; jobs only wait for jobs of lower levels
    stacks: tuple[StackChange, ...]
    needs: tuple[str, ...]  # keys of the jobs it waits for

    @property
    def names(self) -> list[str]:
        return [c.stack.name for c in self.stacks]

    @property
    def type(self) -> str:
        types = sorted({c.stack.type for c in self.stacks})
        return types[0] if len(types) == 1 else "mixed"

    @property
    def parallel(self) -> int:
        """Stacks of the job's largest wave: what it can run at once."""
        per_wave: dict[int, int] = {}
        for c in self.stacks:
            per_wave[c.wave] = per_wave.get(c.wave, 0) + 1
        return min(64, max(per_wave.values(), default=1))


@dataclass(frozen=True)
class FanOut:
    """The jobs a fan-out generates, level by level."""

    command: str
    head: str
    jobs: tuple[Job, ...]
    levels: int
    deployment_id: str | None
    credentials: Mapping[str, tuple[str, ...]]  # stack -> variable NAMES it reads
    warnings: tuple[str, ...] = ()


# -- selection: exactly as the command ---------------------------------------------------
def select(repo: Repo, config: Config, command: str, opts: Any, environ: Mapping[str, str]
           ) -> tuple[ChangeSet, list[str]]:
    """The stacks ``command`` would run with these options, and the selection's warnings."""
    from gitops_push.run import plan as workflow
    from gitops_push.run import select as select_mod

    if command == "apply":
        from gitops_push.audit.trail import Trail

        records = Trail(repo, config.audit, environ=environ).records()
        cs, _stale, warnings = select_mod.select_for_apply(repo, config, opts, environ, records)
        removed = [c.stack.name for c in cs.stacks if c.status == StackStatus.REMOVED]
        if removed and not opts.allow_destroy:
            raise UserError(
                f"these stacks were removed from git and would be DESTROYED: "
                f"{', '.join(removed)}; re-run with --allow-destroy to plan jobs for them "
                "(no job plan was written)")
        return cs, [*cs.range.warnings, *warnings]
    if command == "plan":
        cs, _stale, warnings = workflow.plan_selection(repo, config, opts, environ)
        return cs, [*cs.range.warnings, *warnings]
    sel = replace(opts, all_stacks=not opts.stacks, base=None)  # drift: every stack
    cs = select_mod.select(repo, config, sel, environ)
    cs = ChangeSet(cs.range, tuple(c for c in cs.stacks if c.status != StackStatus.REMOVED),
                   cs.all_stacks)
    return cs, list(cs.range.warnings)


def credential_names(stack: Stack, command: str) -> tuple[str, ...]:
    """The CI variables a stack's job reads for ``command``: names, never values."""
    from gitops_push import engines

    names: set[str] = set()
    for phase in PHASES[command]:
        creds = stack.credentials.get(phase)
        if creds is not None:
            names.update(creds.env.values())
    with contextlib.suppress(Exception):  # an unknown engine is reported by the job itself
        names.update(n for n in engines.spec(stack.type).env_names(stack.settings)
                     if not n.startswith("GITOPS_PUSH_"))
    return tuple(sorted(names))


# -- grouping --------------------------------------------------------------------------
def near_deps_fn(cs: ChangeSet) -> Callable[[str], set[str]]:
    """The selected stacks a stack waits for, looking through unselected ones."""
    by_name = {s.name: s for s in cs.all_stacks}
    for c in cs.stacks:
        by_name.setdefault(c.stack.name, c.stack)
    selected = {c.stack.name for c in cs.stacks}
    removed = {c.stack.name for c in cs.stacks if c.status == StackStatus.REMOVED}
    dependents: dict[str, set[str]] = {}
    for c in cs.stacks:
        if c.status == StackStatus.REMOVED:  # destroyed dependents first: reversed edges
            for d in c.stack.depends_on:
                if d in removed:
                    dependents.setdefault(d, set()).add(c.stack.name)
    cache: dict[str, set[str]] = {}

    def near(name: str) -> set[str]:
        if name in cache:
            return cache[name]
        if name in removed:
            cache[name] = dependents.get(name, set())
            return cache[name]
        out: set[str] = set()
        seen: set[str] = set()
        todo = list(by_name[name].depends_on) if name in by_name else []
        while todo:
            d = todo.pop()
            if d in seen:
                continue
            seen.add(d)
            if d in selected and d not in removed:
                out.add(d)
            elif d in by_name and d not in removed:
                todo.extend(by_name[d].depends_on)
        cache[name] = out
        return out

    return near


def _bands(waves: list[int], limit: int) -> list[list[int]]:
    """Waves as levels; past ``limit``, the deepest waves share the last level.

    Deep graphs are usually thin at the bottom (a chain of a few stacks), so folding
    the tail keeps the wide waves apart, where the parallelism is.
    """
    if len(waves) <= limit:
        return [[w] for w in waves]
    return [[w] for w in waves[:limit - 1]] + [waves[limit - 1:]]


def _components(names: list[str], near: Callable[[str], set[str]]) -> list[list[str]]:
    """Stacks of one level linked by a dependency stay together (union-find)."""
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for n in names:
        for d in near(n):
            if d in parent:
                a, b = root(n), root(d)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(root(n), []).append(n)
    return list(groups.values())


def _allocate(sizes: list[int], units: list[int], budget: int) -> list[int]:
    """Jobs per level: at least one, at most its units, about proportional to stacks."""
    total = sum(sizes) or 1
    alloc = [max(1, min(u, budget * s // total)) for s, u in zip(sizes, units, strict=True)]
    while sum(alloc) > budget:
        i = max(range(len(alloc)), key=lambda k: (alloc[k], -k))
        alloc[i] -= 1
    while sum(alloc) < budget:
        room = [k for k in range(len(alloc)) if alloc[k] < units[k]]
        if not room:
            break
        i = max(room, key=lambda k: (sizes[k] / alloc[k], -k))
        alloc[i] += 1
    return alloc


def group(cs: ChangeSet, max_jobs: int, max_levels: int = 0) -> tuple[list[Job], int]:
    """The jobs (at most ``max_jobs``) and the number of levels."""
    if not cs.stacks:
        return [], 0
    near = near_deps_fn(cs)
    counts: dict[int, int] = {}
    for c in cs.stacks:
        counts[c.wave] = counts.get(c.wave, 0) + 1
    limit = min(max_jobs, max_levels) if max_levels > 0 else max_jobs
    bands = _bands(sorted(counts), limit)
    level_of_wave = {w: i for i, band in enumerate(bands, 1) for w in band}
    by_level: dict[int, list[StackChange]] = {}
    for c in cs.stacks:
        by_level.setdefault(level_of_wave[c.wave], []).append(c)
    changes = {c.stack.name: c for c in cs.stacks}
    comps = {lvl: _components([c.stack.name for c in by_level[lvl]], near)
             for lvl in by_level}
    levels = sorted(by_level)
    alloc = _allocate([len(by_level[lv]) for lv in levels], [len(comps[lv]) for lv in levels],
                      max_jobs)
    jobs: list[tuple[int, list[str]]] = []
    for lvl, k in zip(levels, alloc, strict=True):
        bins: list[list[str]] = [[] for _ in range(k)]
        # largest first into the lightest bin (ties: first bin): balanced and stable
        for comp in sorted(comps[lvl], key=lambda c: (-len(c), c[0])):
            min(bins, key=len).extend(comp)
        jobs += [(lvl, sorted(b, key=lambda n: (changes[n].wave, n))) for b in bins if b]
    key_of: dict[str, str] = {}
    keyed: list[tuple[str, int, list[str]]] = []
    per_level: dict[int, int] = {}
    for lvl, names in jobs:
        per_level[lvl] = per_level.get(lvl, 0) + 1
        key = f"{lvl}-{per_level[lvl]}"
        keyed.append((key, lvl, names))
        for n in names:
            key_of[n] = key
    out = []
    for key, lvl, names in keyed:
        needs = sorted({key_of[d] for n in names for d in near(n)} - {key},
                       key=lambda k: tuple(int(x) for x in k.split("-")))
        out.append(Job(key, lvl, tuple(changes[n] for n in names), tuple(needs)))
    return out, len(levels)


def fan_out(repo: Repo, config: Config, command: str, opts: Any, environ: Mapping[str, str],
            *, max_jobs: int = DEFAULT_MAX_JOBS, max_levels: int = 0) -> FanOut:
    from gitops_push import ci as ci_env

    if command not in PHASES:
        raise UserError(f"--for: {command!r} is not one of {', '.join(PHASES)}")
    if max_jobs < 1:
        raise UserError("--max-jobs must be at least 1")
    cs, warnings = select(repo, config, command, opts, environ)
    jobs, levels = group(cs, max_jobs, max_levels)
    creds = {c.stack.name: credential_names(c.stack, command) for c in cs.stacks}
    return FanOut(command, cs.range.head, tuple(jobs), levels, ci_env.deployment_id(environ),
                  creds, tuple(warnings))


# -- GitHub: a strategy.matrix ------------------------------------------------------------
def github_entry(job: Job, plan: FanOut) -> dict[str, Any]:
    names = job.names
    label = names[0] if len(names) == 1 else f"{names[0]} +{len(names) - 1}"
    return {
        "name": f"{job.level}: {label}"[:100],
        "stacks": " ".join(names),  # GITOPS_PUSH_STACK takes a space-separated list
        "count": len(names),
        "wave": job.level,
        "type": job.type,
        "parallel": job.parallel,
        "destroy": any(c.status == StackStatus.REMOVED for c in job.stacks),
        "needs": list(job.needs),
        "credentials": " ".join(sorted({n for s in names for n in plan.credentials[s]})),
    }


def github_matrix(plan: FanOut, level: int | None = None) -> dict[str, Any]:
    """``{"include": [...]}``: every job, or one level's (one matrix job per level)."""
    return {"include": [github_entry(j, plan) for j in plan.jobs
                        if level is None or j.level == level]}


def github_outputs(plan: FanOut, levels: int) -> dict[str, str]:
    """The step outputs the fan-out workflow reads: the whole matrix, the number of
    levels, and one matrix per level (``wave-1`` .. ``wave-<levels>``)."""
    out = {"matrix": _json(github_matrix(plan)), "waves": str(plan.levels),
           "jobs": str(len(plan.jobs))}
    for lvl in range(1, levels + 1):
        out[f"wave-{lvl}"] = _json(github_matrix(plan, lvl))
    return out


def _json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


__all__ = ["DEFAULT_MAX_JOBS", "FanOut", "Job", "fan_out", "github_matrix", "github_outputs",
           "group"]
