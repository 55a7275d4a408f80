"""Safe YAML loading with file:line errors and bounded time and memory.

Used for gitops-push.yaml, Kubernetes manifests and kustomizations, all of which
merge-request authors control: only safe tags, duplicate keys rejected, alias
expansion ("billion laughs") bounded by a node budget, non-UTF-8 reported by line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from gitops_push.errors import ParseError

try:  # the C loader composes 5-10x faster; both are safe loaders
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

MAX_BYTES = 16 * 1024 * 1024
MAX_NODES = 500_000  # nodes visited per document, aliases counted each time they expand
MAX_DEPTH = 200

_constructor = yaml.constructor.SafeConstructor()


@dataclass(frozen=True)
class Document:
    """One YAML document: its node tree and the 1-based line it starts on."""

    node: yaml.Node
    line: int


def line_of(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def decode(data: bytes, path: str) -> str:
    """UTF-8 decode, naming the line of the first invalid byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ParseError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            path=f"{path}:{line}",
        ) from exc


def _yaml_error(exc: yaml.YAMLError, path: str, text: str = "") -> ParseError:
    problem_mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    # The parser notices a missing ':' or an unclosed quote or bracket only at the next
    # token, often on the next line or at the end of the file; the line to fix is where
    # that key, string or flow collection started (issue 12). Block-structure errors
    # ("while parsing a block mapping") point at the offending token itself.
    mark = problem_mark or context_mark
    if context_mark is not None and (context or "").startswith(
            ("while scanning a", "while parsing a flow")):
        mark = context_mark
        if problem_mark is not None and problem_mark.line != context_mark.line:
            message += f"; noticed on line {problem_mark.line + 1}"
    if mark is not None and text:
        lines = text.splitlines()
        if mark.line < len(lines) and "\t" in lines[mark.line]:
            message += "; the line contains a tab, and YAML does not allow tabs for indentation"
    where = f"{path}:{mark.line + 1}" if mark is not None else path
    return ParseError(message, path=where)


def compose_all(data: bytes | str, path: str, *, max_bytes: int = MAX_BYTES) -> list[Document]:
    """Parse every document into nodes (no construction yet), with file:line errors."""
    size = len(data.encode() if isinstance(data, str) else data)
    if size > max_bytes:
        raise ParseError(f"file is too large ({size} bytes; limit {max_bytes})", path=path)
    text = decode(data, path) if isinstance(data, bytes) else data
    docs: list[Document] = []
    try:
        for node in yaml.compose_all(text, Loader=_Loader):
            if node is not None:
                docs.append(Document(node, line_of(node)))
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, path, text) from exc
    except RecursionError as exc:
        raise ParseError("YAML is nested too deeply", path=path) from exc
    return docs


class _Budget:
    def __init__(self, path: str) -> None:
        self.path = path
        self.left = MAX_NODES

    def spend(self, node: yaml.Node) -> None:
        self.left -= 1
        if self.left < 0:
            raise ParseError(
                f"document expands to more than {MAX_NODES} nodes (alias expansion?)",
                path=f"{self.path}:{line_of(node)}",
            )


def pairs(node: yaml.MappingNode, path: str) -> Iterator[tuple[yaml.ScalarNode, yaml.Node]]:
    """Key/value node pairs of a mapping, rejecting duplicate keys and resolving merges."""
    seen: dict[Any, int] = {}
    for key, value in node.value:
        if key.tag == "tag:yaml.org,2002:merge":
            if isinstance(value, yaml.MappingNode):
                yield from pairs(value, path)
                continue
            if isinstance(value, yaml.SequenceNode):
                for item in value.value:
                    if isinstance(item, yaml.MappingNode):
                        yield from pairs(item, path)
                continue
            raise ParseError("'<<' merge needs a mapping", path=f"{path}:{line_of(key)}")
        if not isinstance(key, yaml.ScalarNode):
            raise ParseError("mapping keys must be plain scalars", path=f"{path}:{line_of(key)}")
        k = scalar(key, path)
        if isinstance(k, (list, dict)):
            raise ParseError("mapping keys must be plain scalars", path=f"{path}:{line_of(key)}")
        if k in seen:
            raise ParseError(
                f"duplicate key {k!r} (first defined on line {seen[k]})",
                path=f"{path}:{line_of(key)}",
            )
        seen[k] = line_of(key)
        yield key, value


def scalar(node: yaml.ScalarNode, path: str) -> Any:
    try:
        return _constructor.construct_object(node)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, path) from exc


def to_python(node: yaml.Node, path: str) -> Any:
    """Construct plain Python data from nodes, within the node and depth budgets."""
    budget = _Budget(path)

    def walk(n: yaml.Node, depth: int) -> Any:
        budget.spend(n)
        if depth > MAX_DEPTH:
            raise ParseError("YAML is nested too deeply", path=f"{path}:{line_of(n)}")
        if isinstance(n, yaml.ScalarNode):
            return scalar(n, path)
        if isinstance(n, yaml.SequenceNode):
            return [walk(item, depth + 1) for item in n.value]
        if isinstance(n, yaml.MappingNode):
            return {walk(k, depth + 1): walk(v, depth + 1) for k, v in pairs(n, path)}
        raise ParseError(f"unsupported YAML node {n.tag}", path=f"{path}:{line_of(n)}")

    return walk(node, 0)


def load_all(data: bytes | str, path: str) -> list[tuple[Any, int]]:
    """Every document as (python value, start line)."""
    return [(to_python(d.node, path), d.line) for d in compose_all(data, path)]
