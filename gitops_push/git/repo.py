"""Every git question gitops-push asks, answered in one place.

One ``rev-parse`` finds the repository (keeping git's own reason when it is not
one); all plumbing runs through ``proc.run`` with ``-z`` output so file names with
spaces, quotes, newlines or leading dashes are handled exactly. User-supplied refs
are validated and passed after ``--end-of-options`` so they can never act as options.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from gitops_push import proc
from gitops_push.errors import GitError, ToolError
from gitops_push.git.refname import SHA_RE, check_ref_syntax
from gitops_push.git.tree import FileChange, Tree, parse_ls_tree, parse_name_status

NETWORK_TIMEOUT = 120.0  # fetch/push/ls-remote against origin


def _locate(start: Path, env: Mapping[str, str]) -> tuple[Path, Path]:
    """Work tree root and git dir of the repository containing ``start``.

    One ``rev-parse`` (about 3 ms) instead of GitPython, whose import alone costs 70-80 ms
    on every command (docs/design-decisions.md). git's own message is kept: it names the
    real cause (not a repository, ``safe.directory`` ownership, a corrupt ``.git``).
    """
    res = proc.run(["git", "rev-parse", "--is-bare-repository", "--absolute-git-dir",
                    "--show-toplevel"], env=env, cwd=start, check=False, timeout=60, what="git")
    lines = res.stdout.splitlines()
    if lines[:1] == ["true"]:
        raise GitError(f"{start} is a bare repository; run in a working tree")
    if res.returncode != 0 or len(lines) < 3:
        detail = " ".join(res.stderr.split()).removeprefix("fatal: ")[:300]
        if "not a git repository" in detail:
            raise GitError(f"not a git repository: {start} (run inside a clone)")
        raise GitError(f"cannot open the git repository at {start}: "
                       f"{detail or f'git exited {res.returncode}'}")
    return Path(lines[2]).resolve(), Path(lines[1]).resolve()


class Repo:
    """A git repository on disk. ``environ`` is the process environment (never mutated)."""

    def __init__(self, path: Path | str, environ: Mapping[str, str] | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        start = Path(path)
        if not start.is_dir():
            raise GitError(f"no such directory: {path}")
        self.root, self.git_dir = _locate(start, self.env)
        self._trees: dict[str, Tree] = {}
        self._remote_heads: dict[str, str | None] = {}
        self.ref_indexes: dict[str, Any] = {}  # tree sha -> refs.RefIndex (see RefIndex.of)
        # answers remembered for the run (issue 14: each git call is ~4 ms); see _remember
        self._memo = threading.Lock()
        self._fetches = 0  # bumped as every fetch starts and ends
        self._moves = 0  # bumped as every command that can move HEAD starts and ends
        self._commits: dict[str, tuple[bool, int]] = {}
        self._ancestry: dict[tuple[str, str], tuple[bool, int]] = {}
        self._head_state: dict[str, tuple[str | None, int]] = {}  # HEAD, branch
        self._idents: dict[str, str | None] = {}

    # -- running git ------------------------------------------------------------------
    @cached_property
    def env(self) -> dict[str, str]:
        env = dict(self.environ)
        env["GIT_TERMINAL_PROMPT"] = "0"  # never hang waiting for a password in CI
        env.pop("GIT_DIR", None)
        env.pop("GIT_WORK_TREE", None)
        return env

    def _run(
        self,
        *args: str,
        check: bool = True,
        input: bytes | None = None,
        timeout: float | None = 600,
        env: Mapping[str, str] | None = None,
    ) -> proc.Result:
        if env is None and args and args[0] in _NETWORK_COMMANDS:
            env = self.net_env
        command = next((a for a in args if not a.startswith("-")), "")
        changes = command == "fetch" or command in _MOVES_HEAD or (
            command == "update-ref" and "HEAD" in args)
        if changes:
            self._changing(command)
        try:
            return proc.run(
                ["git", "-c", "core.quotepath=off", *args],
                env=env or self.env,
                cwd=self.root,
                check=check,
                input=input,
                timeout=timeout,
                what="git",
            )
        finally:
            if changes:
                self._changing(command)

    def _changing(self, command: str) -> None:
        """A fetch or a command moving HEAD starts or ends: what it can change is asked
        again (a fetch can bring a missing commit or deepen a shallow history)."""
        with self._memo:
            if command in ("fetch", "pull"):
                self._fetches += 1
            if command != "fetch":
                self._moves += 1

    def _remember(self, table: dict[Any, tuple[bool, int]], key: Any,
                  ask: Callable[[], bool]) -> bool:
        """A yes/no about fixed commits, asked once per run. A yes stays true: a commit
        does not disappear and its history only grows. A no holds until the next fetch
        (one that ran while git was asked does not count as before it)."""
        with self._memo:
            known = table.get(key)
            if known is not None and (known[0] or known[1] == self._fetches):
                return known[0]
            since = self._fetches
        answer = ask()
        with self._memo:
            table[key] = (answer, since)
        return answer

    def _out(self, *args: str) -> str:
        return self._run(*args).stdout

    @cached_property
    def net_env(self) -> dict[str, str]:
        """``env`` for commands that reach a remote (see ``ssh.net_env``)."""
        from gitops_push.git.ssh import net_env

        return net_env(self)

    @cached_property
    def commit_env(self) -> dict[str, str]:
        """``env`` for commits: a ``gitops-push`` identity when git has none (CI images)."""
        env = dict(self.env)
        for var in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"):
            if self.ident(var) is None:
                env.setdefault("GIT_AUTHOR_NAME", "gitops-push")
                env.setdefault("GIT_AUTHOR_EMAIL", "gitops-push@localhost")
                env.setdefault("GIT_COMMITTER_NAME", "gitops-push")
                env.setdefault("GIT_COMMITTER_EMAIL", "gitops-push@localhost")
                break
        return env

    @property
    def identity_known(self) -> bool:
        """Whether ``commit_env`` was already worked out in this run."""
        return "commit_env" in self.__dict__

    def ident(self, var: str) -> str | None:
        """``git var GIT_AUTHOR_IDENT`` or ``GIT_COMMITTER_IDENT`` (None: git has none),
        asked once per run; its timestamp is the first asking's."""
        if var not in self._idents:
            res = self._run("var", var, check=False)
            self._idents[var] = res.stdout.strip() if res.returncode == 0 else None
        return self._idents[var]

    # -- refs and commits -------------------------------------------------------------
    def resolve(self, ref: str, *, what: str = "ref") -> str:
        """The commit SHA a user-supplied ref names, or a clear GitError."""
        check_ref_syntax(ref, what)
        if ref == "HEAD":
            head = self._head_commit()
            if head is None:
                raise GitError(f"{what} {ref!r}: the repository has no commits yet")
            return head
        res = self._run(
            "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", check=False
        )
        if res.returncode != 0 or not res.stdout.strip():
            if not self.has_commits():
                raise GitError(f"{what} {ref!r}: the repository has no commits yet")
            raise GitError(f"{what} {ref!r} does not name a commit in this repository")
        if self.is_ambiguous(ref):
            raise GitError(
                f"{what} {ref!r} is ambiguous (a branch and a tag share the name?); "
                "use a full ref such as refs/heads/NAME or a SHA"
            )
        return res.stdout.strip()

    def is_ambiguous(self, ref: str) -> bool:
        """True when a short name matches more than one of branch, tag and remote ref."""
        name = re.split(r"[~^]", ref, maxsplit=1)[0]
        if not name or name == "HEAD" or name.startswith("refs/") or SHA_RE.match(name):
            return False
        wanted = {f"refs/heads/{name}", f"refs/tags/{name}", f"refs/remotes/{name}",
                  f"refs/remotes/{name}/HEAD"}
        found = self._out("for-each-ref", "--format=%(refname)", *sorted(wanted)).split()
        return len({r for r in found if r in wanted}) > 1

    def has_commits(self) -> bool:
        return self._head_commit() is not None

    def head(self) -> str:
        head = self._head_commit()
        if head is None:
            raise GitError("the repository has no commits yet")
        return head

    def _head_commit(self) -> str | None:
        """HEAD's commit (None before the first commit), asked once as below."""
        def ask() -> str | None:
            res = self._run("rev-parse", "--verify", "--quiet", "HEAD", check=False)
            return res.stdout.strip() or None if res.returncode == 0 else None

        return self._until_head_moves("head", ask)

    def _until_head_moves(self, key: str, ask: Callable[[], str | None]) -> str | None:
        """Asked once, then again after a git command of this process that can move HEAD
        (a rollback commits, a refused push resets)."""
        with self._memo:
            known, moves = self._head_state.get(key), self._moves
        if known is not None and known[1] == moves:
            return known[0]
        answer = ask()
        with self._memo:
            self._head_state[key] = (answer, moves)
        return answer

    def remote_head(self, remote: str = "origin") -> str | None:
        """The branch ``<remote>/HEAD`` points at (the remote's default branch), if known."""
        if remote not in self._remote_heads:
            res = self._run("symbolic-ref", "--quiet", f"refs/remotes/{remote}/HEAD",
                           check=False)
            prefix = f"refs/remotes/{remote}/"
            target = res.stdout.strip()
            self._remote_heads[remote] = (target[len(prefix):] if res.returncode == 0
                                          and target.startswith(prefix) else None)
        return self._remote_heads[remote]

    def has_commit(self, sha: str) -> bool:
        def ask() -> bool:
            return self._run("cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode == 0

        return self._remember(self._commits, sha, ask) if SHA_RE.match(sha) else ask()

    def parents(self, sha: str) -> list[str]:
        return self._out("rev-list", "--parents", "-n", "1", sha, "--").split()[1:]

    def merge_base(self, a: str, b: str) -> str | None:
        res = self._run("merge-base", a, b, check=False)
        return res.stdout.strip() or None if res.returncode == 0 else None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        def ask() -> bool:
            return self._run("merge-base", "--is-ancestor", ancestor, descendant,
                             check=False).returncode == 0

        if SHA_RE.match(ancestor) and SHA_RE.match(descendant):
            return self._remember(self._ancestry, (ancestor, descendant), ask)
        return ask()

    def is_shallow(self) -> bool:
        return self._out("rev-parse", "--is-shallow-repository").strip() == "true"

    def commit_info(self, sha: str) -> dict[str, str]:
        fmt = "%H%x00%an%x00%ae%x00%cn%x00%ce%x00%cI%x00%s"
        parts = self._out("show", "-s", f"--format={fmt}", sha, "--").split("\x00")
        keys = ("sha", "author_name", "author_email", "committer_name", "committer_email",
                "committed_at", "subject")
        return dict(zip(keys, (p.strip() for p in parts), strict=False))

    def current_branch(self) -> str | None:
        """The checked-out branch (None: detached), asked once as HEAD is."""
        return self._until_head_moves("branch", lambda: self._run(
            "symbolic-ref", "--quiet", "--short", "HEAD", check=False).stdout.strip() or None)

    def dirty_paths(self) -> list[str]:
        """Tracked changes and untracked, non-ignored files (``git status``)."""
        res = self._out("status", "--porcelain=v1", "-z", "--untracked-files=all")
        out: list[str] = []
        items = res.split("\x00")
        i = 0
        while i < len(items):
            item = items[i]
            if not item:
                i += 1
                continue
            out.append(item[3:])
            if item[0] in "RC":
                i += 1  # the rename source follows
            i += 1
        return out

    def user(self) -> str:
        """Who runs this locally: git's committer identity (config or GIT_COMMITTER_*)."""
        ident = self.ident("GIT_COMMITTER_IDENT") or ""
        return re.sub(r"\s+\d+\s+[+-]\d{4}$", "", ident)  # drop the timestamp

    # -- remotes --------------------------------------------------------------------
    def has_remote(self, name: str = "origin") -> bool:
        return name in self._remotes

    @cached_property
    def _remotes(self) -> dict[str, str]:
        """Remote -> URL as ``git remote get-url`` gives it (``insteadOf`` applied; a
        remote without one is its own name): one ``git remote -v`` for both questions."""
        out: dict[str, str] = {}
        for line in self._out("remote", "-v").splitlines():
            name, _, rest = line.partition("\t")
            url, fetch, _ = rest.rpartition(" (fetch)")  # then a partial clone's [filter]
            if name and (fetch or not rest.strip()):
                out.setdefault(name, url if fetch else name)
        return out

    def remote_url(self, name: str = "origin") -> str | None:
        return self._remotes.get(name) or None

    def fetch(self, *args: str, remote: str = "origin", timeout: float = 300) -> bool:
        res = self._run("fetch", "--quiet", "--no-tags", remote, *args, check=False,
                        timeout=timeout)
        return res.returncode == 0

    # -- trees and diffs --------------------------------------------------------------
    def diff(self, base: str, head: str) -> list[FileChange]:
        res = self._out(
            "diff", "--name-status", "-z", "-M", "--no-ext-diff", "--no-textconv", base, head, "--"
        )
        return parse_name_status(res)

    def tree(self, sha: str) -> Tree:
        cached = self._trees.get(sha)
        if cached is not None:
            return cached
        tree = parse_ls_tree(sha, self._out("ls-tree", "-r", "-z", "--full-tree", sha))
        self._trees[sha] = tree
        return tree

    def read_blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        """Contents of many blobs in one ``cat-file --batch`` call."""
        wanted = list(dict.fromkeys(shas))
        if not wanted:
            return {}
        res = proc.run(
            ["git", "cat-file", "--batch"],
            env=self.env,
            cwd=self.root,
            input=("\n".join(wanted) + "\n").encode(),
            what="git",
            keep_bytes=True,
        )
        data = res.stdout_bytes
        out: dict[str, bytes] = {}
        pos = 0
        for sha in wanted:
            nl = data.index(b"\n", pos)
            header = data[pos:nl].split()
            pos = nl + 1
            if len(header) < 3 or header[1] == b"missing":
                continue
            size = int(header[2])
            out[sha] = data[pos : pos + size]
            pos += size + 1
        return out

    def grep_files(self, sha: str, pattern: str, pathspecs: Sequence[str], *,
                   literal: bool = False) -> list[str]:
        """Paths at ``sha`` whose content matches the extended regex ``pattern``.

        No ``-I``: binary files are searched too, so the answer depends on a file's
        content alone, never on attributes (detect/grep_cache.py caches it by blob id).
        ``literal``: the pathspecs are file paths, not patterns."""
        res = self._run(
            *(["--literal-pathspecs"] if literal else []),
            "grep", "-l", "-z", "-E", "-e", pattern, sha, "--", *pathspecs, check=False
        )
        if res.returncode not in (0, 1):
            raise ToolError(
                "git grep failed",
                command=res.command,
                returncode=res.returncode,
                output_tail=res.tail,
            )
        prefix = sha + ":"
        return [
            p[len(prefix) :] if p.startswith(prefix) else p for p in res.stdout.split("\x00") if p
        ]

    # -- worktrees --------------------------------------------------------------------
    def add_worktree(self, path: Path, sha: str) -> None:
        self._run("worktree", "add", "--detach", "--force", str(path), sha)

    def remove_worktree(self, path: Path) -> None:
        self._run("worktree", "remove", "--force", str(path), check=False)
        self._run("worktree", "prune", check=False)


_NETWORK_COMMANDS = frozenset({"fetch", "push", "ls-remote", "pull", "clone"})
_MOVES_HEAD = frozenset({"am", "checkout", "cherry-pick", "commit", "merge", "pull", "rebase",
                         "reset", "revert", "stash", "switch"})
