"""Verifying the audit trail: the hash chain, grow-only history, and force-push detection.

``Trail.verify`` runs these three checks in order. They are plain functions over a
``Snapshot`` and the repository (the trail's cached blob and snapshot readers are passed
in), so verification can be read and tested apart from the code that appends records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gitops_push.audit.reader import Fetch, Snapshot
from gitops_push.audit.results import Problem, StoredRecord
from gitops_push.errors import ToolError
from gitops_push.git import Repo
from gitops_push.git.history import path_history


def check_chain(snap: Snapshot) -> list[Problem]:
    """Unparsable records, and every seq that is duplicated, missing or badly linked:
    editing or removing a record breaks the link the next record holds."""
    problems = [Problem("invalid", f"{loc} is not a valid audit record: {why}",
                        location=loc) for loc, why in snap.invalid]
    prev: StoredRecord | None = None
    for r in snap.records:
        if prev is not None and r.seq == prev.seq:
            problems.append(Problem("duplicate", f"seq {r.seq} appears twice: {prev.location}"
                                    f" and {r.location}", r.seq, r.location))
            continue
        expected = 0 if prev is None else prev.seq + 1
        if r.seq > expected:
            gap = str(expected) if r.seq == expected + 1 else f"{expected}-{r.seq - 1}"
            after = f"from seq {prev.seq} ({prev.location})" if prev else "from the start"
            problems.append(Problem(
                "missing-link", f"missing link: no record with seq {gap} (the chain jumps "
                f"{after} to seq {r.seq} ({r.location})); a record was removed", expected,
                r.location))
        elif prev is not None and r.prev_sha256 != prev.sha256:
            problems.append(Problem(
                "broken-link", f"broken link between seq {prev.seq} ({prev.location}) and "
                f"seq {r.seq} ({r.location}): seq {r.seq} says the previous record's sha256 "
                f"is {str(r.prev_sha256)[:16]}..., but seq {prev.seq} hashes to "
                f"{prev.sha256[:16]}... (seq {prev.seq} was changed or replaced)",
                prev.seq, prev.location))
        if r.seq == 0 and r.prev_sha256 is not None:
            problems.append(Problem("genesis", f"seq 0 ({r.location}) names a previous "
                                    "record: the start of the trail was removed", 0,
                                    r.location))
        prev = r
    return problems


def history_diffs(repo: Repo, tip: str, *, mode: str, directory: str
                  ) -> list[tuple[str, str, str, str, str]]:
    """(commit, status, path, old blob, new blob) for every commit touching the trail,
    merges against each parent (a merge that drops a record shows as a deletion)."""
    return path_history(repo, tip, directory if mode != "notes" and directory else None)


def check_history(repo: Repo, tip: str | None, *, mode: str, directory: str,
                  read_blobs: Callable[[Iterable[str]], dict[str, bytes]]) -> list[Problem]:
    """Commits up to ``tip`` that edited or deleted a record: the chain alone cannot see
    a change to the newest record, but the trail's history can."""
    if tip is None:
        return []
    diffs = history_diffs(repo, tip, mode=mode, directory=directory)
    if mode != "notes":
        return [Problem("deleted" if st == "D" else "edited",
                        f"commit {c[:12]} {'deleted' if st == 'D' else 'edited'} the record "
                        f"{p}: the trail may only grow", location=p, commit=c)
                for c, st, p, _o, _n in diffs if st != "A"]
    problems: list[Problem] = []
    # notes: a note may only grow by whole lines; a fanout move is a D + A of one object
    pairs: list[tuple[str, str, str, str]] = []  # commit, note, old blob, new blob
    by_commit: dict[str, dict[str, dict[str, tuple[str, str]]]] = {}
    for c, st, p, old, new in diffs:
        by_commit.setdefault(c, {}).setdefault(p.replace("/", ""), {})[st] = (old, new)
    for c, notes in by_commit.items():
        for obj, ch in notes.items():
            if "M" in ch or "T" in ch:
                old, new = ch.get("M") or ch["T"]
                pairs.append((c, obj, old, new))
            elif "D" in ch and "A" in ch:
                pairs.append((c, obj, ch["D"][0], ch["A"][1]))
            elif "D" in ch:
                problems.append(Problem("deleted", f"commit {c[:12]} deleted the note on "
                                        f"{obj[:12]}: the trail may only grow",
                                        location=f"notes:{obj}", commit=c))
    blobs = read_blobs(s for _, _, o, n in pairs for s in (o, n))
    for c, obj, old, new in pairs:
        before, after = blobs[old], blobs[new]
        if not after.startswith(before) or (before and not before.endswith(b"\n")):
            problems.append(Problem("edited", f"commit {c[:12]} changed existing lines of "
                                    f"the note on {obj[:12]}: notes may only be appended to",
                                    location=f"notes:{obj}", commit=c))
    return problems


def check_rewrite(repo: Repo, fetched: Fetch, snap: Snapshot, *, remote: str, ref: str,
                  snapshot: Callable[[str | None], Snapshot]) -> list[Problem]:
    """Records this clone saw at origin before, now gone: a force-push rewrote the
    trail (the only way the newest record can change without a later link)."""
    old = fetched.previous
    if old is None or old == fetched.tip:
        return []
    if fetched.tip is None:
        return [Problem("rewritten", f"{remote} no longer has {ref} (this clone "
                        f"last saw it at {old[:12]}): the trail was deleted", commit=old)]
    if repo.is_ancestor(old, fetched.tip):
        return []
    try:
        seen = snapshot(old)
    except ToolError:
        return []
    now = {r.sha256 for r in snap.records}
    gone = [r for r in seen.records if r.sha256 not in now]
    if not gone:
        return []
    return [Problem("rewritten", f"{remote}'s {ref} was rewritten (force-push): "
                    f"{len(gone)} record(s) this clone saw at {old[:12]} are gone or "
                    f"changed, first seq {gone[0].seq} ({gone[0].location})",
                    gone[0].seq, gone[0].location, old)]


__all__ = ["check_chain", "check_history", "check_rewrite", "history_diffs"]
