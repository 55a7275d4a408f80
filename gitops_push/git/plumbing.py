"""Writing to git: objects, commits built without a worktree, leased and atomic pushes,
fetches of exact refspecs and ls-remote. Queries live in repo.py.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gitops_push.errors import ToolError
from gitops_push.git.repo import NETWORK_TIMEOUT, Repo


def zero_oid(like: str) -> str:
    """The all-zero object id of the repository's hash length ("ref must not exist")."""
    return "0" * len(like)


def write_commit(repo: Repo, *args: str, input: bytes | None = None) -> str:
    """Run a command that writes a commit (``commit-tree``, ``commit``) as git's own
    identity, or as ``gitops-push`` when git has none. Rather than asking git first (two
    ``git var`` per run), the commit is tried, and git is asked only if that fails."""
    if not repo.identity_known:
        try:
            return repo._run(*args, input=input).stdout
        except ToolError:
            if repo.commit_env == repo.env:
                raise  # git has an identity: something else failed
    return repo._run(*args, input=input, env=repo.commit_env).stdout


def hash_object(repo: Repo, data: bytes) -> str:
    return repo._run("hash-object", "-w", "--stdin", input=data).stdout.strip()


def commit_tree(repo: Repo, tree: str, parents: Sequence[str], message: str,
                env: Mapping[str, str] | None = None) -> str:
    """A commit object (not on any ref); ``env`` defaults to ``write_commit``'s choice."""
    args = ["commit-tree", tree]
    for p in parents:
        args += ["-p", p]
    if env is not None:
        return repo._run(*args, "-F", "-", input=message.encode(), env=env).stdout.strip()
    return write_commit(repo, *args, "-F", "-", input=message.encode()).strip()


def tree_with_file(repo: Repo, base: str | None, path: str, blob: str) -> str:
    """``base``'s tree plus one file, built in a throwaway index (never the real one)."""
    with tempfile.TemporaryDirectory(prefix="gitops-push-index-") as tmp:
        env = {**repo.env, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        repo._run("read-tree", *([base] if base else ["--empty"]), env=env)
        repo._run("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        return repo._run("write-tree", env=env).stdout.strip()


def rev(repo: Repo, ref: str) -> str | None:
    res = repo._run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return res.stdout.strip() or None if res.returncode == 0 else None


# A lost race, not a refusal: the client saw the ref moved, or the server lost a ref-lock
# race to a concurrent push ("cannot lock ref ... reference already exists / but expected").
_RACE_MARKERS = ("stale info", "fetch first", "non-fast-forward", "already exists",
                 "cannot lock ref", "but expected")


@dataclass(frozen=True)
class PushResult:
    """How origin answered a push: accepted, stale (a lease or fast-forward failed), rejected."""

    ok: bool
    kind: str  # ok | stale (lease failed / not a fast-forward) | rejected (by origin) | error
    detail: str
    refs: Mapping[str, str] = field(default_factory=dict)  # refused ref -> git's summary

    @property
    def stale_refs(self) -> set[str]:
        """Refs refused because they moved (a lost race), not those an atomic push
        dropped along with them (``atomic push failed``)."""
        return {ref for ref, why in self.refs.items() if any(k in why for k in _RACE_MARKERS)}


def push(repo: Repo, remote: str, refspecs: Sequence[str], *, leases: Sequence[str] = (),
         atomic: bool = False, timeout: float = NETWORK_TIMEOUT) -> PushResult:
    """``git push --porcelain``, classified. Local pre-push hooks are skipped
    (``--no-verify``): these are machine refs, not code."""
    args = ["push", "--porcelain", "--no-verify", *(["--atomic"] if atomic else [])]
    args += [f"--force-with-lease={lease}" for lease in leases]
    try:
        res = repo._run(*args, remote, *refspecs, check=False, timeout=timeout)
    except ToolError as exc:  # timed out, or git missing
        return PushResult(False, "error", exc.message)
    refused = {line.split("\t")[1].rpartition(":")[2]: line.split("\t")[2]
               for line in res.stdout.splitlines() if line.count("\t") >= 2 and line[:1] == "!"}
    summaries = list(refused.values())
    if res.returncode == 0:
        return PushResult(True, "ok", "")
    text = "; ".join(summaries) or res.tail or f"git push exited {res.returncode}"
    full = f"{text}\n{res.stderr.strip()}" if res.stderr.strip() else text
    if "hook declined" in text:
        return PushResult(False, "rejected", full, refused)
    if any(k in full for k in _RACE_MARKERS):
        return PushResult(False, "stale", full, refused)
    return PushResult(False, "rejected" if "remote rejected" in text else "error", full, refused)


def fetch_refspecs(repo: Repo, remote: str, refspecs: Sequence[str], *, prune: bool = False,
                   timeout: float = NETWORK_TIMEOUT) -> tuple[bool, str]:
    """One ``git fetch`` of several refspecs (one connection); (ok, git's error)."""
    args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
            *(["--prune"] if prune else []), remote, *refspecs]
    try:
        res = repo._run(*args, check=False, timeout=timeout)
    except ToolError as exc:
        return False, exc.message
    return res.returncode == 0, res.tail or f"git fetch exited {res.returncode}"


def ls_remote(repo: Repo, remote: str, pattern: str, *, timeout: float = NETWORK_TIMEOUT
              ) -> dict[str, str] | None:
    """ref -> sha on ``remote`` for refs matching ``pattern``; None if it cannot be read."""
    try:
        res = repo._run("ls-remote", remote, pattern, check=False, timeout=timeout)
    except ToolError:
        return None
    if res.returncode != 0:
        return None
    out: dict[str, str] = {}
    for line in res.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        out[ref.strip()] = sha.strip()
    return out


# -- local refs and objects -----------------------------------------------------------
def update_ref(repo: Repo, ref: str, new: str | None, old: str | None, *, message: str
               ) -> tuple[bool, str]:
    """Compare-and-swap a local ref: move ``ref`` from ``old`` (None: it must not exist)
    to ``new`` (None: delete it). (ok, git's error)."""
    if new is None:
        args = ["update-ref", "-d", ref, old or ""]
    else:
        args = ["update-ref", "-m", message, ref, new, old or zero_oid(new)]
    res = repo._run(*args, check=False)
    return res.returncode == 0, res.stderr.strip()


def set_ref(repo: Repo, ref: str, sha: str) -> None:
    """Point ``ref`` at ``sha`` whatever it was (a tracking ref); failures are ignored."""
    repo._run("update-ref", ref, sha, check=False)


def local_refs(repo: Repo, prefix: str) -> dict[str, str]:
    """ref name -> object id of every local ref under ``prefix``."""
    out = repo._run("for-each-ref", "--format=%(objectname) %(refname)", prefix).stdout
    return {r: s for s, _, r in (line.partition(" ") for line in out.splitlines())}


def empty_tree(repo: Repo) -> str:
    return repo._run("mktree", input=b"").stdout.strip()


def commit_text(repo: Repo, sha: str) -> str:
    """The raw commit object: headers, a blank line, the message."""
    return repo._run("cat-file", "commit", sha).stdout


@dataclass(frozen=True)
class FetchedRef:
    """How origin answered a fetch of one ref."""

    ok: bool
    missing: bool = False  # the remote has no such ref
    detail: str = ""


def fetch_ref(repo: Repo, remote: str, src: str, dst: str, *,
              timeout: float = NETWORK_TIMEOUT) -> FetchedRef:
    """Force-fetch one ref of ``remote`` into ``dst``."""
    try:
        res = repo._run("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", remote,
                       f"+{src}:{dst}", check=False, timeout=timeout)
    except ToolError as exc:
        return FetchedRef(False, detail=exc.message)
    if res.returncode == 0:
        return FetchedRef(True)
    if "couldn't find remote ref" in res.stderr:
        return FetchedRef(True, missing=True)
    return FetchedRef(False, detail=res.tail or f"git fetch exited {res.returncode}")


def ref_exists(repo: Repo, ref: str) -> bool:
    return repo._run("rev-parse", "--verify", "--quiet", ref, check=False).returncode == 0


# -- trees built in a scratch index (nothing on disk changes) -----------------------------
def worktree_tree(repo: Repo) -> str:
    """A tree object of the working tree as it is (committed or not)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**repo.env, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        repo._run("add", "-A", "--", ".", env=env)
        return repo._run("write-tree", env=env).stdout.strip()


def restored_commit(repo: Repo, head: str, source: str, paths: Sequence[str], message: str
                    ) -> str:
    """A commit (on no branch) of ``head`` with ``paths`` as they are at ``source``."""
    with tempfile.TemporaryDirectory(prefix="gitops-push-rollback-") as tmp:
        env = {**repo.env, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        repo._run("read-tree", head, env=env)
        repo._run("restore", f"--source={source}", "--staged", "--", *paths, env=env)
        tree = repo._run("write-tree", env=env).stdout.strip()
    return write_commit(repo, "commit-tree", tree, "-p", head, "-m", message).strip()


# -- the working tree --------------------------------------------------------------------
def commit_restored(repo: Repo, source: str, paths: Sequence[str], message: str) -> None:
    """Restore ``paths`` from ``source`` in the index and worktree and commit them."""
    repo._run("restore", f"--source={source}", "--staged", "--worktree", "--", *paths)
    write_commit(repo, "commit", "--no-verify", "-m", message)


def push_head(repo: Repo, remote: str, branch: str) -> tuple[bool, str]:
    """Push HEAD to ``branch`` (a plain push: refused unless it fast-forwards)."""
    res = repo._run("push", remote, f"HEAD:refs/heads/{branch}", check=False)
    return res.returncode == 0, res.tail


def reset_hard(repo: Repo, sha: str) -> None:
    repo._run("reset", "--hard", sha)
