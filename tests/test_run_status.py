"""run/status.py (and the trail reading it shares with apply, run/select.py): per stack,
the last deployed commit and whether HEAD is ahead, behind or equal."""

from __future__ import annotations

import os

from conftest import GitRepo

from gitops_push import config
from gitops_push.git import Repo
from gitops_push.run.select import deployed_commits, last_deployments
from gitops_push.run.status import status

SHA = "c" * 40


def finished(head: str, stacks: list[dict[str, object]], command: str = "apply",
             phase: str = "finished") -> dict[str, object]:
    return {"phase": phase, "command": command, "head": head, "finished_at": "2026-11-01T00:00Z",
            "actor": "ada", "run_id": "r1", "stacks": stacks}


def test_only_finished_deployments_that_deployed_count() -> None:
    records = [
        finished("a" * 40, [{"name": "net", "deployed": True, "result": "applied"}]),
        finished(SHA, [{"name": "net", "deployed": True, "result": "no-changes"},
                       {"name": "app", "deployed": False, "result": "failed"}]),
        finished("d" * 40, [{"name": "app", "deployed": True}], phase="started"),
        finished("e" * 40, [{"name": "app", "deployed": True}], command="plan"),
    ]
    assert deployed_commits(records) == {"net": SHA}  # the newest one wins
    assert last_deployments(records)["net"]["by"] == "ada"


def test_status_without_a_trail_says_never_deployed(repo: GitRepo) -> None:
    git_repo = Repo(repo.path)
    rows = status(git_repo, config.load(repo.path), os.environ)
    assert {r["name"]: r["state"] for r in rows} == dict.fromkeys(
        ("network", "app", "web"), "never deployed")
    assert all(r["head"] == repo.head() and r["deployed_commit"] is None for r in rows)
