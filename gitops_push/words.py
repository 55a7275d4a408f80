"""The base of the vocabularies results and statuses are written in."""

from __future__ import annotations

from enum import Enum


class Word(str, Enum):
    """A word of a vocabulary: compares, hashes, prints and serialises (JSON envelope,
    audit record) exactly as its string, so records stay byte-identical."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(str.__str__(self), spec)
