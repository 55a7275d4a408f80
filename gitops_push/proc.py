"""The one subprocess runner for every external tool (git, terraform, kubectl).

Argument lists only (never a shell), an explicit environment, a timeout that stops
the child gracefully (SIGINT first, so Terraform releases its state lock), optional
line streaming for long applies, and secret redaction of everything captured.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from gitops_push.errors import ToolError

log = logging.getLogger(__name__)

# Variables every tool needs to run at all; anything else must be named by the stack.
BASE_ENV_NAMES = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
TAIL_LINES = 40
MAX_CAPTURE = 64 * 1024 * 1024  # bytes kept per stream; beyond that only the tail survives
REDACTED = "(sensitive)"


def format_command(command: Sequence[str]) -> str:
    return shlex.join(str(c) for c in command)


def filtered_env(environ: Mapping[str, str], names: Iterable[str] = ()) -> dict[str, str]:
    """The environment a tool gets: the base names plus what the stack names, nothing else."""
    wanted = (*BASE_ENV_NAMES, *names)
    return {n: environ[n] for n in wanted if n in environ}


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


@dataclass(frozen=True)
class Result:
    command: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float
    stdout_bytes: bytes = b""

    @property
    def tail(self) -> str:
        lines = self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr
        return "\n".join(lines.rstrip().splitlines()[-TAIL_LINES:])


class _Reader(threading.Thread):
    """Drains one pipe so the child never blocks on a full pipe buffer."""

    def __init__(self, stream: IO[bytes], on_line: Callable[[str], None] | None) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.on_line = on_line
        self.chunks: list[bytes] = []
        self.size = 0
        self.tail: deque[bytes] = deque(maxlen=TAIL_LINES)
        self.truncated = False

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            if self.size < MAX_CAPTURE:
                self.chunks.append(raw)
                self.size += len(raw)
            else:
                self.truncated = True
                self.tail.append(raw)
            if self.on_line is not None:
                try:
                    self.on_line(raw.decode("utf-8", "replace").rstrip("\r\n"))
                except Exception:  # a broken progress display must not stall the tool
                    log.exception("output callback failed; streaming disabled")
                    self.on_line = None
        self.stream.close()

    def data(self) -> bytes:
        data = b"".join(self.chunks)
        if self.truncated:
            data += b"\n[... output truncated ...]\n" + b"".join(self.tail)
        return data

    def text(self) -> str:
        return self.data().decode("utf-8", "replace")


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGINT, then SIGTERM, then SIGKILL: Terraform handles SIGINT by finishing safely."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        _signal_group(proc, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run(
    command: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    input: bytes | None = None,
    check: bool = True,
    on_line: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
    secrets: Iterable[str] = (),
    grace: float = 20.0,
    what: str | None = None,
    keep_bytes: bool = False,
) -> Result:
    """Run a tool; raise ToolError on a missing binary, timeout, cancel, or (``check``) failure.

    ``on_line`` receives each output line (stdout and stderr) as it arrives, already
    redacted. ``secrets`` are replaced by ``(sensitive)`` in everything returned.
    """
    argv = tuple(os.fspath(c) for c in command)
    name = what or Path(argv[0]).name
    secret_list = [s for s in secrets if s]
    line_cb = None
    if on_line is not None:
        cb = on_line

        def line_cb(line: str) -> None:
            cb(redact(line, secret_list))

    if cwd is not None and not Path(cwd).is_dir():
        # Popen raises FileNotFoundError for a missing cwd too: say which it is
        raise ToolError(f"{name}: working directory {os.fspath(cwd)!r} does not exist",
                        command=argv)
    log.debug("run: %s (cwd=%s)", redact(format_command(argv), secret_list), cwd)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # our own process group: signals reach the whole tool
        )
    except FileNotFoundError as exc:
        raise ToolError(
            f"{name}: command not found ({argv[0]!r} is not on PATH or does not exist)",
            command=argv,
        ) from exc
    except PermissionError as exc:
        raise ToolError(f"{name}: {argv[0]!r} is not executable", command=argv) from exc
    assert proc.stdout is not None and proc.stderr is not None
    readers = [_Reader(proc.stdout, line_cb), _Reader(proc.stderr, line_cb)]
    for r in readers:
        r.start()
    if input is not None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(input)
            proc.stdin.close()
        except BrokenPipeError:
            pass
    deadline = None if timeout is None else start + timeout
    stopped: str | None = None
    # a waiter thread wakes us the moment the tool exits (Popen.wait(timeout) polls with
    # growing sleeps, which adds milliseconds to every short git call)
    exited = threading.Event()

    def waiter() -> None:
        proc.wait()
        exited.set()

    threading.Thread(target=waiter, daemon=True).start()
    try:
        while True:
            if exited.wait(0.1):
                break
            if cancel is not None and cancel.is_set():
                stopped = "interrupted"
                _stop(proc, grace)
                break
            if deadline is not None and time.monotonic() > deadline:
                stopped = f"timed out after {timeout:g}s"
                _stop(proc, grace)
                break
    except BaseException:
        _stop(proc, grace)
        raise
    for r in readers:
        r.join(timeout=10)
    result = Result(
        command=argv,
        returncode=proc.returncode,
        stdout=redact(readers[0].text(), secret_list),
        stderr=redact(readers[1].text(), secret_list),
        duration=time.monotonic() - start,
        stdout_bytes=readers[0].data() if keep_bytes else b"",
    )
    log.debug("exit %s after %.4fs: %s", result.returncode, result.duration, name)
    shown = tuple(redact(a, secret_list) for a in argv)
    if stopped is not None:
        raise ToolError(
            f"{name} {stopped} and was stopped",
            command=shown,
            returncode=result.returncode,
            output_tail=result.tail,
        )
    if result.returncode < 0:
        signame = signal.Signals(-result.returncode).name
        raise ToolError(
            f"{name} was killed by signal {signame}",
            command=shown,
            returncode=result.returncode,
            output_tail=result.tail,
        )
    if check and result.returncode != 0:
        raise ToolError(
            f"{name} failed", command=shown, returncode=result.returncode, output_tail=result.tail
        )
    return result
