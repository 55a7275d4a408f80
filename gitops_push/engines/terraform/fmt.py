"""``terraform fmt -check`` for lint: run once over every stack of a run that uses one
binary (each terraform start costs 40-50 ms of CPU), else in the stack alone."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from gitops_push import proc
from gitops_push.config import Stack
from gitops_push.engines.terraform.cli import Tf
from gitops_push.engines.terraform.lint import unformatted


@dataclass(frozen=True)
class Fmt:
    """What ``fmt -check`` found: unformatted files (absolute) with the first changed line,
    or why fmt itself failed (a syntax error, which validate then reports located)."""

    files: tuple[tuple[Path, int | None], ...] = ()
    error: str | None = None


class FmtRuns:
    """The fmt findings of one run (one per engine instance); thread-safe."""

    def __init__(self) -> None:
        self._paths: dict[str, set[str]] = {}  # binary -> stack paths check() was given
        self._runs: dict[tuple[str, str], str | None] = {}
        self._lock = threading.Lock()

    def add(self, binary: str, path: str) -> None:
        with self._lock:
            self._paths.setdefault(binary, set()).add(path)

    def findings(self, tf: Tf, stack: Stack) -> Fmt:
        """Unformatted files of the stack: from the run's one ``fmt`` over every stack
        when there is one, else from ``fmt`` in the stack's directory."""
        batch = self._batch(tf, stack)
        if batch is not None:
            root = tf.ctx.stack_dir.resolve()
            files = {path: line for name, line in unformatted(batch)
                     if (path := (tf.ctx.repo_root / name).resolve()) == root
                     or root in path.parents}
            return Fmt(tuple(files.items()))
        result = tf.run("fmt", "-check", "-recursive", "-diff", "-no-color",
                        stream=False, check=False)
        if result.returncode not in (0, 3):  # the ``diff`` program -diff needs is missing?
            result = tf.run("fmt", "-check", "-recursive", "-no-color", stream=False,
                            check=False)
        if result.returncode not in (0, 3):
            return Fmt(error=" ".join(result.stderr.split())[:500]
                        or f"exit code {result.returncode}")
        return Fmt(tuple((tf.ctx.stack_dir / name, line)
                          for name, line in unformatted(result.stdout)))

    def _batch(self, tf: Tf, stack: Stack) -> str | None:
        """Output of ``fmt -check -diff`` run once for all the run's stacks of this binary (those
        ``check`` was given): each terraform start costs 40-50 ms of CPU. None when the
        stack is not among them (a base worktree) or the joint run failed (a syntax error
        somewhere): the caller then runs fmt in the stack alone, as before."""
        ctx = tf.ctx
        root = ctx.repo_root
        with self._lock:
            paths = sorted(p for p in self._paths.get(tf.binary, ())
                           if (root / p).is_dir())
            if len(paths) < 2 or stack.path not in paths or \
                    ctx.stack_dir.resolve() != (root / stack.path).resolve():
                return None
            key = (tf.binary, os.fspath(root))
            if key not in self._runs:
                # outermost directories only: -recursive covers nested stacks, and a
                # directory given twice would list its files twice
                outer = [p for p in paths if not any(
                    q == "." or p.startswith(q + "/") for q in paths if q != p)]
                result = proc.run(
                    [tf.binary, "fmt", "-check", "-recursive", "-diff", "-no-color",
                     *(f"./{p}" for p in outer)],  # ./ : a path never reads as an option
                    env=tf.env, cwd=root, timeout=tf.timeout, check=False, cancel=ctx.cancel,
                    secrets=tf.secrets, what=f"{tf.label} fmt")
                self._runs[key] = result.stdout if result.returncode in (0, 3) else None
            return self._runs[key]
