"""A commit's tree as git lists it, the name-status of a diff, and path resolution inside
a tree (what never leaves the repository).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FileChange:
    """One entry of ``git diff --name-status``: status letter, new path, old path."""

    status: str  # A, M, D, R, C, T
    path: str
    old_path: str | None = None

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path,) if self.old_path is None else (self.old_path, self.path)


BLOB_PREFIX = len("100644 blob ")  # ls-tree: "<mode> blob <id>", the mode six digits
REGULAR_MODES = ("100644", "100755")
SYMLINK_MODE = "120000"


@dataclass
class Tree:
    """All blobs of one commit (``ls-tree -r``), with directory lookups.

    ``listing`` maps each path to what ls-tree printed for it, ``<mode> blob <id>``,
    left as printed: splitting 20,000 of them up front costs more than every lookup of
    a run (issue 14: ``changed`` on a monorepo)."""

    sha: str
    listing: dict[str, str]
    _dirs: dict[str, list[str]] | None = field(default=None, repr=False)
    _has_symlinks: bool | None = field(default=None, repr=False)

    def blob(self, path: str) -> str:
        """The blob id of a file (KeyError if the commit has no such file)."""
        return self.listing[path][BLOB_PREFIX:]

    def mode(self, path: str) -> str:
        return self.listing[path][:6]

    @property
    def dirs(self) -> dict[str, list[str]]:
        """Directory -> files directly in it ("." for the root)."""
        if self._dirs is None:
            dirs: dict[str, list[str]] = {}
            for path in self.listing:
                parent = path.rpartition("/")[0] or "."
                files = dirs.get(parent)
                if files is not None:
                    files.append(path)
                    continue
                dirs[parent] = [path]
                while parent != ".":  # a new directory: its ancestors may be new too
                    parent = parent.rpartition("/")[0] or "."
                    if parent in dirs:
                        break
                    dirs[parent] = []
            self._dirs = dirs
        return self._dirs

    def is_dir(self, path: str) -> bool:
        return path == "." or path in self.dirs

    def is_file(self, path: str) -> bool:
        return path in self.listing

    def is_symlink(self, path: str) -> bool:
        return self.listing.get(path, "")[:6] == SYMLINK_MODE

    @property
    def has_symlinks(self) -> bool:
        """Whether any blob of this commit is a symlink (most repositories have none,
        which spares a per-prefix lookup for every path resolved)."""
        if self._has_symlinks is None:
            self._has_symlinks = any(m.startswith(SYMLINK_MODE) for m in self.listing.values())
        return self._has_symlinks

    def files_in(self, path: str) -> list[str]:
        return self.dirs.get(path, [])

    def files_under(self, path: str) -> list[str]:
        if path == ".":
            return list(self.listing)
        prefix = path + "/"
        return [p for p in self.listing if p.startswith(prefix)]


def parse_ls_tree(sha: str, raw: str) -> Tree:
    """The tree of ``ls-tree -r -z --full-tree`` output: blobs only (no gitlinks)."""
    # "<meta>\t<path>\0" records: with the tabs made NULs too, metas and paths alternate,
    # and one C-level zip builds the map (a path may hold a tab: then record by record)
    fields = raw.replace("\t", "\0").split("\0")
    records = raw.count("\0")
    if len(fields) == 2 * records + 1:
        listing = dict(zip(fields[1::2], fields[0::2], strict=False))
    else:
        listing = {}
        for item in raw.split("\0"):
            meta, _, path = item.partition("\t")
            if path:
                listing[path] = meta
    if " commit " in raw:  # submodules: not files of this commit
        listing = {p: m for p, m in listing.items() if m[7:11] == "blob"}
    return Tree(sha, listing)


def parse_name_status(raw: str) -> list[FileChange]:
    items = raw.split("\x00")
    out: list[FileChange] = []
    i = 0
    while i < len(items):
        status = items[i]
        if not status:
            i += 1
            continue
        letter = status[0]
        if letter in "RC":
            out.append(FileChange(letter, items[i + 2], items[i + 1]))
            i += 3
        else:
            out.append(FileChange(letter, items[i + 1]))
            i += 2
    return out


def resolve_in_tree(base_dir: str, target: str) -> str | None:
    """Normalise ``base_dir/target`` (POSIX), or None if it leaves the repository."""
    if target.startswith("/"):
        return None
    parts: list[str] = [] if base_dir in ("", ".") else base_dir.split("/")
    # the same components as PurePosixPath(target).parts (empty and "." ones dropped),
    # without building a path object: called once per reference of every stack
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts) or "."
