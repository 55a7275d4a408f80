"""The CI environment: every CI variable gitops-push reads is named here, once.

Functions take ``environ`` so tests pass plain dicts. Values are treated as hostile:
SHAs must look like SHAs, everything else is length-limited and stripped of control
characters before it reaches a record or a log.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
MAX_VALUE = 512
MAX_EVENT_BYTES = 25 * 1024 * 1024

# gitops-push's own variables (flags have GITOPS_PUSH_<FLAG> too, declared in cli.py)
ENV_SPOOL_DIR = "GITOPS_PUSH_SPOOL_DIR"
ENV_TERRAFORM_BIN = "GITOPS_PUSH_TERRAFORM_BIN"
ENV_PLUGIN_CACHE = "GITOPS_PUSH_PLUGIN_CACHE_DIR"
ENV_RUN_ID = "GITOPS_PUSH_RUN_ID"
ENV_DEPLOYMENT_ID = "GITOPS_PUSH_DEPLOYMENT_ID"
# the PR/MR comment (gitops_push.run.comment): tokens are read here, never printed
ENV_GITHUB_TOKEN = "GITOPS_PUSH_GITHUB_TOKEN"  # noqa: S105  # a name; else GITHUB_TOKEN
ENV_GITLAB_TOKEN = "GITOPS_PUSH_GITLAB_TOKEN"  # noqa: S105  # a variable name


@dataclass(frozen=True)
class CIContext:
    """What the CI job says about itself: the platform, the event and the commits it names."""

    system: str  # "github" | "gitlab" | "local"
    event: str = ""  # push | pull_request | merge_request_event | schedule | ...
    base_sha: str | None = None  # push: the commit before; MR/PR: the target/base
    base_is_merge_base: bool = False  # GitLab's DIFF_BASE_SHA is already a merge-base
    base_kind: str = ""  # "push-before" | "pr-base" | ""
    default_branch: str | None = None
    branch: str | None = None
    actor: str | None = None
    pipeline_url: str | None = None
    job_url: str | None = None
    repository: str | None = None
    step_summary: str | None = None
    warnings: tuple[str, ...] = ()


def clean(value: str | None, limit: int = MAX_VALUE) -> str | None:
    """Strip control characters (newline injection) and bound the length."""
    if value is None:
        return None
    value = "".join(ch for ch in value if ch.isprintable())[:limit].strip()
    return value or None


def _sha(value: str | None, name: str, warnings: list[str]) -> str | None:
    if value is None or value == "":
        return None
    v = value.strip().lower()
    if not SHA_RE.match(v):
        warnings.append(f"ignoring {name}: not a commit SHA ({clean(value, 60)!r})")
        return None
    return v


_CI_PREFIXES = ("GITHUB_", "GITLAB_", "CI_")
_detected: tuple[tuple[object, ...], CIContext] | None = None
_detected_lock = threading.Lock()


def _detect_key(environ: Mapping[str, str]) -> tuple[object, ...]:
    """What the context is made of: the CI variables, and the event file as it is now."""
    variables = tuple(sorted((k, v) for k, v in environ.items() if k.startswith(_CI_PREFIXES)))
    event = environ.get("GITHUB_EVENT_PATH")
    try:
        st = Path(event).stat() if event else None
    except OSError:
        st = None
    return variables, st and (st.st_ino, st.st_size, st.st_mtime_ns)


def detect(environ: Mapping[str, str]) -> CIContext:
    """The CI context; built once per run (issue 13: it was rebuilt, and the event file
    re-read, six times per apply) and again only when the variables or the event file
    change."""
    global _detected
    key = _detect_key(environ)
    with _detected_lock:
        if _detected is not None and _detected[0] == key:
            return _detected[1]
    if environ.get("GITHUB_ACTIONS") == "true":
        ctx = _github(environ)
    elif environ.get("GITLAB_CI") == "true":
        ctx = _gitlab(environ)
    else:
        ctx = CIContext(system="local")
    with _detected_lock:
        _detected = (key, ctx)
    return ctx


def _github(env: Mapping[str, str]) -> CIContext:
    warnings: list[str] = []
    event_name = clean(env.get("GITHUB_EVENT_NAME")) or ""
    event: dict[str, object] = {}
    event_path = env.get("GITHUB_EVENT_PATH")
    if event_path:
        try:
            p = Path(event_path)
            if p.stat().st_size <= MAX_EVENT_BYTES:
                loaded = json.loads(p.read_text(encoding="utf-8"))
                event = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError) as exc:
            warnings.append(f"cannot read GITHUB_EVENT_PATH: {exc}")
    base = None
    kind = ""
    if event_name in ("pull_request", "pull_request_target"):
        pr = event.get("pull_request")
        if isinstance(pr, dict) and isinstance(pr.get("base"), dict):
            base = _sha(str(pr["base"].get("sha", "")), "pull_request.base.sha", warnings)
            kind = "pr-base"
    elif event_name == "push":
        base = _sha(str(event.get("before", "")), "github.event.before", warnings)
        kind = "push-before"
    repo_info = event.get("repository")
    default_branch = None
    if isinstance(repo_info, dict):
        default_branch = clean(str(repo_info.get("default_branch") or "")) or None
    server = clean(env.get("GITHUB_SERVER_URL")) or "https://github.com"
    repository = clean(env.get("GITHUB_REPOSITORY"))
    run_id = clean(env.get("GITHUB_RUN_ID"))
    url = f"{server}/{repository}/actions/runs/{run_id}" if repository and run_id else None
    return CIContext(
        system="github",
        event=event_name,
        base_sha=base,
        base_kind=kind,
        default_branch=default_branch,
        branch=clean(env.get("GITHUB_HEAD_REF")) or clean(env.get("GITHUB_REF_NAME")),
        actor=clean(env.get("GITHUB_ACTOR")),
        pipeline_url=url,
        job_url=url,
        repository=repository,
        step_summary=env.get("GITHUB_STEP_SUMMARY") or None,
        warnings=tuple(warnings),
    )


def _gitlab(env: Mapping[str, str]) -> CIContext:
    warnings: list[str] = []
    source = clean(env.get("CI_PIPELINE_SOURCE")) or ""
    base = None
    kind = ""
    merge_base = False
    if env.get("CI_MERGE_REQUEST_IID") or source == "merge_request_event":
        base = _sha(
            env.get("CI_MERGE_REQUEST_DIFF_BASE_SHA"), "CI_MERGE_REQUEST_DIFF_BASE_SHA", warnings
        )
        kind, merge_base = "pr-base", True
    else:
        base = _sha(env.get("CI_COMMIT_BEFORE_SHA"), "CI_COMMIT_BEFORE_SHA", warnings)
        kind = "push-before"
    return CIContext(
        system="gitlab",
        event=source,
        base_sha=base,
        base_is_merge_base=merge_base,
        base_kind=kind,
        default_branch=clean(env.get("CI_DEFAULT_BRANCH")),
        branch=clean(env.get("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME"))
        or clean(env.get("CI_COMMIT_BRANCH"))
        or clean(env.get("CI_COMMIT_REF_NAME")),
        actor=clean(env.get("GITLAB_USER_LOGIN")),
        pipeline_url=clean(env.get("CI_PIPELINE_URL")),
        job_url=clean(env.get("CI_JOB_URL")),
        repository=clean(env.get("CI_PROJECT_PATH")),
        warnings=tuple(warnings),
    )


def step_summary_path(environ: Mapping[str, str]) -> str | None:
    """GitHub's job summary file; set means "append the Markdown summary here"."""
    return environ.get("GITHUB_STEP_SUMMARY") or None


def github_output_path(environ: Mapping[str, str]) -> str | None:
    """GitHub's step-output file (``fan-out --github-output`` writes the matrices there)."""
    return environ.get("GITHUB_OUTPUT") or None


def is_zero_sha(sha: str | None) -> bool:
    return sha is not None and set(sha) == {"0"}


def deployment_id(environ: Mapping[str, str]) -> str | None:
    """The id every job of one pipeline records under (issue 15: one deployment, many
    jobs): ``GITOPS_PUSH_DEPLOYMENT_ID``, else the GitHub run id (kept by re-runs, which
    only bump GITHUB_RUN_ATTEMPT), else the GitLab pipeline id (kept by job retries).
    A fan-out child pipeline gets its parent's id through GITOPS_PUSH_DEPLOYMENT_ID."""
    explicit = clean(environ.get(ENV_DEPLOYMENT_ID), 80)
    if explicit:
        return explicit
    if environ.get("GITHUB_ACTIONS") == "true":
        return clean(environ.get("GITHUB_RUN_ID"), 80)
    if environ.get("GITLAB_CI") == "true":
        return clean(environ.get("CI_PIPELINE_ID"), 80)
    return None


@dataclass(frozen=True)
class ReviewContext:
    """Where a PR/MR comment goes: API root, repository/project, PR/MR number, token."""

    api_url: str | None
    project: str | None  # GitHub "owner/name"; GitLab the project id
    number: str | None  # the pull request number / merge request iid
    token: str | None  # a secret: never printed or recorded
    run_url: str | None
    commit: str | None = None  # to find the PR/MR of a pushed commit (apply on main)


def review_context(platform: str, environ: Mapping[str, str]) -> ReviewContext:
    """The comment target from the CI environment (flags override each field)."""
    if platform == "github":
        number = None
        event_path = environ.get("GITHUB_EVENT_PATH")
        if event_path:
            try:
                event = json.loads(Path(event_path).read_text(encoding="utf-8"))
                pr = event.get("pull_request") if isinstance(event, dict) else None
                if isinstance(pr, dict) and pr.get("number") is not None:
                    number = str(pr["number"])
            except (OSError, ValueError):
                number = None
        token = environ.get(ENV_GITHUB_TOKEN) or environ.get("GITHUB_TOKEN") or None
        ctx = _github(environ) if environ.get("GITHUB_ACTIONS") == "true" else None
        return ReviewContext(clean(environ.get("GITHUB_API_URL")) or "https://api.github.com",
                             clean(environ.get("GITHUB_REPOSITORY")), number, token,
                             ctx.pipeline_url if ctx else None,
                             _sha(environ.get("GITHUB_SHA"), "GITHUB_SHA", []))
    return ReviewContext(clean(environ.get("CI_API_V4_URL")), clean(environ.get("CI_PROJECT_ID")),
                         clean(environ.get("CI_MERGE_REQUEST_IID")),
                         environ.get(ENV_GITLAB_TOKEN) or None,
                         clean(environ.get("CI_PIPELINE_URL")),
                         _sha(environ.get("CI_COMMIT_SHA"), "CI_COMMIT_SHA", []))
