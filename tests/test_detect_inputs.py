"""detect/inputs.py, the engine-neutral index of one commit: batched reads and path
resolution that never leaves the repository; what a stack reads is its engine's answer."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import EXAMPLE_FILES, GitRepo

from gitops_push import config, engines
from gitops_push.detect.inputs import RefIndex
from gitops_push.errors import ParseError
from gitops_push.git import Repo


def index(r: GitRepo) -> RefIndex:
    repo = Repo(r.path)
    return RefIndex.of(repo, repo.tree(repo.head()))


def test_one_index_per_commit_is_shared(repo: GitRepo) -> None:
    git_repo = Repo(repo.path)
    tree = git_repo.tree(git_repo.head())
    assert RefIndex.of(git_repo, tree) is RefIndex.of(git_repo, tree)


def test_files_are_read_from_the_commit(repo: GitRepo) -> None:
    repo.write({"shared/policy.json": "changed on disk, not committed\n"})
    assert index(repo).read(["shared/policy.json"]) == {"shared/policy.json": b"{}\n"}


def test_paths_resolve_inside_the_repository_and_escapes_are_refused(repo: GitRepo) -> None:
    ix = index(repo)
    assert ix.resolve("infra/app", "../../modules/svc", "infra/app/main.tf:2") == "modules/svc"
    with pytest.raises(ParseError, match="outside the repository") as info:
        ix.resolve("infra/app", "../../../etc", "infra/app/main.tf:2")
    assert info.value.path == "infra/app/main.tf:2"


def test_symlinks_are_followed_inside_and_refused_outside(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({"real/x.txt": "1\n"})
    (r.path / "link").symlink_to("real")
    (r.path / "out").symlink_to("/etc")
    r.commit("links")
    ix = index(r)
    assert ix.resolve(".", "link/x.txt", "f:1") == "real/x.txt"
    with pytest.raises(ParseError, match="points outside the repository"):
        ix.resolve(".", "out/passwd", "f:1")


def test_each_engine_answers_what_its_stacks_read(repo: GitRepo) -> None:
    cfg = config.parse(EXAMPLE_FILES["gitops-push.yaml"])
    by_name = {s.stack.name: s.stack for s in cfg.stacks}
    ix = index(repo)

    def paths(name: str) -> set[str]:
        stack = by_name[name]
        return {i.path for i in engines.spec(stack.type).inputs(ix, stack.path)}

    assert paths("app") == {"modules/svc", "modules/svc/inner", "shared/policy.json"}
    assert paths("web") == {"k8s/base", "k8s/base/deploy.yaml"}
    assert paths("network") == set()
