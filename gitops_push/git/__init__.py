"""git, the only place it runs: ``repo.py`` answers questions (trees, diffs, commits,
refs) and ``plumbing.py`` writes (objects, commits without a worktree, leased and atomic
pushes, exact fetches, ls-remote). Nothing outside this package starts git."""

from __future__ import annotations

from gitops_push.git.plumbing import (
    PushResult,
    commit_tree,
    fetch_refspecs,
    hash_object,
    ls_remote,
    push,
    rev,
    tree_with_file,
    zero_oid,
)
from gitops_push.git.refname import MAX_REF_LEN, SHA_RE, ZERO_SHA, check_ref_syntax
from gitops_push.git.repo import NETWORK_TIMEOUT, Repo
from gitops_push.git.tree import FileChange, Tree, parse_name_status, resolve_in_tree

__all__ = [
    "MAX_REF_LEN", "NETWORK_TIMEOUT", "SHA_RE", "ZERO_SHA", "FileChange", "PushResult",
    "Repo", "Tree", "check_ref_syntax", "commit_tree", "fetch_refspecs", "hash_object",
    "ls_remote", "parse_name_status", "push", "resolve_in_tree", "rev",
    "tree_with_file", "zero_oid",
]
