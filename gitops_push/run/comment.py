"""``gitops-push comment``: keep ONE comment per pull/merge request up to date.

Replaces the inline JavaScript (github-script) and Python heredoc the CI templates
carried (issue 15). The comment is found by a hidden marker, edited in place, and cut
to fit the platform's limit (GitHub 65,536 characters, GitLab notes 1,000,000).
Only the standard library speaks HTTP here: the needed API subset is five calls.
The token is a secret: it goes into one request header and nowhere else.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from gitops_push.errors import ExitCode, GitopsPushError, UserError

LIMITS = {"github": 65536, "gitlab": 1_000_000}
MAX_PAGES = 100  # 10,000 comments: enough for any pull request we should be on
TIMEOUT = 30.0
_NEXT_RE = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
_MARKER_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


class CommentError(GitopsPushError):
    """The platform refused or failed a comment call (HTTP status in ``status``)."""

    exit_code = ExitCode.FAILED
    code = "comment"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Target:
    """The pull or merge request a comment goes to, and how to reach its API."""

    platform: str  # github | gitlab
    api_url: str
    project: str  # GitHub owner/name; GitLab project id or path
    number: str  # pull request number / merge request iid ("" = find it by ``commit``)
    token: str  # never printed
    commit: str = ""


@dataclass(frozen=True)
class CommentResult:
    """What posting the comment did."""

    action: str  # created | updated | skipped (no pull/merge request for the commit)
    comment_id: int | str
    truncated: bool
    length: int
    pages: int


def marker(name: str) -> str:
    if not _MARKER_RE.fullmatch(name):
        raise UserError(f"--marker: {name!r} must match {_MARKER_RE.pattern}")
    return f"<!-- gitops-push-{name} -->"


def _length(platform: str, text: str) -> int:
    # GitHub counts UTF-16 code units (an emoji is two); GitLab counts characters
    return len(text.encode("utf-16-le")) // 2 if platform == "github" else len(text)


def fit(platform: str, body: str, head: str, footer: str) -> tuple[str, bool]:
    """``head + body + footer`` cut to the platform's limit, fences and details closed."""
    from gitops_push.output import truncate_markdown

    limit = LIMITS[platform]
    full = head + body + footer
    if _length(platform, full) <= limit:
        return full, False
    room = limit - _length(platform, head + footer) - 200
    while True:
        cut = truncate_markdown(body, max(room, 0))
        text = head + cut + footer
        over = _length(platform, text) - limit
        if over <= 0:
            return text, True
        room -= over


# -- HTTP ------------------------------------------------------------------------------
Opener = Callable[[urllib.request.Request, float], Any]


def _open(req: urllib.request.Request, timeout: float) -> Any:
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310  # https/loopback URLs


class Client:
    """The API subset: list comments (paged), create, update."""

    def __init__(self, target: Target, *, timeout: float = TIMEOUT,
                 opener: Opener = _open) -> None:
        if not target.api_url.startswith(("https://", "http://")):
            raise UserError(f"--api-url: {target.api_url!r} is not an http(s) URL")
        self.t = target
        self.timeout = timeout
        self.opener = opener
        api = target.api_url.rstrip("/")
        if target.platform == "github":
            self.list_url = f"{api}/repos/{target.project}/issues/{target.number}/comments"
            self.item_url = f"{api}/repos/{target.project}/issues/comments/{{id}}"
            self.what = f"pull request #{target.number} of {target.project}"
        else:
            pid = urllib.parse.quote(target.project, safe="")
            self.list_url = f"{api}/projects/{pid}/merge_requests/{target.number}/notes"
            self.item_url = self.list_url + "/{id}"
            self.what = f"merge request !{target.number} of project {target.project}"

    def _call(self, method: str, url: str, payload: Any = None) -> tuple[Any, Any]:
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310  # http(s)
        req.add_header("Content-Type", "application/json")
        req.add_header("User-Agent", "gitops-push")
        if self.t.platform == "github":
            req.add_header("Authorization", f"Bearer {self.t.token}")
            req.add_header("Accept", "application/vnd.github+json")
            req.add_header("X-GitHub-Api-Version", "2022-11-28")
        else:
            req.add_header("PRIVATE-TOKEN", self.t.token)
        try:
            with self.opener(req, self.timeout) as resp:
                raw = resp.read()
                headers = resp.headers
        except urllib.error.HTTPError as exc:
            raise self._http_error(method, exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            host = urllib.parse.urlsplit(url).netloc
            raise CommentError(f"cannot reach the {self.t.platform} API at {host}: {reason}"
                               ) from None
        try:
            return (json.loads(raw) if raw else None), headers
        except ValueError:
            raise CommentError(f"{method} {self._path(url)}: the {self.t.platform} API "
                               "answered with something that is not JSON") from None

    def _path(self, url: str) -> str:
        return urllib.parse.urlsplit(url).path

    def _http_error(self, method: str, exc: urllib.error.HTTPError) -> CommentError:
        detail = ""
        try:
            body = json.loads(exc.read() or b"null")
            if isinstance(body, dict):
                detail = str(body.get("message") or body.get("error") or "")
        except (ValueError, OSError):
            pass
        from gitops_push.ci import clean

        detail = f" ({clean(detail, 300)})" if clean(detail, 300) else ""
        code = exc.code
        where = f"{method} {self._path(exc.url or '')}"
        if code == 401:
            why = "the token was not accepted (invalid or expired)"
        elif code == 403:
            perm = ("`pull-requests: write` (or `issues: write`) for GITHUB_TOKEN"
                    if self.t.platform == "github" else "scope `api` and role Reporter or higher")
            why = f"the token may not comment on {self.what}; it needs {perm}"
        elif code == 404:
            why = f"{self.what} was not found, or the token cannot see it"
        elif code == 422:
            why = "the platform rejected the comment (validation failed)"
        else:
            why = "the request failed"
        return CommentError(f"{where}: HTTP {code}: {why}{detail}", status=code)

    def comments(self) -> Iterator[tuple[dict[str, Any], int]]:
        """Every comment, oldest first, with the page it was on; follows the paging."""
        query = "per_page=100" + ("&sort=asc&order_by=created_at"
                                  if self.t.platform == "gitlab" else "")
        url: str | None = f"{self.list_url}?{query}"
        page = 0
        while url and page < MAX_PAGES:
            page += 1
            items, headers = self._call("GET", url)
            if not isinstance(items, list):
                raise CommentError(f"GET {self._path(url)}: expected a list of comments")
            for item in items:
                if isinstance(item, dict):
                    yield item, page
            url = self._next(headers, url)

    def _next(self, headers: Any, url: str) -> str | None:
        if self.t.platform == "github":
            m = _NEXT_RE.search(headers.get("Link") or "")
            if not m:
                return None
            nxt, here = urllib.parse.urlsplit(m.group(1)), urllib.parse.urlsplit(url)
            if (nxt.scheme, nxt.netloc) != (here.scheme, here.netloc):  # the token stays
                raise CommentError(f"the next page of comments is on another host "
                                   f"({nxt.netloc}); not following it")
            return m.group(1)
        page = str(headers.get("X-Next-Page") or "").strip()
        if not page.isdigit():
            return None
        return f"{self.list_url}?per_page=100&sort=asc&order_by=created_at&page={page}"

    def number_of_commit(self, sha: str) -> str | None:
        """The pull/merge request a pushed commit came from (apply on the default branch)."""
        api = self.t.api_url.rstrip("/")
        if self.t.platform == "github":
            url = f"{api}/repos/{self.t.project}/commits/{sha}/pulls"
            key = "number"
        else:
            pid = urllib.parse.quote(self.t.project, safe="")
            url = f"{api}/projects/{pid}/repository/commits/{sha}/merge_requests"
            key = "iid"
        items, _ = self._call("GET", url)
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and item.get(key) is not None:
                return str(item[key])
        return None

    def create(self, body: str) -> Any:
        return self._call("POST", self.list_url, {"body": body})[0]

    def update(self, comment_id: Any, body: str) -> Any:
        method = "PATCH" if self.t.platform == "github" else "PUT"
        return self._call(method, self.item_url.format(id=comment_id), {"body": body})[0]


def upsert(target: Target, summary: str, *, name: str = "plan", footer: str = "",
           opener: Opener = _open, timeout: float = TIMEOUT) -> CommentResult:
    """Edit the comment carrying our marker, or create it; returns what was done."""
    mark = marker(name)
    if target.platform not in LIMITS:
        raise UserError(f"--platform: {target.platform!r} is not github or gitlab")
    body, truncated = fit(target.platform, summary, mark + "\n", footer)
    client = Client(target, timeout=timeout, opener=opener)
    if not target.number:
        number = client.number_of_commit(target.commit) if target.commit else None
        if number is None:
            return CommentResult("skipped", "", truncated, _length(target.platform, body), 0)
        client = Client(replace(target, number=number), timeout=timeout, opener=opener)
    found: dict[str, Any] | None = None
    pages = 0
    for item, page in client.comments():
        pages = page
        if item.get("system"):  # GitLab's own notes ("added 1 commit")
            continue
        if str(item.get("body") or "").startswith(mark):  # a quote of it is not ours
            found = item
            break
    if found is not None:
        client.update(found.get("id"), body)
        return CommentResult("updated", found.get("id") or "", truncated,
                             _length(target.platform, body), pages)
    created = client.create(body)
    cid = created.get("id") if isinstance(created, dict) else ""
    return CommentResult("created", cid or "", truncated, _length(target.platform, body),
                         pages)


__all__ = ["LIMITS", "CommentError", "CommentResult", "Target", "fit", "marker", "upsert"]
