"""What each stack reads from outside its own directory, at one commit.

Terraform: local module sources (transitively) and literal ``file()``-style paths.
Kustomize: directories and files a kustomization references (transitively).
All content is read from git objects of that commit, in batches, and only for the
files that can hold a reference (``git grep`` pre-filters), which keeps
``changed`` fast on monorepos with thousands of stacks.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gitops_push.engines.kubernetes import kustomize
from gitops_push.engines.terraform import hcl
from gitops_push.engines.terraform.scan_cache import ScanCache
from gitops_push.errors import ParseError
from gitops_push.git import Repo, Tree, resolve_in_tree

# a module block or a file()-style call: the only constructs that reference other paths
_TF_CANDIDATE = r"module|file[a-z0-9]*[[:space:]]*\("
MAX_SYMLINK_HOPS = 40
_SALVAGE_KUSTOMIZE = re.compile(r"""^[ \t]*(?:-|path:)[ \t]*["']?([^"'\s#]+)""", re.MULTILINE)


@dataclass(frozen=True)
class Input:
    """A path a stack depends on. ``chain`` explains the link, nearest first."""

    path: str
    is_dir: bool
    chain: tuple[str, ...]


_SCAN_CACHES: dict[Path, ScanCache] = {}


def _scan_cache(repo: Repo) -> ScanCache:
    cache = _SCAN_CACHES.get(repo.git_dir)
    if cache is None:
        cache = _SCAN_CACHES[repo.git_dir] = ScanCache(repo.git_dir)
    return cache


class RefIndex:
    @classmethod
    def of(cls, repo: Repo, tree: Tree) -> RefIndex:
        """The index of one commit, shared by discovery and change detection (it caches
        parsed files, and re-reading them per stack would cost a git call each)."""
        index = repo.ref_indexes.get(tree.sha)
        if index is None:
            index = repo.ref_indexes[tree.sha] = cls(repo, tree)
        return index

    def __init__(self, repo: Repo, tree: Tree) -> None:
        self.repo = repo
        self.tree = tree
        self._tf_candidates: set[str] | None = None
        self._tf_refs: dict[str, hcl.References] = {}
        self._k_refs: dict[str, list[kustomize.KustomizeRef]] = {}
        # .tf files the scanner could not parse (issue 12): their references are unknown,
        # so change detection counts every stack that reads them as changed
        self.broken: dict[str, ParseError] = {}

    # -- reading ----------------------------------------------------------------------
    @property
    def tf_candidates(self) -> set[str]:
        if self._tf_candidates is None:
            self._tf_candidates = set(self.repo.grep_files(self.tree.sha, _TF_CANDIDATE, ["*.tf"]))
        return self._tf_candidates

    def _read(self, paths: Iterable[str]) -> dict[str, bytes]:
        by_sha: dict[str, list[str]] = {}
        for p in paths:
            by_sha.setdefault(self.tree.entries[p].sha, []).append(p)
        blobs = self.repo.read_blobs(by_sha)
        return {p: blobs.get(sha, b"") for sha, ps in by_sha.items() for p in ps}

    def _load_tf(self, dirs: Iterable[str]) -> None:
        wanted = [
            f
            for d in dirs
            if d not in self._tf_refs
            for f in self.tree.files_in(d)
            if f.endswith(".tf") and f in self.tf_candidates
        ]
        cache = _scan_cache(self.repo)
        found = {f: cache.get(self.tree.entries[f].sha, f) for f in wanted}
        texts = self._read([f for f, hit in found.items() if hit is None])
        for d in dirs:
            self._tf_refs.setdefault(d, hcl.References((), ()))
        merged: dict[str, tuple[list[hcl.ModuleRef], list[hcl.FileRef]]] = {}
        for f in sorted(found):
            d = f.rpartition("/")[0] or "."
            refs = found[f]
            if refs is None:
                text = texts[f].decode("utf-8", "replace")
                try:
                    refs = hcl.scan(text, f)
                except ParseError as exc:  # never cached: it is scanned again next time
                    self.broken[f] = exc
                    refs = self._salvage(text, f, d)
                else:
                    cache.put(self.tree.entries[f].sha, refs)
            mods, files = merged.setdefault(d, ([], []))
            mods.extend(refs.modules)
            files.extend(refs.files)
        for d, (mods, files) in merged.items():
            self._tf_refs[d] = hcl.References(tuple(mods), tuple(files))
        cache.save()

    def _salvage(self, text: str, f: str, d: str) -> hcl.References:
        """The local module sources a file that does not parse still names, so its modules
        are not mistaken for stacks by discovery (its file() paths do not matter: every
        stack that reads this directory counts as changed anyway)."""
        mods = []
        for m in hcl.salvage_modules(text, f):
            target = resolve_in_tree(d, m.source)
            if target is not None and self.tree.is_dir(target):
                mods.append(m)
        return hcl.References(tuple(mods), ())

    def _salvage_kustomize(self, data: bytes, d: str) -> list[kustomize.KustomizeRef]:
        """List items and ``path:`` values of a kustomization that does not parse which
        name a file or directory of this commit, so its bases stay bases."""
        text = data.decode("utf-8", "replace")
        out = []
        for m in _SALVAGE_KUSTOMIZE.finditer(text):
            value = m.group(1)
            target = None if kustomize.is_remote(value) else resolve_in_tree(d, value)
            if target is not None and target != d and (
                    self.tree.is_dir(target) or self.tree.is_file(target)):
                out.append(kustomize.KustomizeRef("(unparsed)", value))
        return out

    def preload_terraform(self) -> None:
        """Parse every ``.tf`` file that can hold a reference, in one batch read."""
        self._load_tf(sorted({f.rpartition("/")[0] or "." for f in self.tf_candidates}))

    def tf_refs(self, d: str) -> hcl.References:
        if d not in self._tf_refs:
            self._load_tf([d])
        return self._tf_refs[d]

    def kustomization(self, d: str) -> str | None:
        for name in kustomize.KUSTOMIZATION_FILES:
            p = name if d == "." else f"{d}/{name}"
            if self.tree.is_file(p):
                return p
        return None

    def k_refs(self, d: str) -> list[kustomize.KustomizeRef]:
        if d not in self._k_refs:
            kfile = self.kustomization(d)
            if kfile is None:
                self._k_refs[d] = []
            else:
                data = self._read([kfile])[kfile]
                try:
                    self._k_refs[d] = kustomize.references(data, kfile)
                except ParseError as exc:  # as for .tf files: this stack fails, not all
                    self.broken[kfile] = exc
                    self._k_refs[d] = self._salvage_kustomize(data, d)
        return self._k_refs[d]

    # -- path resolution --------------------------------------------------------------
    def resolve(self, base_dir: str, target: str, where: str) -> str:
        """Resolve ``target`` relative to ``base_dir``, following in-repo symlinks.

        Anything that leaves the repository (``..`` past the root, an absolute path, a
        symlink pointing outside) or loops is a ParseError naming ``where``.
        """
        resolved = resolve_in_tree(base_dir, target)
        if resolved is None:
            raise ParseError(f"{target!r} resolves outside the repository; refused", path=where)
        for _ in range(MAX_SYMLINK_HOPS):
            link = self._symlink_prefix(resolved)
            if link is None:
                return resolved
            data = self._read([link])[link].decode("utf-8", "replace")
            rest = resolved[len(link) :].lstrip("/")
            parent = link.rpartition("/")[0] or "."
            nxt = resolve_in_tree(parent, data + ("/" + rest if rest else ""))
            if nxt is None:
                raise ParseError(
                    f"{target!r} goes through the symlink {link!r} -> {data!r}, which points "
                    "outside the repository; refused",
                    path=where,
                )
            resolved = nxt
        raise ParseError(f"{target!r}: too many symlink levels (a symlink loop?)", path=where)

    def _symlink_prefix(self, path: str) -> str | None:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if self.tree.is_symlink(prefix):
                return prefix
        return None

    # -- terraform --------------------------------------------------------------------
    def module_dirs(self, tf_dirs: Iterable[str]) -> set[str]:
        """Directories that some Terraform directory uses as a local module."""
        dirs = sorted(tf_dirs)
        self._load_tf(dirs)
        used: set[str] = set()
        for d in dirs:
            for m in self._tf_refs[d].modules:
                if hcl.is_local_source(m.source):
                    target = resolve_in_tree(d, m.source)
                    if target is not None and target != d:
                        used.add(target)
        return used

    def terraform_inputs(self, stack_dir: str) -> list[Input]:
        inputs: list[Input] = []
        seen = {stack_dir}
        queue: deque[tuple[str, tuple[str, ...]]] = deque([(stack_dir, ())])
        while queue:
            d, chain = queue.popleft()
            refs = self.tf_refs(d)
            for f in refs.files:
                # path.module is the module's own directory; path.root, path.cwd and a bare
                # relative path resolve from the root module (the stack) in CI
                base = d if f.anchor == "module" else stack_dir
                where = f"{f.file}:{f.line}"
                target = self.resolve(base, f.path, where)
                inputs.append(Input(target, False, (f"{f.function}() in {where}", *chain)))
            for m in refs.modules:
                if not hcl.is_local_source(m.source):
                    continue
                where = f"{m.file}:{m.line}"
                target = self.resolve(d, m.source, where)
                link = (f'module "{m.name}" in {m.file}', *chain)
                if target not in seen:
                    seen.add(target)
                    if not self.tree.is_dir(target):
                        # a typo in one module source fails the stacks that read it
                        # (terraform init names it too), not every stack (issue 12)
                        self.broken.setdefault(m.file, ParseError(
                            f"module {m.name!r}: source {m.source!r} is not a directory "
                            f"at commit {self.tree.sha[:12]}",
                            path=where,
                        ))
                        continue
                    inputs.append(Input(target, True, link))
                    queue.append((target, link))
        return inputs

    # -- kustomize --------------------------------------------------------------------
    def kustomize_inputs(self, stack_dir: str) -> list[Input]:
        inputs: list[Input] = []
        seen = {stack_dir}
        queue: deque[tuple[str, tuple[str, ...]]] = deque([(stack_dir, ())])
        while queue:
            d, chain = queue.popleft()
            kfile = self.kustomization(d)
            for ref in self.k_refs(d):
                target = self.resolve(d, ref.path, kfile or d)
                link = (f'{ref.field} "{ref.path}" in {kfile}', *chain)
                if self.tree.is_dir(target):
                    if target in seen:
                        continue
                    seen.add(target)
                    inputs.append(Input(target, True, link))
                    if self.kustomization(target):
                        queue.append((target, link))
                else:
                    inputs.append(Input(target, False, link))
        return inputs

    def kubernetes_dirs(self, exclude_under: set[str]) -> list[str]:
        """Kustomize and manifest directories that are stacks on their own."""
        kdirs = sorted(d for d in self.tree.dirs if self.kustomization(d))
        referenced: set[str] = set()
        for d in kdirs:
            for inp in self.kustomize_inputs(d):
                target = inp.path if inp.is_dir else (inp.path.rpartition("/")[0] or ".")
                if target != d:  # a kustomization's own files do not make it a base
                    referenced.add(target)
        manifest_files = self.repo.grep_files(
            self.tree.sha, r'^apiVersion:|"apiVersion"', ["*.yaml", "*.yml", "*.json"]
        )
        mdirs = sorted({f.rpartition("/")[0] or "." for f in manifest_files})
        kset = set(kdirs)

        def under_any(d: str, roots: set[str]) -> bool:
            parts = d.split("/")
            return any("/".join(parts[:i]) in roots for i in range(1, len(parts) + 1)) or (
                "." in roots
            )

        top: list[str] = []
        for d in mdirs:
            if under_any(d, kset) or d in referenced or under_any(d, exclude_under):
                continue
            if any(d == t or d.startswith(t + "/") or t == "." for t in top):
                continue
            top.append(d)
        result = [d for d in kdirs if d not in referenced and not under_any(d, exclude_under)]
        return sorted(set(result) | set(top))
