"""config/schema.py: every setting is read through Section, so a bad value names the file,
the line and the key, and an unknown key is refused."""

from __future__ import annotations

import pytest

from gitops_push.config.schema import Section, parse_duration
from gitops_push.config.yamlsafe import compose_all
from gitops_push.errors import ConfigError


def section(text: str) -> Section:
    return Section(compose_all(text, "f.yaml")[0].node, "f.yaml", "settings")


@pytest.mark.parametrize(("value", "seconds"), [("90s", 90.0), ("5m", 300.0), ("1h", 3600.0),
                                                ("250ms", 0.25), (30, 30.0), ("soon", None),
                                                (-1, None), (True, None)])
def test_durations(value: object, seconds: float | None) -> None:
    assert parse_duration(value) == seconds


def test_values_are_read_with_their_types_and_defaults() -> None:
    s = section("name: web\ncount: 3\nwait: 2m\nflag: true\nitems: [a, b]\n")
    assert s.str("name") == "web" and s.int("count", None) == 3
    assert s.duration("wait", None) == 120.0 and s.bool("flag", False) is True
    assert s.str_list("items") == ("a", "b") and s.str("missing", "dflt") == "dflt"


def test_an_unknown_key_is_refused_with_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        section("name: web\nnmae: typo\n").only(["name"])
    assert info.value.path == "f.yaml:2" and "nmae" in info.value.message


def test_a_value_of_the_wrong_type_names_the_key_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        section("name: web\ncount: many\n").int("count", None)
    assert info.value.path == "f.yaml:2" and "count" in info.value.message
