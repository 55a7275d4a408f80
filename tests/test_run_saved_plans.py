"""run/saved_plans.py: a saved plan is bound to its stack, its commit and the hash of every
file the stack reads; anything else is refused as stale."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EXAMPLE_FILES, GitRepo

from gitops_push import config
from gitops_push.config import Stack
from gitops_push.errors import UserError
from gitops_push.git import Repo
from gitops_push.run import saved_plans
from gitops_push.run.saved_plans import PlanMeta, StalePlan


def app(r: GitRepo) -> Stack:
    cfg = config.parse(EXAMPLE_FILES["gitops-push.yaml"])
    return next(s.stack for s in cfg.stacks if s.stack.name == "app")


def meta(stack: Stack, commit: str, files_hash: str) -> PlanMeta:
    return PlanMeta(stack.name, stack.type, commit, files_hash, "terraform 1.9.0",
                    saved_plans.now(), destroy=False, has_changes=True)


def test_the_hash_covers_the_files_a_stack_reads_outside_its_directory(repo: GitRepo) -> None:
    git_repo = Repo(repo.path)
    stack = app(repo)
    before = saved_plans.files_hash(git_repo, repo.head(), stack)
    repo.commit("readme", {"README.md": "other\n"})
    assert saved_plans.files_hash(Repo(repo.path), repo.head(), stack) == before
    repo.commit("policy", {"shared/policy.json": "[]\n"})  # read through file()
    assert saved_plans.files_hash(Repo(repo.path), repo.head(), stack) != before


def test_a_plan_round_trips_and_is_verified(repo: GitRepo, tmp_path: Path) -> None:
    stack = app(repo)
    saved_plans.write(tmp_path, meta(stack, repo.head(), "h1"))
    read = saved_plans.read(tmp_path, stack)
    saved_plans.verify(read, stack, repo.head(), "h1")
    with pytest.raises(StalePlan, match="made at commit"):
        saved_plans.verify(read, stack, "f" * 40, "h1")
    with pytest.raises(StalePlan, match="file hash differs"):
        saved_plans.verify(read, stack, repo.head(), "h2")


def test_a_missing_or_broken_plan_is_a_clear_error(repo: GitRepo, tmp_path: Path) -> None:
    stack = app(repo)
    with pytest.raises(UserError, match="no saved plan for stack 'app'"):
        saved_plans.read(tmp_path, stack)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / saved_plans.METADATA).write_text("{")
    with pytest.raises(UserError, match="unreadable plan metadata"):
        saved_plans.read(tmp_path, stack)
