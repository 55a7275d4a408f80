"""Atomic file writes: a full disk or a read-only directory never leaves a partial file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from gitops_push.errors import GitopsPushError


def atomic_write(path: Path, data: bytes | str, *, what: str = "file") -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``."""
    payload = data.encode() if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise GitopsPushError(f"cannot write {what} {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise GitopsPushError(f"cannot write {what} {path}: {exc.strerror}") from exc
