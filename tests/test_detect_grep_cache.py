"""detect/grep_cache.py and RefIndex.grep: git grep's answer per blob id, so a run greps
only the files it has not seen before, and every answer equals real git grep's."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from conftest import GitRepo

from gitops_push.detect import inputs
from gitops_push.detect.grep_cache import GrepCache
from gitops_push.detect.inputs import RefIndex
from gitops_push.git import Repo

PATTERN = r"module|file[a-z0-9]*[[:space:]]*\("


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    """Each run of gitops-push is a new process: no cache instance survives between."""
    GrepCache._open.clear()
    yield
    GrepCache._open.clear()


def grep(r: GitRepo, calls: list[tuple[str, ...]]) -> set[str]:
    """RefIndex.grep at HEAD, as a new run would do it, recording each git grep."""
    GrepCache._open.clear()
    repo = Repo(r.path)
    real = repo.grep_files

    def spy(sha: str, pattern: str, pathspecs: list[str], *, literal: bool = False) -> list[str]:
        calls.append(tuple(pathspecs))
        return real(sha, pattern, pathspecs, literal=literal)

    repo.grep_files = spy  # type: ignore[method-assign]
    return RefIndex(repo, repo.tree(repo.head())).grep(PATTERN, (".tf",))


def git_grep(r: GitRepo) -> set[str]:
    out = r.git("grep", "-l", "-E", "-e", PATTERN, "HEAD", "--", "*.tf", check=False)
    return {line.removeprefix("HEAD:") for line in out.splitlines()}


FILES = {
    "a/main.tf": 'module "x" {\n  source = "../m"\n}\n',
    "a/vars.tf": 'variable "v" {}\n',
    "b/main.tf": 'locals {\n  p = file ("x.json")\n}\n',
    "m/main.tf": 'output "o" {\n  value = 1\n}\n',
    "m/README.md": "module docs, not Terraform\n",
}


def test_the_first_run_greps_the_commit_and_later_runs_only_new_blobs(
        make_repo: Callable[..., GitRepo], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inputs, "GREP_BY_PATH_LIMIT", 3)  # 4 unknown files: a whole grep
    r = make_repo(FILES)
    calls: list[tuple[str, ...]] = []
    assert grep(r, calls) == git_grep(r) == {"a/main.tf", "b/main.tf"}
    assert calls == [("*.tf",)]

    calls.clear()
    assert grep(r, calls) == {"a/main.tf", "b/main.tf"}
    assert calls == []  # every blob answered from the cache

    r.commit("edit", {"m/main.tf": 'module "y" {\n  source = "../a"\n}\n',
                      "a/main.tf": "# now empty\n", "c/new.tf": "# new\n",
                      "b/copy.tf": FILES["b/main.tf"]})  # a known blob at a new path
    calls.clear()
    assert grep(r, calls) == git_grep(r) == {"m/main.tf", "b/main.tf", "b/copy.tf"}
    assert calls == [("a/main.tf", "c/new.tf", "m/main.tf")]


def test_the_answer_depends_on_content_alone(make_repo: Callable[..., GitRepo]) -> None:
    """No -I: a file git would call binary is searched like any other, so its answer is
    the same whether it comes from the cache or from git, whatever the attributes say."""
    r = make_repo({"bin.tf": b"\x00\x01module", ".gitattributes": "plain.tf binary\n",
                   "plain.tf": "module\n"})
    (r.path / "link.tf").symlink_to("bin.tf")  # git grep does not search symlinks
    r.commit("link")
    for _ in range(2):
        assert grep(r, []) == git_grep(r) == {"bin.tf", "plain.tf"}


def test_an_unreadable_cache_is_ignored_and_rewritten(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo(FILES)
    grep(r, [])
    path = Repo(r.path).git_dir / "gitops-push" / "cache" / "grep.json"
    saved = json.loads(path.read_text())
    assert saved["version"] == 1 and PATTERN in saved["patterns"]
    path.write_text("{not json")
    calls: list[tuple[str, ...]] = []
    assert grep(r, calls) == {"a/main.tf", "b/main.tf"}
    assert calls  # asked git again
    assert json.loads(path.read_text())["patterns"][PATTERN]["hit"]


def test_a_cache_that_cannot_be_read_or_written_only_costs_time(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo(FILES)
    (Repo(r.path).git_dir / "gitops-push" / "cache" / "grep.json").mkdir(parents=True)
    for _ in range(2):
        calls: list[tuple[str, ...]] = []
        assert grep(r, calls) == {"a/main.tf", "b/main.tf"}
        assert calls
