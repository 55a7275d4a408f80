"""ci.py, where every CI variable is read: the context of a GitHub or GitLab job, from
dicts and temporary event files (no global is patched)."""

from __future__ import annotations

import json
from pathlib import Path

from gitops_push import ci

SHA_A = "a" * 40
SHA_B = "b" * 40


def test_outside_ci_the_context_is_local() -> None:
    assert ci.detect({}) == ci.CIContext(system="local")


def test_a_github_pull_request_compares_with_its_base(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"base": {"sha": SHA_A}},
                                 "repository": {"default_branch": "trunk"}}))
    ctx = ci.detect({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request",
                     "GITHUB_EVENT_PATH": str(event), "GITHUB_REPOSITORY": "acme/infra",
                     "GITHUB_RUN_ID": "7", "GITHUB_HEAD_REF": "feature", "GITHUB_ACTOR": "ada"})
    assert (ctx.system, ctx.event, ctx.base_sha, ctx.base_kind) == (
        "github", "pull_request", SHA_A, "pr-base")
    assert ctx.default_branch == "trunk" and ctx.branch == "feature" and ctx.actor == "ada"
    assert ctx.pipeline_url == "https://github.com/acme/infra/actions/runs/7"


def test_a_github_push_compares_with_the_commit_before(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"before": SHA_B}))
    ctx = ci.detect({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push",
                     "GITHUB_EVENT_PATH": str(event)})
    assert (ctx.base_sha, ctx.base_kind) == (SHA_B, "push-before")


def test_an_unreadable_event_file_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text("{not json")
    ctx = ci.detect({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push",
                     "GITHUB_EVENT_PATH": str(event)})
    assert ctx.base_sha is None
    assert any("GITHUB_EVENT_PATH" in w for w in ctx.warnings)


def test_gitlab_merge_requests_and_pushes() -> None:
    ctx = ci.detect({"GITLAB_CI": "true", "CI_PIPELINE_SOURCE": "merge_request_event",
                     "CI_MERGE_REQUEST_DIFF_BASE_SHA": SHA_A,
                     "CI_DEFAULT_BRANCH": "main"})
    assert ctx.system == "gitlab" and ctx.base_sha == SHA_A and ctx.base_is_merge_base
    assert ctx.default_branch == "main"


def test_values_from_the_environment_are_cleaned() -> None:
    # control characters (a newline injected into a log or record) are dropped
    assert ci.clean("ada\nINJECTED: yes\x1b[31m") == "adaINJECTED: yes[31m"
    assert ci.clean("x" * 500, limit=10) == "x" * 10
    assert ci.clean(" \n ") is None and ci.clean(None) is None
    assert ci.is_zero_sha("0" * 40) and not ci.is_zero_sha(SHA_A)


def test_the_context_is_built_once_until_the_variables_or_event_change(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"before": SHA_A}))
    env = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push",
           "GITHUB_EVENT_PATH": str(event), "HOME": "/elsewhere"}
    first = ci.detect(env)
    assert ci.detect({**env, "HOME": "/other"}) is first  # not a CI variable: the same
    event.write_text(json.dumps({"before": SHA_B, "pad": "x" * 10}))
    assert ci.detect(env).base_sha == SHA_B  # the event file changed: read again
    assert ci.detect({**env, "GITHUB_EVENT_NAME": "schedule"}).base_sha is None
