"""Helpers shared by the benchmarks: load checks and finding the CLI."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path


def load1() -> float:
    """The 1-minute load average (0.0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def wait_quiet(limit: float) -> None:
    """Wait up to ``limit`` seconds for the 1-minute load to drop below half the CPUs."""
    cpus = os.cpu_count() or 1
    deadline = time.monotonic() + limit
    if limit > 0 and load1() > cpus / 2:
        print(f"waiting up to {limit:.0f} s for the machine to be quiet (load {load1():.1f})")
    while load1() > cpus / 2 and time.monotonic() < deadline:
        time.sleep(5)


def load_note(start: float, end: float) -> str:
    cpus = os.cpu_count() or 1
    note = f"load average (1 min): {start:.1f} at start, {end:.1f} at end ({cpus} CPUs)"
    if max(start, end) > cpus:
        note += ("\nWARNING: the machine was busy during the run (load > CPUs): timings are "
                 "pessimistic and noisy; re-run when it is quiet (--wait-quiet 600)")
    return note


def find_gitops_push(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "gitops-push"
    if beside.is_file():
        return str(beside)
    found = shutil.which("gitops-push")
    if found is None:
        raise SystemExit("gitops-push not found: run with the venv python or pass --gitops-push")
    return found


def isolated_env(workdir: Path, *, drop_extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Reproducible runs: a private HOME and caches, empty git config, a fixed identity,
    no CI or gitops-push variables from the caller."""
    home, cache, tmp = workdir / "home", workdir / "cache", workdir / "tmp"
    for d in (home, cache, tmp):
        d.mkdir(parents=True, exist_ok=True)
    gitconfig = workdir / "gitconfig"
    gitconfig.write_text("")
    drop = ("GITHUB_", "GITLAB_", "CI_", "GITOPS_PUSH_", "GIT_", *drop_extra)
    # PYTHONDONTWRITEBYTECODE would make every run compile gitops-push from source (about
    # 100 ms), which an installed package never does.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(drop) and k not in ("CI", "PYTHONDONTWRITEBYTECODE")}
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(cache),
        TMPDIR=str(tmp),
        GIT_CONFIG_GLOBAL=str(gitconfig),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Bench",
        GIT_AUTHOR_EMAIL="bench@example.com",
        GIT_COMMITTER_NAME="Bench",
        GIT_COMMITTER_EMAIL="bench@example.com",
    )
    return env
