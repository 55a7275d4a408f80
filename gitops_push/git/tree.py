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


@dataclass(frozen=True)
class Entry:
    mode: str
    sha: str


@dataclass
class Tree:
    """All blobs of one commit (``ls-tree -r``), with directory lookups."""

    sha: str
    entries: dict[str, Entry]
    _dirs: dict[str, list[str]] | None = field(default=None, repr=False)
    _has_symlinks: bool | None = field(default=None, repr=False)

    @property
    def dirs(self) -> dict[str, list[str]]:
        """Directory -> files directly in it ("." for the root)."""
        if self._dirs is None:
            dirs: dict[str, list[str]] = {}
            for path in self.entries:
                parent = path.rpartition("/")[0] or "."
                dirs.setdefault(parent, []).append(path)
                while parent != ".":
                    parent = parent.rpartition("/")[0] or "."
                    if parent in dirs:
                        break
                    dirs[parent] = []
            self._dirs = dirs
        return self._dirs

    def is_dir(self, path: str) -> bool:
        return path == "." or path in self.dirs

    def is_file(self, path: str) -> bool:
        return path in self.entries

    def is_symlink(self, path: str) -> bool:
        e = self.entries.get(path)
        return e is not None and e.mode == "120000"

    @property
    def has_symlinks(self) -> bool:
        """Whether any blob of this commit is a symlink (most repositories have none,
        which spares a per-prefix lookup for every path resolved)."""
        if self._has_symlinks is None:
            self._has_symlinks = any(e.mode == "120000" for e in self.entries.values())
        return self._has_symlinks

    def files_in(self, path: str) -> list[str]:
        return self.dirs.get(path, [])

    def files_under(self, path: str) -> list[str]:
        if path == ".":
            return list(self.entries)
        prefix = path + "/"
        return [p for p in self.entries if p.startswith(prefix)]


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
