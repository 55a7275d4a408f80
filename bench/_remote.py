"""A latency-injected, connection-counting git remote on this machine.

``GIT_SSH_COMMAND`` points at a small shell script standing in for ssh: it appends one
line per connection to a log (the git server command it was asked to run), sleeps the
configured latency, then runs ``git-upload-pack`` / ``git-receive-pack`` locally. The
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
printf '%s\\n' "$*" >> {log}
[ "$(cat {latency})" = 0 ] || sleep "$(cat {latency})"
exec /bin/sh -c "$*"
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

    def connections(self) -> list[str]:
        """One entry per connection since the last reset: the server command run."""
        return [line for line in self.log.read_text().splitlines() if line.strip()]

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
