"""The commit tree and path resolution (gitops_push/git/tree.py)."""

from __future__ import annotations

from pathlib import PurePosixPath

from hypothesis import given
from hypothesis import strategies as st

from gitops_push.git.tree import Entry, Tree, resolve_in_tree


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
    plain = Tree("t", {"a/main.tf": Entry("100644", "1" * 40)})
    linked = Tree("t", {"a/main.tf": Entry("100644", "1" * 40),
                        "a/link": Entry("120000", "2" * 40)})
    assert not plain.has_symlinks
    assert linked.has_symlinks and linked.is_symlink("a/link")
