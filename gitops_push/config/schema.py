"""Reading validated settings out of YAML nodes, every error naming file:line and key.

Config (config.py) and each engine's own settings (engines/*.py) use this, so
adding an engine adds its keys in its own module with the same error quality.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterable
from typing import Any

import yaml

from gitops_push.config.yamlsafe import line_of, pairs, scalar
from gitops_push.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_LIST = 10_000


def parse_duration(value: Any) -> float | None:
    """``90s``, ``5m``, ``1h``, ``250ms`` or a number of seconds; None if not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    return None


class Section:
    """A YAML mapping under validation.

    ``what`` names it in messages (``stack 'web'``, ``terraform settings``).
    """

    def __init__(self, node: yaml.Node | None, file: str, what: str) -> None:
        self.file = file
        self.what = what
        self.node = node
        self.items: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        if node is None:
            return
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(f"{what} must be a mapping", path=self.where_node(node))
        for k, v in pairs(node, file):
            key = scalar(k, file) if isinstance(k, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise ConfigError(
                    f"{what}: keys must be strings, got {key!r}", path=self.where_node(k)
                )
            self.items[key] = (k, v)

    # -- locations and errors -------------------------------------------------------
    def where_node(self, node: yaml.Node) -> str:
        return f"{self.file}:{line_of(node)}"

    def where(self, key: str | None = None) -> str:
        if key is not None and key in self.items:
            return self.where_node(self.items[key][0])
        if self.node is not None:
            return self.where_node(self.node)
        return self.file

    def error(self, key: str | None, message: str, node: yaml.Node | None = None) -> ConfigError:
        path = self.where_node(node) if node is not None else self.where(key)
        label = f"{self.what}: {key}" if key else self.what
        return ConfigError(f"{label}: {message}", path=path)

    # -- structure ------------------------------------------------------------------
    def only(self, allowed: Iterable[str]) -> Section:
        allowed = list(allowed)
        for key, (knode, _) in self.items.items():
            if key not in allowed:
                import difflib  # only for a misspelt key

                hint = difflib.get_close_matches(key, allowed, n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                choices = ", ".join(sorted(allowed))
                raise ConfigError(
                    f"{self.what}: unknown key {key!r}{extra}; allowed: {choices}",
                    path=self.where_node(knode),
                )
        return self

    def merged_over(self, defaults: Section) -> Section:
        """This section with ``defaults`` filling keys it does not set."""
        merged = Section(None, self.file, self.what)
        merged.node = self.node or defaults.node
        merged.items = {**defaults.items, **self.items}
        return merged

    def has(self, key: str) -> bool:
        return key in self.items

    def keys(self) -> list[str]:
        return list(self.items)

    def value_node(self, key: str) -> yaml.Node | None:
        item = self.items.get(key)
        return item[1] if item else None

    def section(self, key: str, what: str | None = None) -> Section:
        node = self.value_node(key)
        label = what or f"{self.what}: {key}"
        if node is not None and _is_null(node):
            node = None
        return Section(node, self.file, label)

    # -- scalars --------------------------------------------------------------------
    def raw(self, key: str) -> Any:
        node = self.value_node(key)
        if node is None:
            return None
        if not isinstance(node, yaml.ScalarNode):
            return _Composite(node)
        return scalar(node, self.file)

    def str(
        self,
        key: builtins.str,
        default: builtins.str | None = None,
        *,
        required: builtins.bool = False,
        pattern: re.Pattern[builtins.str] | None = None,
        choices: Iterable[builtins.str] | None = None,
    ) -> builtins.str | None:
        if key not in self.items:
            if required:
                raise self.error(None, f"missing required key {key!r}")
            return default
        value = self.raw(key)
        if not isinstance(value, str) or isinstance(value, _Composite):
            raise self.error(key, f"must be a string, got {_kind(value)}", self.value_node(key))
        if choices is not None:
            options = list(choices)
            if value not in options:
                raise self.error(
                    key, f"must be one of {', '.join(options)}; got {value!r}", self.value_node(key)
                )
        if pattern is not None and not pattern.fullmatch(value):
            raise self.error(
                key, f"{value!r} does not match {pattern.pattern}", self.value_node(key)
            )
        return value

    def bool(self, key: builtins.str, default: builtins.bool) -> builtins.bool:
        if key not in self.items:
            return default
        value = self.raw(key)
        if not isinstance(value, bool):
            raise self.error(
                key, f"must be true or false, got {_kind(value)}", self.value_node(key)
            )
        return value

    def int(
        self, key: builtins.str, default: int | None, *, minimum: int | None = None
    ) -> int | None:
        if key not in self.items:
            return default
        value = self.raw(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(key, f"must be an integer, got {_kind(value)}", self.value_node(key))
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}", self.value_node(key))
        return value

    def duration(self, key: builtins.str, default: float | None) -> float | None:
        if key not in self.items:
            return default
        value = self.raw(key)
        seconds = parse_duration(value)
        if seconds is None:
            raise self.error(
                key,
                f"must be a duration like 90s, 5m, 1h or a number of seconds; got {value!r}",
                self.value_node(key),
            )
        return seconds

    def str_list(
        self, key: builtins.str, *, pattern: re.Pattern[builtins.str] | None = None
    ) -> tuple[builtins.str, ...]:
        node = self.value_node(key)
        if node is None or _is_null(node):
            return ()
        if isinstance(node, yaml.ScalarNode):
            raise self.error(key, "must be a list of strings", node)
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(key, "must be a list of strings", node)
        if len(node.value) > MAX_LIST:
            raise self.error(key, f"has {len(node.value)} items; the limit is {MAX_LIST}", node)
        out: list[builtins.str] = []
        for item in node.value:
            value = (
                scalar(item, self.file) if isinstance(item, yaml.ScalarNode) else _Composite(item)
            )
            if not isinstance(value, str) or isinstance(value, _Composite):
                raise self.error(key, f"items must be strings, got {_kind(value)}", item)
            if pattern is not None and not pattern.fullmatch(value):
                raise self.error(key, f"{value!r} does not match {pattern.pattern}", item)
            out.append(value)
        return tuple(out)

    def str_map(
        self,
        key: builtins.str,
        *,
        key_pattern: re.Pattern[builtins.str] | None = None,
        allow_scalars: builtins.bool = True,
    ) -> dict[builtins.str, builtins.str]:
        """A mapping of string keys to scalar values (numbers and booleans become strings)."""
        sub = self.section(key)
        out: dict[builtins.str, builtins.str] = {}
        for k, (knode, vnode) in sub.items.items():
            if key_pattern is not None and not key_pattern.fullmatch(k):
                raise sub.error(k, f"key {k!r} does not match {key_pattern.pattern}", knode)
            if not isinstance(vnode, yaml.ScalarNode):
                raise sub.error(k, "values must be strings", vnode)
            value = scalar(vnode, self.file)
            if isinstance(value, str):
                out[k] = value
            elif allow_scalars and isinstance(value, (int, float, bool)):
                out[k] = str(value).lower() if isinstance(value, bool) else str(value)
            else:
                raise sub.error(k, f"values must be strings, got {_kind(value)}", vnode)
        return out


class _Composite:
    """Stands for a non-scalar where a scalar was expected (for the error message)."""

    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _kind(value: Any) -> str:
    if isinstance(value, _Composite):
        return "a list" if isinstance(value.node, yaml.SequenceNode) else "a mapping"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    return type(value).__name__
