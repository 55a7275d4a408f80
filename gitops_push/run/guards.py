"""What a deploying command checks before it changes anything: the branch, a clean tree, and
consent to destroy removed stacks.
"""

from __future__ import annotations

from collections.abc import Mapping

from gitops_push import ci as ci_env
from gitops_push.config import Config
from gitops_push.detect import range as range_mod
from gitops_push.detect.changes import ChangeSet, StackStatus
from gitops_push.errors import UserError
from gitops_push.git import Repo
from gitops_push.run.model import RunOptions


def check_branch(repo: Repo, config: Config, opts: RunOptions, environ: Mapping[str, str]
                 ) -> str | None:
    """Apply only from the default branch (``--allow-branch`` overrides, and is recorded)."""
    ctx = ci_env.detect(environ)
    default = range_mod.default_branch(repo, config, ctx)
    current = repo.current_branch() or ctx.branch
    if default is None:
        if opts.allow_branch:
            return current
        raise UserError("cannot tell the default branch (no origin/HEAD, no main/master, no "
                        "default_branch in the config); set default_branch or pass "
                        "--allow-branch")
    if current != default and not opts.allow_branch:
        raise UserError(
            f"refusing to {opts.command} from branch {current or '(detached HEAD)'!r}: only "
            f"the default branch {default!r} is deployed (--allow-branch overrides and is "
            "recorded in the audit trail)"
        )
    return current


def check_clean(repo: Repo) -> None:
    dirty = repo.dirty_paths()
    if dirty:
        shown = ", ".join(repr(p) for p in dirty[:5]) + (" ..." if len(dirty) > 5 else "")
        raise UserError(
            f"refusing to deploy from a dirty working tree ({len(dirty)} changed or untracked "
            f"file(s): {shown}); commit or stash them — git is the source of truth"
        )


def refuse_destroy(cs: ChangeSet, opts: RunOptions) -> None:
    removed = [c.stack.name for c in cs.stacks if c.status == StackStatus.REMOVED]
    if removed and not opts.allow_destroy:
        raise UserError(
            f"these stacks were removed from git and would be DESTROYED: {', '.join(removed)}; "
            "re-run with --allow-destroy to destroy them (nothing was applied)"
        )
