"""What ``fmt -check -diff`` and ``validate -json`` print, as located lint findings.

Both are parsed here rather than in the engine so every finding comes out the same way:
a repository path and a line a merge-request comment can point at, with messages
redacted like everything else Terraform prints.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from gitops_push.engines.base import Diagnostic, EngineContext
from gitops_push.engines.terraform.plan import clean, obj, obj_list

_HUNK_RE = re.compile(r"@@ -(\d+)")


def repo_path(ctx: EngineContext, filename: str) -> str:
    """``filename`` (relative to the stack) as a repository path, for file:line messages."""
    full = Path(filename) if Path(filename).is_absolute() else ctx.stack_dir / filename
    try:
        return full.resolve().relative_to(ctx.repo_root.resolve()).as_posix()
    except ValueError:
        return filename


def unformatted(stdout: str) -> list[tuple[str, int | None]]:
    """Files ``fmt -check`` lists; with ``-diff``, each with the first line it changes."""
    lines = stdout.splitlines()
    if not any(line.startswith("--- old/") for line in lines):  # list-only output
        return [(line, None) for line in lines if line.strip()]
    return [
        (name, _first_changed_line(lines, i + 2))
        for i, name in enumerate(lines[:-1])
        if lines[i + 1] == f"--- old/{name}"
    ]


def _first_changed_line(lines: list[str], start: int) -> int | None:
    for i in range(start, len(lines)):
        m = _HUNK_RE.match(lines[i])
        if m is None:
            continue
        line = int(m[1])
        for body in lines[i + 1:]:
            if not body.startswith(" "):
                return line
            line += 1
        return line
    return None


def validate_diagnostics(stdout: str, ctx: EngineContext, secrets: Sequence[str]
                         ) -> list[Diagnostic] | None:
    """``validate -json`` diagnostics as ``file:line: summary: detail``; None if not JSON."""
    try:
        doc = json.loads(stdout)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    out: list[Diagnostic] = []
    for d in obj_list(doc.get("diagnostics")):
        rng = obj(d.get("range"))
        filename = rng.get("filename")
        start = obj(rng.get("start"))
        message = " ".join(f"{d.get('summary', '')}: {d.get('detail', '')}".split()).rstrip(":")
        out.append(Diagnostic(
            severity="warning" if d.get("severity") == "warning" else "error",
            message=clean(message, secrets),
            file=repo_path(ctx, filename) if isinstance(filename, str) else None,
            line=start.get("line") if isinstance(start.get("line"), int) else None,
        ))
    return out
