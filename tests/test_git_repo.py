"""Opening a repository: found from any subdirectory, and a clear error otherwise. What a
Repo remembers for the run, and when it asks again."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import GitRepo, git

from gitops_push import proc
from gitops_push.errors import GitError
from gitops_push.git import Repo, commit_tree
from gitops_push.git.plumbing import commit_restored, reset_hard


def test_opens_from_a_subdirectory_and_finds_the_root(make_repo: Callable[..., GitRepo]
                                                       ) -> None:
    r = make_repo({"infra/app/main.tf": "", "README.md": "x\n"})
    repo = Repo(r.path / "infra" / "app")
    assert repo.root == r.path.resolve()
    assert repo.git_dir == (r.path / ".git").resolve()
    assert repo.head() == r.head()


def test_a_plain_directory_is_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(GitError, match=r"not a git repository: .*plain"):
        Repo(plain)


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(GitError, match=r"no such directory: .*nowhere"):
        Repo(tmp_path / "nowhere")


def test_a_bare_repository_is_refused(tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    with pytest.raises(GitError, match="bare repository"):
        Repo(bare)


def test_gits_own_reason_is_kept_for_a_broken_repository(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ".git").write_text("gitdir: /nonexistent/elsewhere\n")
    with pytest.raises(GitError, match=r"cannot open the git repository at .*broken: "
                                       r"invalid gitfile format|not a git repository"):
        Repo(broken)


def test_git_dir_and_work_tree_variables_from_the_caller_are_ignored(
        make_repo: Callable[..., GitRepo], tmp_path: Path) -> None:
    r = make_repo({"README.md": "x\n"})
    other = tmp_path / "other.git"
    subprocess.run(["git", "init", "-q", "--bare", str(other)], check=True)
    repo = Repo(r.path, environ={"PATH": "/usr/bin:/bin", "GIT_DIR": str(other),
                                 "GIT_WORK_TREE": "/"})
    assert repo.root == r.path.resolve()


# -- answers remembered for the run (issue 14: every git call costs ~4 ms) -------------------
def spy_git(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every git command gitops-push runs from now on, without ``git -c core.quotepath=off``."""
    calls: list[list[str]] = []
    real = proc.run

    def run(command: Sequence[str | os.PathLike[str]], **kw: Any) -> proc.Result:
        argv = [os.fspath(c) for c in command]
        if argv[0] == "git":
            calls.append([a for a in argv[1:] if a not in ("-c", "core.quotepath=off")])
        return real(command, **kw)

    monkeypatch.setattr(proc, "run", run)
    return calls


def test_head_and_branch_are_asked_once_until_this_repo_moves_head(
        make_repo: Callable[..., GitRepo], monkeypatch: pytest.MonkeyPatch) -> None:
    r = make_repo({"a.txt": "one\n"})
    first = r.head()
    second = r.commit("two", {"a.txt": "two\n"})
    repo = Repo(r.path)
    calls = spy_git(monkeypatch)
    for _ in range(2):
        assert repo.head() == repo.resolve("HEAD") == second and repo.has_commits()
        assert repo.current_branch() == "main"
    assert [c[0] for c in calls] == ["rev-parse", "symbolic-ref"]
    # a rollback commits, a refused push resets: HEAD is asked again after each
    commit_restored(repo, first, ["a.txt"], "restore one")
    assert repo.head() == r.head() not in (first, second)
    reset_hard(repo, second)
    assert repo.head() == second
    repo._run("checkout", "-q", "-b", "other")
    assert repo.current_branch() == "other"


def test_a_missing_commit_is_asked_again_after_a_fetch_and_a_found_one_never(
        make_repo: Callable[..., GitRepo], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    r = make_repo({"a.txt": "one\n"})
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(r.origin), str(other))
    newer = GitRepo(other, r.origin).commit("newer", {"a.txt": "newer\n"}, push=True)
    repo = Repo(r.path)
    calls = spy_git(monkeypatch)
    for _ in range(2):  # not here yet: asked once
        assert not repo.has_commit(newer)
        assert not repo.is_ancestor(r.head(), newer)
    assert len(calls) == 2
    assert repo.fetch()  # may bring it (or deepen a shallow history): ask again
    del calls[:]
    for _ in range(2):
        assert repo.has_commit(newer)
        assert repo.is_ancestor(r.head(), newer)
        assert not repo.is_ancestor(newer, r.head())  # a no about two present commits
    assert [c[0] for c in calls] == ["cat-file", "merge-base", "merge-base"]
    assert repo.is_ancestor("HEAD", newer)  # a ref is never remembered: it can move
    assert repo.is_ancestor("HEAD", newer)
    assert len(calls) == 5


def test_commits_ask_git_for_an_identity_only_when_it_has_none(
        make_repo: Callable[..., GitRepo], monkeypatch: pytest.MonkeyPatch) -> None:
    r = make_repo({"a.txt": "one\n"})
    repo = Repo(r.path)
    calls = spy_git(monkeypatch)
    sha = commit_tree(repo, r.git("rev-parse", "HEAD^{tree}"), [], "as git's identity")
    assert "author Ada Author <ada@example.com>" in r.git("cat-file", "commit", sha)
    assert repo.user() == repo.user() == "Carl Committer <carl@example.com>"
    assert [c[0] for c in calls] == ["commit-tree", "var"]  # var: for user(), once


def test_a_repo_without_an_identity_commits_as_gitops_push(
        make_repo: Callable[..., GitRepo], monkeypatch: pytest.MonkeyPatch) -> None:
    r = make_repo({"a.txt": "one\n"})
    r.git("config", "user.useConfigOnly", "true")  # no guessing from the host name
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_AUTHOR_",
                                                                         "GIT_COMMITTER_"))}
    repo = Repo(r.path, environ)
    tree = r.git("rev-parse", "HEAD^{tree}")
    calls = spy_git(monkeypatch)
    first = commit_tree(repo, tree, [], "first")
    second = commit_tree(repo, tree, [first], "second")
    for sha in (first, second):
        assert "committer gitops-push <gitops-push@localhost>" in r.git("cat-file", "commit", sha)
    # tried as git's identity, refused, git asked (the author fails first), then as
    # gitops-push; the next commit goes straight to gitops-push
    assert [c[0] for c in calls] == ["commit-tree", "var", "commit-tree", "commit-tree"]
    assert repo.user() == ""


def test_remotes_and_their_urls_come_from_one_git_call_as_git_remote_get_url_gives_them(
        make_repo: Callable[..., GitRepo], monkeypatch: pytest.MonkeyPatch) -> None:
    r = make_repo({"a.txt": "one\n"})
    r.git("config", "url.https://git.example.com/.insteadOf", "ex:")
    r.git("remote", "add", "short", "ex:acme/infra.git")
    r.git("remote", "add", "spaced", "/srv/a path/infra.git")
    r.git("config", "remote.nourl.fetch", "+refs/heads/*:refs/remotes/nourl/*")
    repo = Repo(r.path)
    calls = spy_git(monkeypatch)
    for name in ("origin", "short", "spaced", "nourl", "missing"):
        res = subprocess.run(["git", "remote", "get-url", name], cwd=r.path,
                             capture_output=True, text=True)
        assert repo.remote_url(name) == (res.stdout.strip() if res.returncode == 0 else None)
        assert repo.has_remote(name) is (name != "missing")
    assert repo.remote_url("short") == "https://git.example.com/acme/infra.git"
    assert calls == [["remote", "-v"]]
