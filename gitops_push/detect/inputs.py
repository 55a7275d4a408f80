"""The engine-neutral index of one commit that change detection and discovery share: its
tree, batched blob reads, in-repository path resolution (symlinks followed, escapes
refused) and a slot per engine for what that engine parsed. What a stack reads from
outside its directory is each engine's answer (``EngineSpec.inputs``: Terraform local
modules and ``file()`` paths, kustomize bases and components); all content is read
from git objects of that commit, which keeps ``changed`` fast on monorepos.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gitops_push.detect.grep_cache import GrepCache
from gitops_push.errors import ParseError
from gitops_push.git import Repo, Tree, resolve_in_tree
from gitops_push.git.tree import REGULAR_MODES  # what git grep searches (no symlinks)

MAX_SYMLINK_HOPS = 40
GREP_BY_PATH_LIMIT = 1000  # more unknown blobs than this: grep the whole commit once


@dataclass(frozen=True)
class Input:
    """A path a stack depends on. ``chain`` explains the link, nearest first."""

    path: str
    is_dir: bool
    chain: tuple[str, ...]


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
        # engine name -> what that engine parsed at this commit (its own cache)
        self.state: dict[str, Any] = {}
        # files an engine could not parse (issue 12): their references are unknown, so
        # change detection counts every stack that reads them as changed
        self.broken: dict[str, ParseError] = {}

    def read(self, paths: Iterable[str]) -> dict[str, bytes]:
        """Contents of files of this commit, in one batch."""
        by_sha: dict[str, list[str]] = {}
        for p in paths:
            by_sha.setdefault(self.tree.blob(p), []).append(p)
        blobs = self.repo.read_blobs(by_sha)
        return {p: blobs.get(sha, b"") for sha, ps in by_sha.items() for p in ps}

    def grep(self, pattern: str, suffixes: tuple[str, ...]) -> set[str]:
        """Files of this commit whose name ends in one of ``suffixes`` and whose content
        matches the extended regex ``pattern`` (``git grep -E``). Blobs seen before are
        answered from the cache; only the others are grepped, by path, or with the
        whole commit when there are many (a first run)."""
        tree = self.tree
        blobs = {p: tree.blob(p) for p, meta in tree.listing.items()
                 if p.endswith(suffixes) and meta.startswith(REGULAR_MODES)}
        cache = GrepCache.of(self.repo.git_dir)
        known = cache.answers(pattern, blobs.values())
        found = {p for p, blob in blobs.items() if known.get(blob)}
        unknown = [p for p, blob in blobs.items() if blob not in known]
        if not unknown:
            return found
        if len(unknown) > GREP_BY_PATH_LIMIT:
            unknown = list(blobs)
            matched = set(self.repo.grep_files(tree.sha, pattern, [f"*{s}" for s in suffixes]))
        else:
            matched = set(self.repo.grep_files(tree.sha, pattern, unknown, literal=True))
        for p in unknown:
            cache.put(pattern, blobs[p], p in matched)
        cache.save()
        return found | (matched & set(unknown))

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
            data = self.read([link])[link].decode("utf-8", "replace")
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
        if not self.tree.has_symlinks:
            return None
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if self.tree.is_symlink(prefix):
                return prefix
        return None
