"""What a Terraform stack reads from outside its directory, and which directories are
stacks: local module sources (transitively) and literal ``file()``-style paths, read
from the git objects of one commit through the engine-neutral index (detect/inputs.py).

Only ``.tf`` files that can hold a reference are read (``git grep`` pre-filters), in
one batch, and their scans are cached by blob id (scan_cache.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from gitops_push.detect.inputs import Input, RefIndex
from gitops_push.engines.terraform import hcl
from gitops_push.engines.terraform.scan_cache import ScanCache
from gitops_push.errors import ParseError
from gitops_push.git import Repo, resolve_in_tree

# a module block or a file()-style call: the only constructs that reference other paths
_TF_CANDIDATE = r"module|file[a-z0-9]*[[:space:]]*\("

_SCAN_CACHES: dict[Path, ScanCache] = {}


def _scan_cache(repo: Repo) -> ScanCache:
    cache = _SCAN_CACHES.get(repo.git_dir)
    if cache is None:
        cache = _SCAN_CACHES[repo.git_dir] = ScanCache(repo.git_dir)
    return cache


class TfRefs:
    """The parsed references of one commit's ``.tf`` files, per directory."""

    @classmethod
    def of(cls, index: RefIndex) -> TfRefs:
        found = index.state.get("terraform")
        if not isinstance(found, TfRefs):
            found = index.state["terraform"] = cls(index)
        return found

    def __init__(self, index: RefIndex) -> None:
        self.index = index
        self._candidates: set[str] | None = None
        self.dirs: dict[Callable[[str], bool], set[str]] = {}  # see _tf_dirs
        self._refs: dict[str, hcl.References] = {}

    @property
    def candidates(self) -> set[str]:
        if self._candidates is None:
            self._candidates = self.index.grep(_TF_CANDIDATE, (".tf",))
        return self._candidates

    def load(self, dirs: Iterable[str]) -> None:
        tree = self.index.tree
        wanted = [
            f
            for d in dirs
            if d not in self._refs
            for f in tree.files_in(d)
            if f.endswith(".tf") and f in self.candidates
        ]
        cache = _scan_cache(self.index.repo)
        found = {f: cache.get(tree.blob(f), f) for f in wanted}
        texts = self.index.read([f for f, hit in found.items() if hit is None])
        for d in dirs:
            self._refs.setdefault(d, hcl.References((), ()))
        merged: dict[str, tuple[list[hcl.ModuleRef], list[hcl.FileRef]]] = {}
        for f in sorted(found):
            d = f.rpartition("/")[0] or "."
            refs = found[f]
            if refs is None:
                text = texts[f].decode("utf-8", "replace")
                try:
                    refs = hcl.scan(text, f)
                except ParseError as exc:  # never cached: it is scanned again next time
                    self.index.broken[f] = exc
                    refs = self._salvage(text, f, d)
                else:
                    cache.put(tree.blob(f), refs)
            mods, files = merged.setdefault(d, ([], []))
            mods.extend(refs.modules)
            files.extend(refs.files)
        for d, (mods, files) in merged.items():
            self._refs[d] = hcl.References(tuple(mods), tuple(files))
        cache.save()

    def _salvage(self, text: str, f: str, d: str) -> hcl.References:
        """The local module sources a file that does not parse still names, so its modules
        are not mistaken for stacks by discovery (its file() paths do not matter: every
        stack that reads this directory counts as changed anyway)."""
        mods = []
        for m in hcl.salvage_modules(text, f):
            target = resolve_in_tree(d, m.source)
            if target is not None and self.index.tree.is_dir(target):
                mods.append(m)
        return hcl.References(tuple(mods), ())

    def refs(self, d: str) -> hcl.References:
        if d not in self._refs:
            self.load([d])
        return self._refs[d]

    def module_dirs(self, tf_dirs: Iterable[str]) -> set[str]:
        """Directories that some Terraform directory uses as a local module."""
        dirs = sorted(tf_dirs)
        self.load(dirs)
        used: set[str] = set()
        for d in dirs:
            for m in self._refs[d].modules:
                if hcl.is_local_source(m.source):
                    target = resolve_in_tree(d, m.source)
                    if target is not None and target != d:
                        used.add(target)
        return used


def preload(index: RefIndex) -> None:
    """Parse every ``.tf`` file that can hold a reference, in one batch read."""
    tf = TfRefs.of(index)
    tf.load(sorted({f.rpartition("/")[0] or "." for f in tf.candidates}))


def inputs(index: RefIndex, stack_dir: str) -> list[Input]:
    tf = TfRefs.of(index)
    found: list[Input] = []
    seen = {stack_dir}
    queue: deque[tuple[str, tuple[str, ...]]] = deque([(stack_dir, ())])
    while queue:
        d, chain = queue.popleft()
        refs = tf.refs(d)
        for f in refs.files:
            # path.module is the module's own directory; path.root, path.cwd and a bare
            # relative path resolve from the root module (the stack) in CI
            base = d if f.anchor == "module" else stack_dir
            where = f"{f.file}:{f.line}"
            target = index.resolve(base, f.path, where)
            found.append(Input(target, False, (f"{f.function}() in {where}", *chain)))
        for m in refs.modules:
            if not hcl.is_local_source(m.source):
                continue
            where = f"{m.file}:{m.line}"
            target = index.resolve(d, m.source, where)
            link = (f'module "{m.name}" in {m.file}', *chain)
            if target not in seen:
                seen.add(target)
                if not index.tree.is_dir(target):
                    # a typo in one module source fails the stacks that read it
                    # (terraform init names it too), not every stack (issue 12)
                    index.broken.setdefault(m.file, ParseError(
                        f"module {m.name!r}: source {m.source!r} is not a directory "
                        f"at commit {index.tree.sha[:12]}",
                        path=where,
                    ))
                    continue
                found.append(Input(target, True, link))
                queue.append((target, link))
    return found


def _tf_dirs(index: RefIndex, skipped: Callable[[str], bool]) -> set[str]:
    """Directories holding ``.tf`` files (asked twice per commit: area and discover)."""
    dirs = TfRefs.of(index).dirs
    if skipped not in dirs:
        dirs[skipped] = {d for d in {p.rpartition("/")[0] or "." for p in index.tree.listing
                                     if p.endswith(".tf")} if not skipped(d)}
    return dirs[skipped]


def area(index: RefIndex, skipped: Callable[[str], bool]) -> set[str]:
    """Directories Terraform files occupy (roots and local modules): no other engine
    discovers a stack under them."""
    tf_dirs = _tf_dirs(index, skipped)
    return tf_dirs | TfRefs.of(index).module_dirs(tf_dirs)


def discover(index: RefIndex, others: set[str], skipped: Callable[[str], bool]) -> list[str]:
    """Directories with ``.tf`` files that no other directory uses as a local module."""
    tf_dirs = _tf_dirs(index, skipped)
    return sorted(tf_dirs - TfRefs.of(index).module_dirs(tf_dirs))
