"""What a kustomization reads from disk, for change detection and discovery.

An overlay changes when any file in a directory it references (resources, bases,
components, patches, generator files, ...) changes, transitively. Remote
references (URLs, ``github.com/...``) are not files in this repository and are ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gitops_push.config.yamlsafe import load_all
from gitops_push.errors import ParseError

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


@dataclass(frozen=True)
class KustomizeRef:
    """A path a kustomization names, and in which field."""

    field: str  # e.g. "resources", "patches"
    path: str  # as written, relative to the kustomization's directory


def is_remote(ref: str) -> bool:
    lowered = ref.lower()
    return (
        "://" in ref
        or lowered.startswith(("github.com/", "gitlab.com/", "bitbucket.org/", "git@", "ssh:"))
        or "?ref=" in ref
        or "//" in ref.lstrip("/")
    )


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, str):
                yield v


def _generator_files(items: Any) -> Iterator[str]:
    if not isinstance(items, list):
        return
    for gen in items:
        if not isinstance(gen, dict):
            continue
        for f in _strings(gen.get("files")):
            yield f.split("=", 1)[1] if "=" in f else f
        yield from _strings(gen.get("envs"))
        yield from _strings(gen.get("env"))


def references(data: bytes, path: str) -> list[KustomizeRef]:
    docs = load_all(data, path)
    if not docs:
        return []
    doc = docs[0][0]
    if not isinstance(doc, dict):
        raise ParseError("a kustomization must be a mapping", path=path)
    refs: list[KustomizeRef] = []

    def add(field: str, values: Iterator[str]) -> None:
        for v in values:
            if v and not is_remote(v):
                refs.append(KustomizeRef(field, v))

    for key in (
        "resources",
        "bases",
        "components",
        "crds",
        "patchesStrategicMerge",
        "configurations",
        "generators",
        "transformers",
        "validators",
    ):
        add(key, _strings(doc.get(key)))
    for key in ("patches", "patchesJson6902", "replacements"):
        items = doc.get(key)
        if isinstance(items, list):
            add(
                key,
                (
                    i["path"]
                    for i in items
                    if isinstance(i, dict) and isinstance(i.get("path"), str)
                ),
            )
    add("configMapGenerator", _generator_files(doc.get("configMapGenerator")))
    add("secretGenerator", _generator_files(doc.get("secretGenerator")))
    openapi = doc.get("openapi")
    if isinstance(openapi, dict) and isinstance(openapi.get("path"), str):
        add("openapi", iter([openapi["path"]]))
    helm = doc.get("helmGlobals")
    if isinstance(helm, dict) and isinstance(helm.get("chartHome"), str):
        add("helmGlobals", iter([helm["chartHome"]]))
    return refs
