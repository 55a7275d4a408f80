"""config/yamlsafe.py: YAML read safely (no tags, bounded size and nesting), every error
located as file:line."""

from __future__ import annotations

import pytest

from gitops_push.config.yamlsafe import compose_all, load_all
from gitops_push.errors import ParseError


def test_documents_come_with_their_start_lines() -> None:
    assert load_all("a: 1\n---\nb: [x]\n", "m.yaml") == [({"a": 1}, 1), ({"b": ["x"]}, 3)]


def test_a_syntax_error_names_file_and_line() -> None:
    with pytest.raises(ParseError) as info:
        load_all("a: 1\nb: [\n", "m.yaml")
    assert (info.value.path or "").startswith("m.yaml:")


def test_python_tags_are_never_constructed() -> None:
    # the tag is ignored: plain data comes back and nothing is called
    assert load_all("x: !!python/object/apply:os.system ['true']\n", "m.yaml") == [
        ({"x": ["true"]}, 1)]
    with pytest.raises(ParseError) as info:  # an unknown scalar tag is a located error
        load_all("x: !custom 3\n", "m.yaml")
    assert info.value.path == "m.yaml:1"


def test_size_is_bounded() -> None:
    with pytest.raises(ParseError, match="too large"):
        compose_all("a: 1\n" * 100, "m.yaml", max_bytes=50)


def test_undecodable_bytes_are_a_located_error() -> None:
    with pytest.raises(ParseError) as info:
        load_all(b"a: \xff\xfe\n", "m.yaml")
    assert (info.value.path or "").startswith("m.yaml")
