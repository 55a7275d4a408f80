"""Commit ids and the refs a user may pass: validated before git sees them, so a ref can
never act as an option or hide control characters."""

from __future__ import annotations

import re

from gitops_push.errors import GitError

ZERO_SHA = re.compile(r"^0+$")
SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|^-|^/|/$|\.lock$|^$")
MAX_REF_LEN = 1024


def check_ref_syntax(ref: str, what: str = "ref") -> None:
    """Reject refs that could act as options or hide control characters."""
    if not ref or len(ref) > MAX_REF_LEN:
        raise GitError(f"{what} must be a non-empty ref or SHA of at most {MAX_REF_LEN} chars")
    if ref.startswith("-"):
        raise GitError(f"{what} {ref!r} looks like an option; refs may not start with '-'")
    if any(ord(c) < 0x20 or c == "\x7f" for c in ref):
        raise GitError(f"{what} contains control characters (newline?): {ref!r}")
    # allow plain names and the common NAME~N / NAME^ forms; reject the rest of git's syntax
    if (
        ref != "HEAD"
        and not SHA_RE.match(ref)
        and _BAD_REF.search(ref)
        and not re.fullmatch(r"[A-Za-z0-9._/\-]+(~\d*|\^\d*)*", ref)
    ):
        raise GitError(f"{what} {ref!r} is not a valid ref name or SHA")
