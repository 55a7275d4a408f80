"""What ``hcl.scan`` found in a ``.tf`` file, cached by the file's git blob id.

Why: ``changed`` scans every ``.tf`` file that can hold a module source or a ``file()``
path; on a monorepo of 2,000 stacks that scan is most of its time (issue 14), yet
between two runs almost no file changed. A blob id names the exact content, so the
answer for a blob never goes stale; the key also carries a hash of the scanner's own
source, so a new gitops-push never reads answers an older scanner gave. Files that do
not parse are never cached (the error is raised again, naming file and line).

The cache is one JSON file under ``<git-dir>/gitops-push/cache``, outside the working
tree; it is written atomically, and a cache that cannot be read or written is ignored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from gitops_push.engines.terraform import hcl
from gitops_push.errors import GitopsPushError
from gitops_push.fsutil import atomic_write

MAX_ENTRIES = 50_000  # beyond this, only the blobs of the current run are kept


def _scanner_version() -> str:
    return hashlib.sha256(Path(hcl.__file__).read_bytes()).hexdigest()[:16]


class ScanCache:
    """blob id -> the references found in it (without the path, which the caller adds)."""

    def __init__(self, git_dir: Path) -> None:
        self.path = git_dir / "gitops-push" / "cache" / "tf-refs.json"
        self._version = _scanner_version()
        self._entries: dict[str, list[Any]] = {}
        self._used: set[str] = set()
        self._dirty = False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("version") == self._version and \
                    isinstance(data.get("blobs"), dict):
                self._entries = data["blobs"]
        except (OSError, ValueError):
            pass

    def get(self, blob: str, path: str) -> hcl.References | None:
        entry = self._entries.get(blob)
        if entry is None:
            return None
        try:
            mods, files = entry
            refs = hcl.References(
                tuple(hcl.ModuleRef(name, source, path, line) for name, source, line in mods),
                tuple(hcl.FileRef(fn, target, anchor, path, line)
                      for fn, target, anchor, line in files))
        except (TypeError, ValueError):
            return None
        self._used.add(blob)
        return refs

    def put(self, blob: str, refs: hcl.References) -> None:
        self._entries[blob] = [[[m.name, m.source, m.line] for m in refs.modules],
                               [[f.function, f.path, f.anchor, f.line] for f in refs.files]]
        self._used.add(blob)
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        blobs = self._entries
        if len(blobs) > MAX_ENTRIES:
            blobs = {k: v for k, v in blobs.items() if k in self._used}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps({"version": self._version, "blobs": blobs},
                                               separators=(",", ":")), what="scan cache")
        except (OSError, GitopsPushError):
            pass  # a cache is an optimisation: a read-only .git only costs time
        self._dirty = False


__all__ = ["ScanCache"]
