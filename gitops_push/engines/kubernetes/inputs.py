"""What a Kubernetes stack reads from outside its directory, and which directories are
stacks: the directories and files a kustomization references (bases, components,
resources, generators; transitively), read from one commit through the engine-neutral
index (detect/inputs.py).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable

from gitops_push.detect.inputs import Input, RefIndex
from gitops_push.engines.kubernetes import kustomize
from gitops_push.errors import ParseError
from gitops_push.git import resolve_in_tree

_SALVAGE_KUSTOMIZE = re.compile(r"""^[ \t]*(?:-|path:)[ \t]*["']?([^"'\s#]+)""", re.MULTILINE)


def kustomization(index: RefIndex, d: str) -> str | None:
    for name in kustomize.KUSTOMIZATION_FILES:
        p = name if d == "." else f"{d}/{name}"
        if index.tree.is_file(p):
            return p
    return None


def _salvage(index: RefIndex, data: bytes, d: str) -> list[kustomize.KustomizeRef]:
    """List items and ``path:`` values of a kustomization that does not parse which
    name a file or directory of this commit, so its bases stay bases."""
    text = data.decode("utf-8", "replace")
    out = []
    for m in _SALVAGE_KUSTOMIZE.finditer(text):
        value = m.group(1)
        target = None if kustomize.is_remote(value) else resolve_in_tree(d, value)
        if target is not None and target != d and (
                index.tree.is_dir(target) or index.tree.is_file(target)):
            out.append(kustomize.KustomizeRef("(unparsed)", value))
    return out


def _refs(index: RefIndex, d: str) -> list[kustomize.KustomizeRef]:
    cache: dict[str, list[kustomize.KustomizeRef]] = index.state.setdefault("kustomize", {})
    if d not in cache:
        kfile = kustomization(index, d)
        if kfile is None:
            cache[d] = []
        else:
            data = index.read([kfile])[kfile]
            try:
                cache[d] = kustomize.references(data, kfile)
            except ParseError as exc:  # as for .tf files: this stack fails, not all
                index.broken[kfile] = exc
                cache[d] = _salvage(index, data, d)
    return cache[d]


def _kustomize_inputs(index: RefIndex, stack_dir: str) -> list[Input]:
    found: list[Input] = []
    seen = {stack_dir}
    queue: deque[tuple[str, tuple[str, ...]]] = deque([(stack_dir, ())])
    while queue:
        d, chain = queue.popleft()
        kfile = kustomization(index, d)
        for ref in _refs(index, d):
            target = index.resolve(d, ref.path, kfile or d)
            link = (f'{ref.field} "{ref.path}" in {kfile}', *chain)
            if index.tree.is_dir(target):
                if target in seen:
                    continue
                seen.add(target)
                found.append(Input(target, True, link))
                if kustomization(index, target):
                    queue.append((target, link))
            else:
                found.append(Input(target, False, link))
    return found


def inputs(index: RefIndex, stack_dir: str) -> list[Input]:
    """A plain manifest directory reads nothing outside itself."""
    if not kustomization(index, stack_dir):
        return []
    return _kustomize_inputs(index, stack_dir)


def discover(index: RefIndex, others: set[str], skipped: Callable[[str], bool]) -> list[str]:
    """Kustomize and manifest directories that are stacks on their own: not referenced by
    a kustomization, not inside one, and not under ``others`` (another engine's area)."""
    tree = index.tree
    kdirs = sorted(d for d in tree.dirs if kustomization(index, d))
    referenced: set[str] = set()
    for d in kdirs:
        for inp in _kustomize_inputs(index, d):
            target = inp.path if inp.is_dir else (inp.path.rpartition("/")[0] or ".")
            if target != d:  # a kustomization's own files do not make it a base
                referenced.add(target)
    manifest_files = index.grep(r'^apiVersion:|"apiVersion"', (".yaml", ".yml", ".json"))
    mdirs = sorted({f.rpartition("/")[0] or "." for f in manifest_files})
    kset = set(kdirs)

    def under_any(d: str, roots: set[str]) -> bool:
        parts = d.split("/")
        return any("/".join(parts[:i]) in roots for i in range(1, len(parts) + 1)) or (
            "." in roots
        )

    top: list[str] = []
    for d in mdirs:
        if under_any(d, kset) or d in referenced or under_any(d, others):
            continue
        if any(d == t or d.startswith(t + "/") or t == "." for t in top):
            continue
        top.append(d)
    result = [d for d in kdirs if d not in referenced and not under_any(d, others)]
    return sorted(d for d in set(result) | set(top) if not skipped(d))
