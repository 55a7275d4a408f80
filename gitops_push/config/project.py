"""The project: who owns what a repository deploys, beyond the stack name.

Stack names such as ``app`` or ``config`` repeat across repositories that share a
cluster, so what gitops-push puts in a cluster is marked with the project too (the
Kubernetes engine's ``gitops-push.io/project`` label and inventory name). It is the
``project:`` key of gitops-push.yaml, else derived from the origin remote's URL
(``owner-repo``: the same in every clone and CI job), else from the directory name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_MAX_LABEL = 63
PROJECT_PATTERN = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def project_problem(value: str) -> str | None:
    """Why ``value`` cannot be a project name (it becomes a label value)."""
    if not value or len(value) > _MAX_LABEL or not _LABEL_VALUE.fullmatch(value):
        return (f"project {value!r} must be 1 to 63 letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit (it becomes a label value)")
    return None


def slug(text: str, limit: int = _MAX_LABEL) -> str:
    """A label-value-safe form of ``text``; a hash keeps shortened names apart."""
    out = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    if len(out) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        out = out[:limit - 9].rstrip("-._") + "-" + digest
    return out or "project"


def from_remote(url: str | None, fallback: str) -> str:
    """``owner-repo`` from the origin URL, without any user name or token the URL may
    carry; ``fallback`` (the directory name) when there is no remote."""
    if not url:
        return slug(fallback)
    text = url.strip().rstrip("/")
    text = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", text)  # scheme
    text = re.sub(r"^[^@/]*@", "", text)  # user:token@ is never part of the name
    text = re.sub(r"\.git$", "", text).replace(":", "/")
    parts = [p for p in text.split("/") if p]
    return slug("-".join(parts[-2:])) if parts else slug(fallback)


def default_project(repo_root: Path, environ: Mapping[str, str]) -> str:
    """The project of a repository without a ``project:`` key."""
    from gitops_push.errors import GitopsPushError
    from gitops_push.git import Repo

    try:
        url = Repo(repo_root, environ).remote_url()
    except GitopsPushError:
        url = None
    if url and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://|^[^/]+:", url):
        url = str((repo_root / url).resolve())  # a local path, maybe relative: make it stable
    return from_remote(url, repo_root.resolve().name)
