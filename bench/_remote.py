"""A latency-injected, connection-counting git remote on this machine.

``GIT_SSH_COMMAND`` points at a small shell script standing in for ssh: it sleeps the
configured latency, runs ``git-upload-pack`` / ``git-receive-pack`` locally, then
appends one line per connection to a log (start and end time, the server command). The
origin is addressed as ``ssh://fake/<absolute path>``, so every fetch, push and
ls-remote goes through the script. Used by bench/remote_latency.py and by the tests
(tests/test_round_trips.py), which count connections with 0 ms latency.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

_SCRIPT = """#!/bin/sh
# fake ssh (gitops-push bench/_remote.py): count, sleep, run the git server locally
while [ $# -gt 1 ]; do
  case "$1" in
    -G) exit 0 ;;  # git asking whether this is OpenSSH: not a connection
    -o|-p|-i|-l|-F) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
shift  # the host name
start=$(date +%s.%N)
[ "$(cat {latency})" = 0 ] || sleep "$(cat {latency})"
/bin/sh -c "$*"
rc=$?
printf '%s %s %s\\n' "$start" "$(date +%s.%N)" "$*" >> {log}
exit $rc
"""


@dataclass(frozen=True)
class FakeRemote:
    """The wrapper script, its connection log and its latency setting."""

    script: Path
    log: Path
    latency_file: Path

    @classmethod
    def create(cls, directory: Path, latency: float = 0.0) -> FakeRemote:
        directory.mkdir(parents=True, exist_ok=True)
        log, latency_file = directory / "connections.log", directory / "latency"
        script = directory / "fake-ssh"
        script.write_text(_SCRIPT.format(log=shlex.quote(str(log)),
                                         latency=shlex.quote(str(latency_file))))
        script.chmod(0o755)
        remote = cls(script, log, latency_file)
        remote.set_latency(latency)
        remote.reset()
        return remote

    def set_latency(self, seconds: float) -> None:
        self.latency_file.write_text(f"{seconds:g}" if seconds > 0 else "0")

    def reset(self) -> None:
        self.log.write_text("")

    def _entries(self) -> list[tuple[float, float, str]]:
        out = []
        for line in self.log.read_text().splitlines():
            start, end, command = [*line.split(" ", 2), "", "", ""][:3]
            if command:
                out.append((float(start), float(end), command))
        return out

    def connections(self) -> list[str]:
        """One entry per connection since the last reset: the server command run."""
        return [command for _, _, command in self._entries()]

    def busy(self) -> float:
        """Seconds during which at least one connection was open (latency included)."""
        total, cur_start, cur_end = 0.0, 0.0, None
        for start, end, _ in sorted(self._entries()):
            if cur_end is None or start > cur_end:
                total += 0.0 if cur_end is None else cur_end - cur_start
                cur_start, cur_end = start, end
            else:
                cur_end = max(cur_end, end)
        return total + (0.0 if cur_end is None else cur_end - cur_start)

    def count(self) -> int:
        return len(self.connections())

    def env(self) -> dict[str, str]:
        """What a git client needs in its environment to go through the wrapper."""
        return {"GIT_SSH_COMMAND": str(self.script), "GIT_SSH_VARIANT": "ssh"}

    @staticmethod
    def url(origin: Path) -> str:
        return "ssh://fake" + str(origin.resolve())


def use_fake_remote(repo: Path, origin: Path, env: dict[str, str], remote: FakeRemote) -> None:
    """Point ``repo``'s origin at ``origin`` through the wrapper (``env`` is updated)."""
    import subprocess

    env.update(remote.env())
    subprocess.run(["git", "remote", "set-url", "origin", FakeRemote.url(origin)], cwd=repo,
                   env={**os.environ, **env}, check=True, capture_output=True)
