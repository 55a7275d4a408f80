"""``gitops-push status``: per stack, its last deployment and whether HEAD is ahead."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gitops_push import audit
from gitops_push.config import Config
from gitops_push.detect import changes
from gitops_push.detect.discovery import resolve_stacks
from gitops_push.detect.range import Range
from gitops_push.git import Repo
from gitops_push.run.select import last_deployments


def status(repo: Repo, config: Config, environ: Mapping[str, str]) -> list[dict[str, Any]]:
    head = repo.head()
    stacks = resolve_stacks(config, repo, repo.tree(head))
    records = audit.Trail(repo, config.audit, environ=environ).records()
    last = last_deployments(records)
    pending: dict[str, set[str]] = {}
    for sha in {str(d["commit"]) for d in last.values() if d.get("commit")}:
        if sha == head or not repo.has_commit(sha):
            continue
        cs = changes.compute(repo, config, Range(sha, head, "audit"))
        pending[sha] = {c.stack.name for c in cs.stacks}
    rows = []
    for s in stacks:
        d = last.get(s.name)
        row: dict[str, Any] = {"name": s.name, "type": s.type, "path": s.path,
                               "deployed_commit": None, "deployed_at": None, "deployed_by": None,
                               "run_id": None, "deployment_id": None, "head": head,
                               "state": "never deployed"}
        if d:
            sha = str(d["commit"])
            row.update(deployed_commit=sha, deployed_at=d["at"], deployed_by=d["by"],
                       run_id=d["run_id"], deployment_id=d.get("deployment_id"))
            if sha == head:
                row["state"] = "up to date"
            elif not repo.has_commit(sha):
                row["state"] = "deployed commit not in local history"
            elif repo.is_ancestor(head, sha):
                row["state"] = "HEAD is behind the deployed commit"
            elif s.name in pending.get(sha, set()):
                row["state"] = "HEAD is ahead: changes pending"
            else:
                row["state"] = "HEAD is ahead: no changes for this stack"
        rows.append(row)
    return rows
