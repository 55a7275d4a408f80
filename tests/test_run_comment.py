"""``gitops-push comment`` against a local HTTP server on 127.0.0.1 that speaks the API
subset it needs: GitHub issue comments (paged by ``Link``), GitLab merge-request notes
(paged by ``X-Next-Page``), create, update, the commit -> PR/MR lookup, and errors.

The server stands in for github.com / gitlab.com, which tests cannot reach.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from fake_http import JsonHandler, serve

from gitops_push.cli.app import run
from gitops_push.errors import ExitCode
from gitops_push.run.comment import LIMITS, fit, marker

TOKEN = "ghs_s3cr3t-token-value"
PLAN = "<!-- gitops-push-plan -->"


@dataclass
class FakeApi:
    """One pull request's comments (GitHub) and one merge request's notes (GitLab)."""

    url: str = ""
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)  # "METHOD" -> HTTP status
    per_page: int = 2  # small pages, so paging is exercised
    commit_prs: list[dict[str, Any]] = field(default_factory=list)

    def add(self, body: str, *, system: bool = False) -> int:
        cid = max(self.comments, default=0) + 1
        self.comments[cid] = {"id": cid, "body": body, "system": system}
        return cid


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    gh_list = re.compile(r"/repos/acme/infra/issues/7/comments")
    gh_item = re.compile(r"/repos/acme/infra/issues/comments/(\d+)")
    gh_pulls = re.compile(r"/repos/acme/infra/commits/([0-9a-f]{40})/pulls")
    gl_list = re.compile(r"/api/v4/projects/42/merge_requests/3/notes")
    gl_item = re.compile(r"/api/v4/projects/42/merge_requests/3/notes/(\d+)")
    gl_mrs = re.compile(r"/api/v4/projects/42/repository/commits/([0-9a-f]{40})/merge_requests")

    class Handler(JsonHandler):
        def page(self, items: list[dict[str, Any]], github: bool) -> None:
            query = parse_qs(urlparse(self.path).query)
            page = int(query.get("page", ["1"])[0])
            chunk = items[(page - 1) * fake.per_page: page * fake.per_page]
            more = page * fake.per_page < len(items)
            path = urlparse(self.path).path
            if github:
                link = f'<{fake.url}{path}?per_page=100&page={page + 1}>; rel="next"' \
                    if more else ""
                self.reply(200, chunk, {"Link": link} if link else {})
            else:
                self.reply(200, chunk, {"X-Next-Page": str(page + 1) if more else ""})

        def handle_any(self, method: str) -> None:
            path = urlparse(self.path).path
            fake.requests.append((method, path))
            github = not path.startswith("/api/v4")
            auth = self.headers.get("Authorization") if github else \
                f"Bearer {self.headers.get('PRIVATE-TOKEN')}"
            if auth != f"Bearer {TOKEN}":
                self.reply(401, {"message": "Bad credentials"})
                return
            if method in fake.fail:
                status = fake.fail[method]
                self.reply(status, {"message": {403: "Resource not accessible by integration",
                                                404: "Not Found",
                                                422: "Validation Failed"}.get(status, "boom")})
                return
            body = self.json_body()
            items = sorted(fake.comments.values(), key=lambda c: c["id"])
            if (gh_list.fullmatch(path) or gl_list.fullmatch(path)) and method == "GET":
                self.page(items, github)
            elif (gh_list.fullmatch(path) or gl_list.fullmatch(path)) and method == "POST":
                cid = fake.add(body["body"])
                self.reply(201, fake.comments[cid])
            elif (m := gh_item.fullmatch(path) or gl_item.fullmatch(path)) and \
                    method in ("PATCH", "PUT") and int(m.group(1)) in fake.comments:
                fake.comments[int(m.group(1))]["body"] = body["body"]
                self.reply(200, fake.comments[int(m.group(1))])
            elif (gh_pulls.fullmatch(path) or gl_mrs.fullmatch(path)) and method == "GET":
                self.reply(200, fake.commit_prs)
            else:
                self.reply(404, {"message": "Not Found"})

    with serve(Handler) as url:
        fake.url = url
        yield fake


def github_env(api: FakeApi, tmp_path: Path, **extra: str) -> dict[str, str]:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7}}))
    return {"GITHUB_ACTIONS": "true", "GITHUB_API_URL": api.url, "GITHUB_REPOSITORY":
            "acme/infra", "GITHUB_EVENT_PATH": str(event), "GITHUB_TOKEN": TOKEN,
            "GITHUB_SERVER_URL": "https://github.example", "GITHUB_RUN_ID": "555", **extra}


def gitlab_env(api: FakeApi, **extra: str) -> dict[str, str]:
    return {"GITLAB_CI": "true", "CI_API_V4_URL": f"{api.url}/api/v4", "CI_PROJECT_ID": "42",
            "CI_MERGE_REQUEST_IID": "3", "GITOPS_PUSH_GITLAB_TOKEN": TOKEN, **extra}


def comment(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = dict(os.environ)
    for k in [k for k in os.environ if k.startswith(("GITHUB_", "GITLAB_", "CI_",
                                                       "GITOPS_PUSH_"))]:
        del os.environ[k]
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run(["comment", *args])
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert TOKEN not in out.getvalue() + err.getvalue(), "the token was printed"
    return code, out.getvalue(), err.getvalue()


def summary(tmp_path: Path, text: str) -> str:
    path = tmp_path / "summary.md"
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- GitHub --------------------------------------------------------------------------------
def test_github_comment_is_created_after_reading_every_page(api, tmp_path):
    for i in range(5):
        api.add(f"review {i}")
    code, _, err = comment(github_env(api, tmp_path), "--platform", "github",
                           "--body-file", summary(tmp_path, "## Plan\n1 to add"))
    assert code == 0, err
    assert "created comment 6" in err
    gets = [p for m, p in api.requests if m == "GET"]
    assert len(gets) == 3  # 5 comments, 2 per page: followed the Link header twice
    body = api.comments[6]["body"]
    assert body.startswith(PLAN) and "1 to add" in body
    assert "https://github.example/acme/infra/actions/runs/555" in body


def test_github_comment_is_edited_in_place_and_a_quote_of_it_is_left_alone(api, tmp_path):
    api.add("first")
    api.add("second")
    quoted = api.add(f"> {PLAN}\n> old plan\nquoting it")
    ours = api.add(f"{PLAN}\nold plan")
    env = github_env(api, tmp_path)
    code, _, err = comment(env, "--platform", "github", "--body-file",
                           summary(tmp_path, "new plan"))
    assert code == 0, err
    assert f"updated comment {ours}" in err
    assert "new plan" in api.comments[ours]["body"]
    assert "quoting it" in api.comments[quoted]["body"]
    assert ("PATCH", f"/repos/acme/infra/issues/comments/{ours}") in api.requests
    assert len(api.comments) == 4


def test_github_huge_summary_is_cut_to_the_limit_in_utf16_units(api, tmp_path):
    huge = "```diff\n" + "+ resource \U0001f680 changed\n" * 20000  # fence left open
    code, out, err = comment(github_env(api, tmp_path), "--platform", "github",
                             "--body-file", summary(tmp_path, huge), "--output", "json")
    assert code == 0, err
    assert json.loads(out)["data"]["truncated"] is True
    (c,) = api.comments.values()
    assert len(c["body"].encode("utf-16-le")) // 2 <= LIMITS["github"]
    assert c["body"].count("```") % 2 == 0
    assert "truncated" in c["body"]


def test_a_missing_summary_still_gives_a_comment(api, tmp_path):
    code, _, _ = comment(github_env(api, tmp_path), "--platform", "github",
                         "--body-file", str(tmp_path / "nope.md"))
    assert code == 0
    (c,) = api.comments.values()
    assert "wrote no summary" in c["body"]


@pytest.mark.parametrize(("status", "words"), [
    (403, "may not comment on pull request #7 of acme/infra; it needs `pull-requests: write`"),
    (404, "pull request #7 of acme/infra was not found"),
    (422, "rejected the comment (validation failed) (Validation Failed)"),
])
def test_github_api_errors_are_clear_and_fail(api, tmp_path, status, words):
    api.fail["POST"] = status
    code, _, err = comment(github_env(api, tmp_path), "--platform", "github",
                           "--body-file", summary(tmp_path, "plan"))
    assert code == ExitCode.FAILED
    assert f"HTTP {status}" in err and words in err
    assert "POST /repos/acme/infra/issues/7/comments" in err


def test_a_bad_token_is_refused_and_not_printed(api, tmp_path):
    env = github_env(api, tmp_path, GITHUB_TOKEN="ghs_wrong-token-value")
    code, _, err = comment(env, "--platform", "github", "--body-file",
                           summary(tmp_path, "plan"))
    assert code == ExitCode.FAILED
    assert "HTTP 401" in err and "ghs_wrong-token-value" not in err


def test_missing_token_or_pull_request_is_a_usage_error(api, tmp_path):
    env = github_env(api, tmp_path)
    del env["GITHUB_TOKEN"]
    del env["GITHUB_EVENT_PATH"]
    code, _, err = comment(env, "--platform", "github", "--body-file",
                           summary(tmp_path, "plan"))
    assert code == ExitCode.USAGE
    assert "GITOPS_PUSH_GITHUB_TOKEN or GITHUB_TOKEN" in err
    assert "--number" in err
    assert api.requests == []


def test_on_the_default_branch_the_pull_request_is_found_from_the_commit(api, tmp_path):
    sha = "ab" * 20
    env = github_env(api, tmp_path, GITHUB_SHA=sha)
    del env["GITHUB_EVENT_PATH"]
    code, _, err = comment(env, "--platform", "github", "--body-file",
                           summary(tmp_path, "applied"), "--marker", "apply")
    assert code == 0
    assert "no pull/merge request found" in err and not api.comments
    api.commit_prs = [{"number": 7}]
    code, _, err = comment(env, "--platform", "github", "--body-file",
                           summary(tmp_path, "applied"), "--marker", "apply")
    assert code == 0, err
    (c,) = api.comments.values()
    assert c["body"].startswith("<!-- gitops-push-apply -->")


def test_a_next_page_on_another_host_is_not_followed(api):
    """The token must never be sent to a host the Link header names."""
    from gitops_push.run import comment as comment_mod

    client = comment_mod.Client(comment_mod.Target("github", api.url, "acme/infra", "7", TOKEN))

    with pytest.raises(comment_mod.CommentError, match="another host"):
        client._next({"Link": '<https://evil.example/x?page=2>; rel="next"'},
                     f"{api.url}/repos/acme/infra/issues/7/comments")


# -- GitLab --------------------------------------------------------------------------------
def test_gitlab_note_is_created_then_updated_skipping_system_notes(api, tmp_path):
    api.add("Looks good")
    api.add(f"{PLAN}\nfake, but a system note", system=True)
    api.add("added 1 commit", system=True)
    env = gitlab_env(api)
    code, _, err = comment(env, "--platform", "gitlab", "--body-file",
                           summary(tmp_path, "first plan"))
    assert code == 0, err
    assert "created comment 4" in err
    assert [p for m, p in api.requests if m == "GET"] == \
        ["/api/v4/projects/42/merge_requests/3/notes"] * 2  # X-Next-Page followed
    code, _, err = comment(env, "--platform", "gitlab", "--body-file",
                           summary(tmp_path, "second plan"))
    assert code == 0, err
    assert "updated comment 4" in err
    assert "second plan" in api.comments[4]["body"]
    assert len(api.comments) == 4


def test_gitlab_huge_summary_fits_one_note(api, tmp_path):
    code, _, _ = comment(gitlab_env(api), "--platform", "gitlab", "--body-file",
                         summary(tmp_path, "```\n" + "~ change\n" * 200_000))
    assert code == 0
    (c,) = api.comments.values()
    assert len(c["body"]) <= LIMITS["gitlab"]
    assert c["body"].count("```") % 2 == 0


@pytest.mark.parametrize(("status", "words"), [
    (403, "may not comment on merge request !3 of project 42; it needs scope `api`"),
    (404, "merge request !3 of project 42 was not found"),
    (422, "the platform rejected the comment"),
])
def test_gitlab_api_errors_are_clear_and_fail(api, tmp_path, status, words):
    api.add(f"{PLAN}\nold")
    api.fail["PUT"] = status
    code, _, err = comment(gitlab_env(api), "--platform", "gitlab", "--body-file",
                           summary(tmp_path, "plan"))
    assert code == ExitCode.FAILED
    assert f"PUT /api/v4/projects/42/merge_requests/3/notes/1: HTTP {status}" in err
    assert words in err


def test_an_unreachable_api_is_a_clear_failure(tmp_path):
    env = {"CI_API_V4_URL": "http://127.0.0.1:9/api/v4", "CI_PROJECT_ID": "42",
           "CI_MERGE_REQUEST_IID": "3", "GITOPS_PUSH_GITLAB_TOKEN": TOKEN}
    code, _, err = comment(env, "--platform", "gitlab", "--body-file", summary(tmp_path, "x"))
    assert code == ExitCode.FAILED
    assert "cannot reach the gitlab API at 127.0.0.1:9" in err


# -- pure helpers --------------------------------------------------------------------------
def test_fit_keeps_short_bodies_and_marks_long_ones():
    text, cut = fit("gitlab", "short", "<!-- m -->\n", "\nfooter")
    assert (text, cut) == ("<!-- m -->\nshort\nfooter", False)
    text, cut = fit("github", "<details>\n" + "x\n" * 40_000, "<!-- m -->\n", "\nfooter")
    assert cut and text.endswith("\nfooter") and text.count("<details>") == \
        text.count("</details>")


def test_marker_names_are_checked(api, tmp_path):
    assert marker("apply") == "<!-- gitops-push-apply -->"
    code, _, err = comment(gitlab_env(api), "--platform", "gitlab", "--body-file",
                           summary(tmp_path, "x"), "--marker", "Bad Name")
    assert code == ExitCode.USAGE
    assert "--marker: 'Bad Name' must match" in err
    assert api.requests == []
