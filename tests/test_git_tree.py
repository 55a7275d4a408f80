"""The commit tree and path resolution (gitops_push/git/tree.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import PurePosixPath

from conftest import GitRepo
from hypothesis import given
from hypothesis import strategies as st

from gitops_push.git import Repo
from gitops_push.git.tree import Tree, parse_ls_tree, resolve_in_tree


def reference(base_dir: str, target: str) -> str | None:
    """The definition resolve_in_tree must match: POSIX parts, '..' never above the root."""
    if target.startswith("/"):
        return None
    parts = [] if base_dir in ("", ".") else base_dir.split("/")
    for part in PurePosixPath(target).parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts) or "."


SEGMENT = st.sampled_from(["", ".", "..", "a", "b", "mod", "x.tf", " ", "-"])


@given(st.lists(st.sampled_from(["a", "b", "c"]), max_size=3).map("/".join),
       st.lists(SEGMENT, max_size=6).map("/".join))
def test_a_reference_resolves_like_posix_path_parts(base_dir: str, target: str) -> None:
    assert resolve_in_tree(base_dir or ".", target) == reference(base_dir or ".", target)


def test_leaving_the_repository_or_an_absolute_path_is_none() -> None:
    assert resolve_in_tree("infra/app", "../../../x") is None
    assert resolve_in_tree("infra/app", "/etc/passwd") is None
    assert resolve_in_tree("infra/app", "../../modules//m/./") == "modules/m"


def test_a_tree_knows_whether_it_holds_any_symlink() -> None:
    plain = Tree("t", {"a/main.tf": "100644 blob " + "1" * 40})
    linked = Tree("t", {"a/main.tf": "100644 blob " + "1" * 40,
                        "a/link": "120000 blob " + "2" * 40})
    assert not plain.has_symlinks
    assert linked.has_symlinks and linked.is_symlink("a/link")


def test_a_commit_tree_lists_every_file_with_its_mode_and_blob(
        make_repo: Callable[..., GitRepo]) -> None:
    """Names with tabs, spaces or the word "commit", an executable, a symlink and a
    submodule, read from real git: the submodule is not a file of the commit."""
    r = make_repo({"a b/main.tf": "x\n", "tab\there.tf": "t\n", "is commit here/f": "c\n",
                   "run.sh": "#!/bin/sh\n"})
    (r.path / "run.sh").chmod(0o755)
    (r.path / "link").symlink_to("a b/main.tf")
    r.git("update-index", "--add", "--cacheinfo", f"160000,{r.head()},vendor/sub")
    r.commit("more")
    tree = Repo(r.path, {"PATH": os.environ["PATH"]}).tree(r.head())
    expected = {p: r.git("rev-parse", f"HEAD:{p}") for p in
                ("a b/main.tf", "tab\there.tf", "is commit here/f", "run.sh", "link")}
    assert {p: tree.blob(p) for p in tree.listing} == expected
    assert tree.mode("run.sh") == "100755" and tree.mode("a b/main.tf") == "100644"
    assert tree.is_symlink("link") and tree.has_symlinks
    assert not tree.is_file("vendor/sub") and not tree.is_dir("vendor")


def test_an_empty_listing_is_an_empty_tree() -> None:
    assert parse_ls_tree("t", "").listing == {}
