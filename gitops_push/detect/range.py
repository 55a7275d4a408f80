"""The commit range a command compares: from the flags, the CI event, or the merge-base
with the default branch; a base that cannot be found widens to every stack, with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gitops_push import ci as ci_env
from gitops_push.config import Config
from gitops_push.errors import UserError
from gitops_push.git import SHA_RE, Repo
from gitops_push.git.plumbing import ref_exists, rev


@dataclass(frozen=True)
class Range:
    """The two commits a run compares, and where the base came from."""

    base: str | None  # None: no usable base, every stack counts as changed
    head: str
    source: str  # flag | ci-push | ci-pr | merge-base | first-commit | fallback | all
    warnings: tuple[str, ...] = ()


def default_branch(repo: Repo, config: Config, ctx: ci_env.CIContext) -> str | None:
    """Configured, else what CI says, else origin/HEAD, else main/master if present."""
    if config.default_branch:
        return config.default_branch
    if ctx.default_branch:
        return ctx.default_branch
    remote_default = repo.remote_head("origin")
    if remote_default:
        return remote_default
    for name in ("main", "master"):
        for ref in (f"refs/remotes/origin/{name}", f"refs/heads/{name}"):
            if ref_exists(repo, ref):
                return name
    return None


def default_branch_commit(repo: Repo, branch: str) -> str | None:
    for ref in (f"refs/remotes/origin/{branch}", f"refs/heads/{branch}"):
        sha = rev(repo, ref)
        if sha is not None:
            return sha
    return None


def ensure_commit(repo: Repo, sha: str) -> bool:
    """Make ``sha`` available locally: fetch it, deepen a shallow clone, or unshallow."""
    if repo.has_commit(sha):
        return True
    if not repo.has_remote("origin"):
        return False
    repo.fetch(sha)
    if repo.has_commit(sha):
        return True
    if repo.is_shallow():
        for args in (("--deepen=500",), ("--unshallow",)):
            repo.fetch(*args)
            if repo.has_commit(sha):
                return True
    return False


def resolve_range(
    repo: Repo,
    config: Config,
    *,
    base: str | None,
    head: str | None,
    environ: Mapping[str, str],
    all_stacks: bool = False,
) -> Range:
    head_sha = repo.resolve(head or "HEAD", what="--head")
    ctx = ci_env.detect(environ)
    warnings = list(ctx.warnings)
    if all_stacks:
        return Range(None, head_sha, "all", tuple(warnings))
    if base is not None:
        if base.strip() == "":
            raise UserError("--base is empty; pass a ref or SHA, or leave it unset")
        if SHA_RE.match(base.lower()) and not repo.has_commit(base.lower()):
            return _missing_base(repo, base.lower(), head_sha, "flag", warnings)
        base_sha = repo.resolve(base, what="--base")
        mb = repo.merge_base(base_sha, head_sha)
        return Range(mb or base_sha, head_sha, "flag", tuple(warnings))
    if ctx.base_sha and not ci_env.is_zero_sha(ctx.base_sha):
        source = "ci-pr" if ctx.base_kind == "pr-base" else "ci-push"
        if not repo.has_commit(ctx.base_sha):
            return _missing_base(repo, ctx.base_sha, head_sha, source, warnings)
        if ctx.base_kind == "pr-base" and not ctx.base_is_merge_base:
            mb = repo.merge_base(ctx.base_sha, head_sha)
            return Range(mb or ctx.base_sha, head_sha, source, tuple(warnings))
        return Range(ctx.base_sha, head_sha, source, tuple(warnings))
    if ci_env.is_zero_sha(ctx.base_sha):
        warnings.append(
            "the CI base SHA is all zeros (a new branch): comparing with the "
            "merge-base of the default branch"
        )
    branch = default_branch(repo, config, ctx)
    if branch:
        tip = default_branch_commit(repo, branch)
        if tip:
            mb = repo.merge_base(tip, head_sha)
            if mb == head_sha and not repo.parents(head_sha):
                return Range(None, head_sha, "first-commit", tuple(warnings))
            if mb:
                return Range(mb, head_sha, "merge-base", tuple(warnings))
    if not repo.parents(head_sha):
        return Range(None, head_sha, "first-commit", tuple(warnings))
    warnings.append(
        "no base commit could be determined (no --base, no CI base, no default branch to "
        "merge-base with): treating EVERY stack as changed"
    )
    return Range(None, head_sha, "fallback", tuple(warnings))


def _missing_base(repo: Repo, sha: str, head: str, source: str, warnings: list[str]) -> Range:
    if ensure_commit(repo, sha):
        return Range(sha, head, source, tuple(warnings))
    warnings.append(
        f"base commit {sha[:12]} is not in the local history, even after fetching from origin "
        "(force push? shallow clone?): treating EVERY stack as changed"
    )
    return Range(None, head, "fallback", tuple(warnings))
