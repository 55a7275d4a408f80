"""proc.run, the one subprocess runner: argument lists, an explicit environment, output
redacted and streamed, failures as ToolError naming the command and its output."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from gitops_push import proc
from gitops_push.errors import ToolError

PY = sys.executable


def test_a_command_runs_with_exactly_the_environment_given() -> None:
    res = proc.run([PY, "-c", "import os; print(sorted(k for k in os.environ if k == 'ONLY'))"],
                   env={"ONLY": "1"})
    assert res.returncode == 0 and res.stdout.strip() == "['ONLY']"


def test_secrets_are_redacted_in_what_is_returned_and_streamed() -> None:
    lines: list[str] = []
    res = proc.run([PY, "-c", "print('token=hunter22'); import sys; print('hunter22', "
                    "file=sys.stderr)"], env={}, secrets=["hunter22"], on_line=lines.append)
    assert "hunter22" not in res.stdout + res.stderr + "".join(lines)
    assert "token=(sensitive)" in res.stdout and "token=(sensitive)" in lines


def test_a_failure_is_a_tool_error_with_the_command_and_its_output() -> None:
    with pytest.raises(ToolError) as info:
        proc.run([PY, "-c", "import sys; print('broken thing', file=sys.stderr); sys.exit(3)"],
                 env={}, what="tool")
    assert info.value.returncode == 3
    text = str(info.value)  # printed the way pre-commit prints a failed command
    assert text.startswith("tool failed\ncommand: ") and "return code: 3" in text
    assert "output:\n    broken thing" in text
    res = proc.run([PY, "-c", "import sys; sys.exit(3)"], env={}, check=False)
    assert res.returncode == 3


def test_a_missing_binary_or_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="no-such-tool-here"):
        proc.run(["no-such-tool-here"], env={"PATH": str(tmp_path)})
    with pytest.raises(ToolError, match=r"working directory .* does not exist"):
        proc.run([PY, "-c", "pass"], env={}, cwd=tmp_path / "gone")


def test_a_timeout_and_a_cancel_stop_the_tool() -> None:
    with pytest.raises(ToolError, match=r"timed out|timeout"):
        proc.run([PY, "-c", "import time; time.sleep(30)"], env={}, timeout=0.5, grace=1)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(ToolError):
        proc.run([PY, "-c", "import time; time.sleep(30)"], env={}, cancel=cancel, grace=1)


def test_filtered_env_keeps_the_base_and_the_names_asked_for() -> None:
    env = proc.filtered_env({"PATH": "/bin", "HOME": "/h", "SECRET": "x", "WANTED": "y"},
                            ["WANTED"])
    assert env.get("WANTED") == "y" and "SECRET" not in env and env.get("PATH") == "/bin"


def test_input_and_output_larger_than_a_pipe_buffer_flow_both_ways() -> None:
    """The child reads stdin while writing stdout and stderr (cat-file --batch does):
    neither side may block on a full pipe."""
    data = bytes(range(256)) * 40_000  # 10 MB
    code = ("import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d); "
            "sys.stderr.write('x' * 1_000_000)")
    res = proc.run([PY, "-c", code], env={}, input=data, keep_bytes=True)
    assert res.stdout_bytes == data
    assert len(res.stderr) == 1_000_000


def test_lines_are_streamed_whole_across_reads_and_the_last_one_without_a_newline() -> None:
    code = ("import sys, time\n"
            "sys.stdout.write('one-'); sys.stdout.flush(); time.sleep(0.2)\n"
            "sys.stdout.write('line\\ntwo\\nthree'); sys.stdout.flush()\n")
    lines: list[str] = []
    proc.run([PY, "-c", code], env={}, on_line=lines.append)
    assert lines == ["one-line", "two", "three"]


def test_beyond_the_capture_limit_only_the_last_lines_are_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc, "MAX_CAPTURE", 1000)
    code = "for i in range(5000): print(f'line {i}')"
    res = proc.run([PY, "-c", code], env={})
    assert res.stdout.startswith("line 0\n")
    assert "[... output truncated ...]" in res.stdout
    assert res.stdout.rstrip().endswith("line 4999")
    assert len(res.stdout) < 3000


def test_a_grandchild_holding_the_pipes_open_does_not_hold_the_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """git may leave a detached helper behind; the run ends once the tool exits, after
    at most DRAIN_AFTER_EXIT seconds of reading what the helper still writes."""
    monkeypatch.setattr(proc, "DRAIN_AFTER_EXIT", 0.5)
    code = ("import subprocess, sys; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(20)']); "
            "print('parent done')")
    res = proc.run([PY, "-c", code], env={}, timeout=15)
    assert res.returncode == 0 and res.stdout == "parent done\n"
    assert res.duration < 10


def test_ctrl_c_stops_the_tool_gracefully_before_it_propagates(tmp_path: Path) -> None:
    """Ctrl-C reaches gitops-push, not the tool (its own process group): the tool gets
    SIGINT, the way Terraform expects to be stopped, and its exit is awaited."""
    import os
    import signal

    marker = tmp_path / "stopped"
    code = ("import signal, sys, time\n"
            "def bye(*_):\n"
            f"    open({str(marker)!r}, 'w').write('SIGINT')\n"
            "    sys.exit(3)\n"
            "signal.signal(signal.SIGINT, bye)\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n")
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        proc.run([PY, "-c", code], env={}, grace=5)
    assert marker.read_text() == "SIGINT"
