"""Reading history and trees below a path: what the audit trail's verification and
reader ask git (``--literal-pathspecs``: a directory name is never a glob)."""

from __future__ import annotations

from gitops_push.git.repo import Repo


def _spec(directory: str | None) -> list[str]:
    return ["--", directory] if directory else []


def path_history(repo: Repo, tip: str, directory: str | None
                 ) -> list[tuple[str, str, str, str, str]]:
    """(commit, status, path, old blob, new blob) for every commit reachable from ``tip``
    that touches ``directory`` (everything when None), oldest first; merges against each
    parent (a merge that drops a file shows as a deletion)."""
    spec = _spec(directory)
    commits = repo._run("--literal-pathspecs", "rev-list", "--reverse",
                       "--full-history", tip, *spec).stdout
    if not commits.strip():
        return []
    raw = repo._run("--literal-pathspecs", "diff-tree", "--stdin", "-r", "-m", "--root",
                   "--no-renames", "--no-abbrev", "--raw", "-z", *spec,
                   input=commits.encode()).stdout
    out: list[tuple[str, str, str, str, str]] = []
    tokens = raw.split("\x00")
    commit, i = "", 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith(":") and i + 1 < len(tokens):
            _m1, _m2, old, new, status = tok[1:].split()
            out.append((commit, status[:1], tokens[i + 1], old, new))
            i += 2
            continue
        if tok.strip():
            commit = tok.split()[0]
        i += 1
    return out


def blobs_under(repo: Repo, tip: str, directory: str | None) -> list[tuple[str, str]]:
    """(path, blob id) of every file under ``directory`` at ``tip``."""
    raw = repo._run("--literal-pathspecs", "ls-tree", "-r", "-z", tip, *_spec(directory)).stdout
    out: list[tuple[str, str]] = []
    for item in raw.split("\x00"):
        meta, _, path = item.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == "blob":
            out.append((path, parts[2]))
    return out
