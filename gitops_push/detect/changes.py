"""Which stacks a range of commits affects, why, and in which order they run.

A stack missed means a change never deployed, so every uncertain case (base commit
unavailable, first commit) widens to *all stacks* with a warning; it never narrows to
"nothing changed".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from gitops_push import engines
from gitops_push.config import Config, Stack, normalize_path
from gitops_push.detect.discovery import glob_match, resolve_stacks
from gitops_push.detect.inputs import Input, RefIndex
from gitops_push.detect.range import Range, resolve_range
from gitops_push.errors import ConfigError, GitError, UserError
from gitops_push.git import FileChange, Repo
from gitops_push.words import Word

MAX_FILES_SHOWN = 50


@dataclass(frozen=True)
class Reason:
    """A changed file and, when it is outside the stack, the chain that links them."""

    file: str
    chain: tuple[str, ...] = ()

    def __str__(self) -> str:
        return " -> ".join((self.file, *self.chain))


class StackStatus(Word):
    """Why a stack is in a run: its files changed, it was removed from git, or (apply) it
    is stale: a newer commit is already deployed, so this run skips it."""

    CHANGED = "changed"
    REMOVED = "removed"
    STALE = "stale"


@dataclass(frozen=True)
class StackChange:
    """One stack that changed, its wave and why."""

    stack: Stack
    status: StackStatus
    wave: int = 0
    reasons: tuple[Reason, ...] = ()
    note: str = ""

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.file for r in self.reasons))


@dataclass(frozen=True)
class ChangeSet:
    """Every changed stack of a range, in run order."""

    range: Range
    stacks: tuple[StackChange, ...]
    all_stacks: tuple[Stack, ...] = field(default=())

    @property
    def waves(self) -> list[list[StackChange]]:
        out: dict[int, list[StackChange]] = {}
        for s in self.stacks:
            out.setdefault(s.wave, []).append(s)
        return [out[k] for k in sorted(out)]


# -- the range -------------------------------------------------------------------------


# -- the stacks ------------------------------------------------------------------------
def stack_inputs(refs: RefIndex, stack: Stack) -> list[Input]:
    """What the stack reads from outside its directory: its engine knows."""
    return engines.spec(stack.type).inputs(refs, stack.path)


def _ancestors(path: str) -> Iterator[str]:
    """``path`` itself, then each directory above it, ending with "." (the root)."""
    while path:
        yield path
        path = path.rpartition("/")[0]
    yield "."


def _owner(path: str, by_path: Mapping[str, Stack]) -> Stack | None:
    """The deepest stack whose directory holds ``path`` (``by_path``: stack path -> stack)."""
    return next((by_path[a] for a in _ancestors(path) if a in by_path), None)


def _input_links(stacks: Iterable[Stack], refs: RefIndex, changed: list[str]
                 ) -> dict[str, list[Reason]]:
    """stack -> the changed paths among its inputs, each explained by its most specific
    input (a nested module's own chain). Indexed by input path, so a monorepo's
    thousands of stacks cost one lookup per directory level of each changed path."""
    if not changed:
        return {}  # nothing to link (no unparsable file, say): skip indexing every stack
    index: dict[str, list[tuple[str, Input]]] = {}
    for s in stacks:
        for inp in stack_inputs(refs, s):
            index.setdefault(inp.path, []).append((s.name, inp))
    out: dict[str, list[Reason]] = {}
    for path in changed:
        best: dict[str, Input] = {}
        for level in _ancestors(path):
            for name, inp in index.get(level, ()):
                if level != path and not inp.is_dir:
                    continue  # a file input only matches itself
                if name not in best or len(inp.path) > len(best[name].path):
                    best[name] = inp
        for name, inp in best.items():
            out.setdefault(name, []).append(Reason(path, inp.chain))
    return out


def compute(repo: Repo, config: Config, rng: Range, *, audit_dir: str | None = None) -> ChangeSet:
    head_tree = repo.tree(rng.head)
    head_stacks = resolve_stacks(config, repo, head_tree)
    if rng.base is None:
        changes = [StackChange(s, StackStatus.CHANGED, note=_all_note(rng)) for s in head_stacks]
        return ChangeSet(rng, tuple(order(changes, head_stacks)), tuple(head_stacks))
    if rng.base == rng.head:
        return ChangeSet(rng, (), tuple(head_stacks))

    audit_prefix = normalize_path(audit_dir or config.audit.directory) + "/"
    diff = [
        c
        for c in repo.diff(rng.base, rng.head)
        if not all(p.startswith(audit_prefix) for p in c.paths)
    ]
    changed_paths = _paths(diff)
    refs = RefIndex.of(repo, head_tree)
    for engine_type in sorted({s.type for s in head_stacks}):
        engines.spec(engine_type).preload_inputs(refs)
    results: dict[str, list[Reason]] = {}

    by_path = {s.path: s for s in head_stacks}
    for path in changed_paths:
        owner = _owner(path, by_path)
        if owner is not None:
            results.setdefault(owner.name, []).append(Reason(path))
    for s in head_stacks:
        for g in s.watch:
            for path in changed_paths:
                if glob_match(g, path):
                    results.setdefault(s.name, []).append(Reason(path, (f'watch "{g}"',)))
    for name, reasons in _input_links(head_stacks, refs, changed_paths).items():
        results.setdefault(name, []).extend(reasons)
    unparsed = _unparsed(head_stacks, refs, by_path, results)
    if unparsed:
        rng = replace(rng, warnings=(*rng.warnings, *unparsed))

    changes = [
        StackChange(s, StackStatus.CHANGED, reasons=_dedupe(results[s.name]))
        for s in head_stacks
        if s.name in results
    ]
    removed = _removed(repo, config, rng, head_stacks, diff)
    ordered = order(changes, head_stacks, removed)
    return ChangeSet(rng, tuple(ordered), tuple(head_stacks))


def _unparsed(stacks: list[Stack], refs: RefIndex, by_path: Mapping[str, Stack],
              results: dict[str, list[Reason]]) -> list[str]:
    """Stacks that read a file that does not parse (.tf, kustomization) count as changed:
    what it references is unknown, and uncertainty widens, never narrows (issue 12). The
    stack's lint then names the error; the other stacks are planned as usual."""
    hits: dict[str, set[str]] = {}

    def add(name: str, reason: Reason) -> None:
        note = f"cannot be parsed ({refs.broken[reason.file]}): counted as changed"
        results.setdefault(name, []).append(Reason(reason.file, (note, *reason.chain)))
        hits.setdefault(reason.file, set()).add(name)

    for f in refs.broken:
        owner = _owner(f, by_path)
        if owner is not None:
            add(owner.name, Reason(f))
    for name, reasons in _input_links(stacks, refs, list(refs.broken)).items():
        for r in reasons:
            add(name, r)
    return [f"{refs.broken[f]}: what it references cannot be read, so "
            f"{', '.join(sorted(names))} count(s) as changed" for f, names in sorted(hits.items())]


def _paths(diff: Iterable[FileChange]) -> list[str]:
    return list(dict.fromkeys(p for c in diff for p in c.paths))


def _dedupe(reasons: list[Reason]) -> tuple[Reason, ...]:
    seen: dict[str, Reason] = {}
    for r in reasons:
        if r.file not in seen or (seen[r.file].chain and not r.chain):
            seen[r.file] = r
    return tuple(seen.values())


def _all_note(rng: Range) -> str:
    return {
        "all": "--all",
        "first-commit": "first commit",
        "fallback": "base commit unavailable",
    }.get(rng.source, "no base")


def _removed(
    repo: Repo, config: Config, rng: Range, head_stacks: list[Stack], diff: list[FileChange]
) -> list[StackChange]:
    """Stacks that existed at the base and whose directory is gone at head."""
    assert rng.base is not None
    head_tree = repo.tree(rng.head)
    # a stack can only be gone if some directory of a deleted file is gone entirely
    gone_dirs = {
        (c.old_path or c.path).rpartition("/")[0] or "."
        for c in diff
        if c.status in ("D", "R")
    }
    if not any(not head_tree.is_dir(d) for d in gone_dirs) and not _config_changed(config, diff):
        return []
    base_config = _config_at(repo, config, rng.base)
    base_tree = repo.tree(rng.base)
    try:
        base_stacks = resolve_stacks(base_config, repo, base_tree, strict=False)
    except (ConfigError, UserError):
        base_stacks = resolve_stacks(config, repo, base_tree, strict=False)
    head_names = {s.name for s in head_stacks}
    head_paths = {s.path for s in head_stacks}
    out = []
    for s in base_stacks:
        if s.name in head_names or s.path in head_paths or head_tree.is_dir(s.path):
            continue
        gone = [
            c.old_path or c.path
            for c in diff
            if c.status in ("D", "R") and s.owns(c.old_path or c.path)
        ]
        out.append(
            StackChange(
                s,
                StackStatus.REMOVED,
                reasons=tuple(Reason(p) for p in gone[:200]),
                note=f"directory {s.path} removed",
            )
        )
    return out


def _config_changed(config: Config, diff: list[FileChange]) -> bool:
    return config.file is not None and any(config.file in c.paths for c in diff)


def _config_at(repo: Repo, config: Config, sha: str) -> Config:
    """The config file as it was at ``sha`` (to know stacks that were removed with it)."""
    from gitops_push import config as config_mod

    if config.file is None:
        return config
    tree = repo.tree(sha)
    if not tree.is_file(config.file):
        return config
    blob = tree.blob(config.file)
    try:
        return config_mod.parse(repo.read_blobs([blob])[blob], config.file)
    except (ConfigError, UserError):
        return config


# -- ordering --------------------------------------------------------------------------
def order(
    changes: list[StackChange], all_stacks: list[Stack], removed: list[StackChange] | None = None
) -> list[StackChange]:
    """Assign waves: a stack runs after every selected stack it depends on (transitively).

    Removed stacks are destroyed first, dependents before their dependencies.
    """
    removed = removed or []
    by_name = {s.name: s for s in all_stacks}
    selected = {c.stack.name for c in changes}
    closure_cache: dict[str, set[str]] = {}

    def deps(name: str) -> set[str]:
        if name in closure_cache:
            return closure_cache[name]
        out: set[str] = set()
        todo = list(by_name[name].depends_on) if name in by_name else []
        while todo:
            d = todo.pop()
            if d in out or d not in by_name:
                continue
            out.add(d)
            todo.extend(by_name[d].depends_on)
        closure_cache[name] = out
        return out

    rm_names = {c.stack.name: c for c in removed}
    rm_wave: dict[str, int] = {}
    rm_by = {c.stack.name: c.stack for c in removed}

    def rm_level(name: str, seen: frozenset[str] = frozenset()) -> int:
        # destroy order: a removed stack waits for removed stacks that depend on it
        if name in rm_wave:
            return rm_wave[name]
        dependents = [o for o, s in rm_by.items() if name in s.depends_on and o not in seen]
        level = 1 + max((rm_level(o, seen | {name}) for o in dependents), default=0)
        rm_wave[name] = level
        return level

    for n in rm_names:
        rm_level(n)
    offset = max(rm_wave.values(), default=0)

    wave: dict[str, int] = {}
    remaining = sorted(selected)
    while remaining:
        progressed = False
        for name in list(remaining):
            pending = deps(name) & selected
            if all(d in wave for d in pending):
                wave[name] = 1 + max((wave[d] for d in pending), default=0)
                remaining.remove(name)
                progressed = True
        if not progressed:  # cycles are rejected by config; be safe anyway
            for name in remaining:
                wave[name] = 1 + max(wave.values(), default=0)
            break
    out = [
        StackChange(c.stack, c.status, rm_wave[c.stack.name], c.reasons, c.note) for c in removed
    ]
    out += [
        StackChange(c.stack, c.status, offset + wave[c.stack.name], c.reasons, c.note)
        for c in changes
    ]
    return sorted(out, key=lambda c: (c.wave, c.stack.name))


def changed(
    repo: Repo,
    config: Config,
    *,
    base: str | None = None,
    head: str | None = None,
    environ: Mapping[str, str],
    all_stacks: bool = False,
) -> ChangeSet:
    """``changed(base, head)``: every affected stack with status, wave and reasons."""
    if not repo.has_commits():
        raise GitError("the repository has no commits yet; commit your IaC first")
    rng = resolve_range(repo, config, base=base, head=head, environ=environ, all_stacks=all_stacks)
    return compute(repo, config, rng)
