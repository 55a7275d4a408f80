"""The two consoles: one for people on stderr (messages, progress), one for data on stdout
(tables). Built in one place and reused; names from the repository are hostile input,
shown literally (never rich markup) with control characters made visible.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from functools import cache
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from gitops_push.errors import GitopsPushError


@cache
def _console(stderr: bool, no_color: bool, width: int | None, columns: str | None) -> Console:
    """The one console per stream (and per setting: tests change the environment).

    No ``file`` is given, so rich writes to whatever ``sys.stdout`` / ``sys.stderr`` is
    when it prints (CliRunner and redirect_stdout swap them)."""
    from rich.console import Console

    return Console(stderr=stderr, markup=False, highlight=False, emoji=False,
                   no_color=no_color, soft_wrap=stderr, width=width)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """Control characters (newlines, ESC sequences) shown as escapes, never executed."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _color(environ: Mapping[str, str], stream: IO[str]) -> bool:
    if environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def err_console(environ: Mapping[str, str] | None = None) -> Console:
    env = os.environ if environ is None else environ
    return _console(True, not _color(env, sys.stderr), None, env.get("COLUMNS"))


# Wide enough for any table: without a terminal (CI logs, a pipe, a file) tables take their
# natural width instead of rich's 80 columns, so a run id or stack name people copy is
# never split over lines (issue 12).
UNWRAPPED_WIDTH = 100_000


def table_width(environ: Mapping[str, str], stream: IO[str]) -> int | None:
    """None (the terminal's width) on an interactive terminal, else unlimited."""
    if environ.get("CI") or not getattr(stream, "isatty", lambda: False)():
        return UNWRAPPED_WIDTH
    return None


def out_console(environ: Mapping[str, str] | None = None) -> Console:
    env = os.environ if environ is None else environ
    return _console(False, not _color(env, sys.stdout), table_width(env, sys.stdout),
                    env.get("COLUMNS"))


def message(text: str, *, style: str | None = None) -> None:
    err_console().print(visible(text), style=style)


def warn(text: str) -> None:
    err_console().print("warning: " + visible(text), style="yellow")


def error(exc: GitopsPushError | str) -> None:
    text = str(exc)
    err_console().print("error: " + "\n".join(visible(line) for line in text.split("\n")),
                        style="bold red")


def write_stdout(text: str) -> None:
    """Data that is already formatted (Markdown) goes to stdout as it is."""
    sys.stdout.write(text)
