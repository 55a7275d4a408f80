"""The one subprocess runner for every external tool (git, terraform, kubectl).

Argument lists only (never a shell), an explicit environment, a timeout that stops
the child gracefully (SIGINT first, so Terraform releases its state lock), optional
line streaming for long applies, and secret redaction of everything captured.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

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
DRAIN_AFTER_EXIT = 10.0  # seconds to keep reading pipes a grandchild still holds open


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
    """What a tool did: its exit code and output, already redacted."""

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


class _Sink:
    """What one pipe delivered: kept up to MAX_CAPTURE, then only its last lines; each
    complete line also goes to ``on_line`` as it arrives."""

    def __init__(self, on_line: Callable[[str], None] | None) -> None:
        self.on_line = on_line
        self.chunks: list[bytes] = []
        self.size = 0
        self.tail: deque[bytes] = deque(maxlen=TAIL_LINES)
        self.truncated = False
        self._partial = b""

    def feed(self, data: bytes) -> None:
        if not self.truncated:
            room = MAX_CAPTURE - self.size
            cut = len(data) if len(data) <= room else data.rfind(b"\n", 0, room) + 1
            head, data = data[:cut], data[cut:]  # whole lines up to the limit
            self.chunks.append(head)
            self.size += len(head)
            if self.on_line is not None:
                self._split(head)
            if not data:
                return
            self.truncated = True
        self._split(data)

    def close(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = b""

    def _split(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._line(line + b"\n")

    def _line(self, raw: bytes) -> None:
        if self.truncated:
            self.tail.append(raw)
        if self.on_line is not None:
            try:
                self.on_line(raw.decode("utf-8", "replace").rstrip("\r\n"))
            except Exception:  # a broken progress display must not stall the tool
                log.exception("output callback failed; streaming disabled")
                self.on_line = None

    def data(self) -> bytes:
        data = b"".join(self.chunks)
        if self.truncated:
            data += b"\n[... output truncated ...]\n" + b"".join(self.tail)
        return data

    def text(self) -> str:
        return self.data().decode("utf-8", "replace")


def _exit_fd(proc: subprocess.Popen[bytes]) -> int | None:
    """A descriptor that becomes readable when the child exits (Linux pidfd), so one
    ``select`` wakes for output and exit alike, without a thread per child or the
    growing sleeps of ``Popen.wait(timeout)`` (milliseconds on every short git call)."""
    try:
        return os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return None


def _communicate(proc: subprocess.Popen[bytes], sinks: tuple[_Sink, _Sink],
                 input: bytes | None, stop: Callable[[], str | None],
                 grace: float) -> str | None:
    """Feed ``input``, drain both pipes and wait for the child, in this thread.

    When ``stop()`` names a reason, the child's process group gets SIGINT, then SIGTERM
    after ``grace`` seconds, then SIGKILL (Terraform handles SIGINT by finishing safely
    and releasing its state lock), while its output is still read: what it says on the
    way out is kept, and a full pipe never keeps it from exiting. Returns that reason,
    or None."""
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    for stream, sink in ((proc.stdout, sinks[0]), (proc.stderr, sinks[1])):
        if not stream.closed:
            sel.register(stream, selectors.EVENT_READ, sink)
    pending = memoryview(input or b"")
    if proc.stdin is not None and not proc.stdin.closed:
        if pending:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE, None)
        else:
            proc.stdin.close()
    exit_fd = _exit_fd(proc)
    if exit_fd is not None:
        sel.register(exit_fd, selectors.EVENT_READ, "exit")
    stopped: str | None = None
    signals: list[tuple[float, signal.Signals]] = []
    drain_until = 0.0  # once it exited: a grandchild may still hold the pipes open
    try:
        while True:
            now = time.monotonic()
            if proc.returncode is None and stopped is None:
                stopped = stop()
                if stopped is not None:
                    signals = [(now, signal.SIGINT), (now + grace, signal.SIGTERM),
                               (now + grace + 5, signal.SIGKILL)]
            while signals and proc.returncode is None and signals[0][0] <= now:
                _signal_group(proc, signals.pop(0)[1])
            open_pipes = any(k.data != "exit" for k in sel.get_map().values())
            if proc.returncode is None and exit_fd is None:
                if not open_pipes:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=0.1)
                    continue
                proc.poll()
            if proc.returncode is not None:
                if not drain_until:
                    drain_until = now + DRAIN_AFTER_EXIT
                if not open_pipes or now > drain_until:
                    return stopped
            for key, _ in sel.select(0.1):
                if key.data == "exit":
                    sel.unregister(key.fileobj)
                    proc.wait()
                elif key.data is None:  # stdin
                    try:
                        pending = pending[os.write(key.fd, pending[:65536]):]
                    except BrokenPipeError:
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()  # type: ignore[union-attr]
                else:
                    chunk = os.read(key.fd, 65536)
                    if chunk:
                        key.data.feed(chunk)
                    else:
                        sel.unregister(key.fileobj)
                        key.data.close()
    finally:
        sel.close()
        if exit_fd is not None:
            os.close(exit_fd)


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


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
    sinks = (_Sink(line_cb), _Sink(line_cb))
    deadline = None if timeout is None else start + timeout

    def stop() -> str | None:
        if cancel is not None and cancel.is_set():
            return "interrupted"
        if deadline is not None and time.monotonic() > deadline:
            return f"timed out after {timeout:g}s"
        return None

    try:
        stopped = _communicate(proc, sinks, input, stop, grace)
    except BaseException:  # Ctrl-C: stop the child the same way, still reading it
        _communicate(proc, sinks, None, lambda: "interrupted", grace)
        raise
    finally:
        _close_pipes(proc)
    result = Result(
        command=argv,
        returncode=proc.returncode,
        stdout=redact(sinks[0].text(), secret_list),
        stderr=redact(sinks[1].text(), secret_list),
        duration=time.monotonic() - start,
        stdout_bytes=sinks[0].data() if keep_bytes else b"",
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
