"""Which ssh git will run for a remote, asked once per run instead of once per connection."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from gitops_push import proc
from gitops_push.errors import ToolError

if TYPE_CHECKING:
    from gitops_push.git.repo import Repo


def net_env(repo: Repo) -> dict[str, str]:
    """``env`` for commands that reach a remote.

    Before every connection, git runs a custom ssh command (``GIT_SSH_COMMAND`` whose
    program is not ssh or plink) once more with ``-G`` to learn whether it is OpenSSH.
    Probed once here instead, the answer goes to git as ``GIT_SSH_VARIANT``: one probe
    per run, not one per connection (issue 14: round trips that do not grow)."""
    env = repo.env
    if "GIT_SSH_VARIANT" in env:
        return env
    found = repo._run("config", "--get-regexp",
                     r"^(ssh\.variant|core\.sshcommand|remote\.origin\.url)$",
                     check=False, env=env).stdout
    cfg = dict(line.partition(" ")[::2] for line in found.splitlines())
    host = _ssh_host(cfg.get("remote.origin.url", "").strip())
    if "ssh.variant" in cfg or host is None:
        return env
    command = env.get("GIT_SSH_COMMAND", "").strip() or cfg.get("core.sshcommand", "")
    program = "" if command else env.get("GIT_SSH", "").strip()  # a program, no shell
    if not (command or program):
        return env  # plain ssh: git does not probe
    name = Path(program or command.split()[0]).name.lower().removesuffix(".exe")
    if name in ("ssh", "plink", "putty", "tortoiseplink"):
        return env  # git knows these without probing
    # git runs the command the same way: through sh when it has shell syntax
    if program or not re.search(r"[|&;<>()$`\\\"' \t\n*?\[#~=%]", command):
        probe = [program or command, "-G", host]
    else:
        probe = ["sh", "-c", f'{command} "$@"', command, "-G", host]
    try:
        res = proc.run(probe, env=env, cwd=repo.root, check=False, timeout=30, what="ssh")
    except ToolError:
        return env
    return {**env, "GIT_SSH_VARIANT": "ssh" if res.returncode == 0 else "simple"}


def _ssh_host(url: str) -> str | None:
    """The host of an ssh remote URL (``ssh://[user@]host[:port]/path`` or scp-like
    ``[user@]host:path``); None for anything else (a local path, https)."""
    m = re.match(r"ssh://(?:[^@/]*@)?(\[[^\]]*\]|[^:/]+)", url) or re.match(
        r"(?:[^@/:]*@)?([^:/]{2,}):(?!//)", url)
    return m.group(1).strip("[]") if m else None
