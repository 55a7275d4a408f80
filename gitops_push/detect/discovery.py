"""Which directories of a commit are stacks: explicit ones from the config plus discovered.

Discovery (``discover:`` globs, or everything when there is no config file) asks each
engine for its stack directories (``EngineSpec.discover``: Terraform roots that no other
directory uses as a local module, kustomize or manifest directories that no
kustomization references). Hidden and vendored directories are skipped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import cache
from typing import Any

from gitops_push import engines
from gitops_push.config import Config, Stack, check_graph
from gitops_push.detect.inputs import RefIndex
from gitops_push.errors import ConfigError
from gitops_push.git import Repo, Tree, resolve_in_tree

# hidden directories (an engine's own, such as a provider cache) are skipped as well
SKIP_DIRS = frozenset({"node_modules", "vendor", "third_party", "__pycache__"})
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@cache
def glob_regex(pattern: str) -> re.Pattern[str]:
    """``**`` spans directories, ``*``/``?``/``[...]`` stay within one path segment."""
    out = []
    i = 0
    p = pattern.strip("/")
    while i < len(p):
        c = p[i]
        if p.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif p.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = p.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
                i += 1
            else:
                body = p[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def glob_match(pattern: str, path: str) -> bool:
    return glob_regex(pattern).match(path) is not None


def skipped(path: str) -> bool:
    return path != "." and any(
        part.startswith(".") or part in SKIP_DIRS for part in path.split("/")
    )


def stack_name(path: str) -> str:
    if path == ".":
        return "root"
    name = re.sub(r"[^a-z0-9\-_.]+", "-", path.lower().replace("/", "-")).strip("-_.")
    return name or "stack-" + hashlib.sha256(path.encode()).hexdigest()[:8]


def resolve_stacks(config: Config, repo: Repo, tree: Tree, *, strict: bool = True) -> list[Stack]:
    """All stacks at one commit. ``strict``: explicit stacks must exist (config errors)."""
    refs = RefIndex.of(repo, tree)
    stacks: list[Stack] = []
    for spec in config.stacks:
        s = spec.stack
        if strict:
            check_stack_path(s, tree, spec.path_line)
        elif not tree.is_dir(s.path):
            continue
        stacks.append(s)
    explicit_paths = {s.path for s in stacks}
    names = {s.name for s in stacks}
    defaults: dict[str, Any] = {}  # frozen settings, parsed once per engine (not per stack)
    for path, engine in discover(config, tree, refs):
        if path in explicit_paths:
            continue
        name = stack_name(path)
        if name in names:
            name = f"{name}-{hashlib.sha256(path.encode()).hexdigest()[:6]}"
        names.add(name)
        if engine not in defaults:
            defaults[engine] = config.default_settings(engine)
        stacks.append(Stack(name=name, path=path, type=engine, settings=defaults[engine]))
    if strict:
        check_graph(stacks, {s.name: s.origin for s in stacks})
    return stacks


def check_stack_path(stack: Stack, tree: Tree, where: str) -> None:
    path = stack.path
    # a symlink anywhere along the path: refuse it if it leaves the repository
    parts = path.split("/") if path != "." else []
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if tree.is_symlink(prefix):
            raise ConfigError(
                f"stack {stack.name!r}: path {path!r} goes through the symlink {prefix!r}; "
                "symlinked stack paths are refused (they can resolve outside the repository)",
                path=where,
            )
    if not tree.is_dir(path):
        raise ConfigError(
            f"stack {stack.name!r}: directory {path!r} does not exist at commit {tree.sha[:12]}",
            path=where,
        )


def discover(config: Config, tree: Tree, refs: RefIndex) -> list[tuple[str, str]]:
    """(path, engine) of every discovered stack, sorted by path. Each engine named in
    ``discover:`` finds its own stack directories, outside the area the others' files
    occupy (a kustomization inside a Terraform module is not a stack of its own)."""
    found: list[tuple[str, str]] = []
    areas: dict[str, set[str]] = {}

    def area(name: str) -> set[str]:
        if name not in areas:
            areas[name] = engines.spec(name).area(refs, skipped)
        return areas[name]

    for name in engines.names():
        globs = config.discover.get(name, ())
        if not globs:
            continue
        others = set().union(*(area(o) for o in engines.names() if o != name))
        for d in engines.spec(name).discover(refs, others, skipped):
            if _matches(globs, d):
                found.append((d, name))
    return sorted(found)


def _matches(globs: Iterable[str], path: str) -> bool:
    return any(glob_match(g, path) for g in globs)


__all__ = ["discover", "glob_match", "resolve_in_tree", "resolve_stacks", "stack_name"]
