"""Opening a repository: found from any subdirectory, and a clear error otherwise."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import GitRepo

from gitops_push.errors import GitError
from gitops_push.git import Repo


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
