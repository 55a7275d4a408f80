"""Progress of a run: timestamped lines for CI logs, or one live line per stack on a
terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from gitops_push.output.console import err_console, visible
from gitops_push.run.model import Result

if TYPE_CHECKING:
    from gitops_push.run.model import StackOutcome

class PlainReporter:
    """Timestamped lines for CI logs: every stack step and tool line, prefixed."""

    def __init__(self, stream: IO[str] | None = None, *, stream_lines: bool = True) -> None:
        import threading

        self.stream = stream or sys.stderr
        self.stream_lines = stream_lines
        self._lock = threading.Lock()

    def _write(self, name: str, text: str) -> None:
        from datetime import datetime, timezone

        stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
        with self._lock:
            self.stream.write(f"{stamp} [{visible(name)}] {visible(text)}\n")
            self.stream.flush()

    def stack_started(self, name: str) -> None:
        self._write(name, "started")

    def stack_step(self, name: str, step: str) -> None:
        self._write(name, step)

    def stack_line(self, name: str, line: str) -> None:
        if self.stream_lines and line.strip():
            self._write(name, line)

    def stack_finished(self, outcome: StackOutcome) -> None:
        self._write(outcome.name, f"{outcome.result}: {outcome.message}"
                    + (f" ({outcome.duration:.1f}s)" if outcome.duration else ""))

    def warn(self, text: str) -> None:
        with self._lock:
            self.stream.write("warning: " + visible(text) + "\n")

    def close(self) -> None:
        pass


class LiveReporter(PlainReporter):
    """One live line per running stack (rich) on a terminal; finished stacks scroll above."""

    def __init__(self) -> None:
        super().__init__(stream_lines=False)
        from rich.live import Live

        self.console = err_console()
        self.state: dict[str, str] = {}
        self.live = Live(self._render(), console=self.console, refresh_per_second=8,
                         transient=True)
        self.live.start()

    def _render(self) -> Any:
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        for name, step in self.state.items():
            grid.add_row(Spinner("dots"), Text(visible(name), style="bold"), Text(visible(step)))
        return grid

    def _update(self) -> None:
        self.live.update(self._render())

    def stack_started(self, name: str) -> None:
        with self._lock:
            self.state[name] = "starting"
            self._update()

    def stack_step(self, name: str, step: str) -> None:
        with self._lock:
            self.state[name] = step
            self._update()

    def stack_line(self, name: str, line: str) -> None:
        if line.strip():
            with self._lock:
                step = self.state.get(name, "").split(" · ")[0]
                self.state[name] = f"{step} · {line.strip()[:80]}"
                self._update()

    def stack_finished(self, outcome: StackOutcome) -> None:
        from rich.text import Text

        with self._lock:
            self.state.pop(outcome.name, None)
            style = "green" if outcome.ok else (
                "yellow" if outcome.result in (Result.SKIPPED, Result.DRIFTED) else "red")
            self.console.print(Text(f"{_mark(outcome)} {visible(outcome.name)}: "
                                    f"{visible(outcome.result)} — {visible(outcome.message)}",
                                    style=style))
            self._update()

    def close(self) -> None:
        self.live.stop()


def _mark(outcome: StackOutcome) -> str:
    if outcome.ok:
        return "✓"
    return "•" if outcome.result in (Result.SKIPPED, Result.DRIFTED) else "✗"


def reporter(environ: Mapping[str, str] | None = None, *, quiet: bool = False) -> PlainReporter:
    env = os.environ if environ is None else environ
    if sys.stderr.isatty() and not env.get("CI") and not quiet:
        return LiveReporter()
    return PlainReporter()
