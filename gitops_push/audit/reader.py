"""Reading the audit trail: where it lives, fetching it, and parsing it into snapshots.

``TrailReader`` is the read side of ``gitops_push.audit.Trail``, which adds appending,
the spool and verification on top. Kept separate so the part every command needs
(``records``, ``log``, ``last_successful``) can be read without the write path. Also
holds ``Snapshot`` (the trail at one commit) and ``Fetch`` (one fetch's outcome), which
the append and verify code build on.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from gitops_push.audit.record import CHAIN_FIELDS, HEX_RE, digest, parse_time, record_time
from gitops_push.audit.results import Deployment, StoredRecord
from gitops_push.ci import ENV_SPOOL_DIR
from gitops_push.config import AuditSettings
from gitops_push.errors import ConfigError, UserError
from gitops_push.git import NETWORK_TIMEOUT, Repo, rev
from gitops_push.git.history import blobs_under
from gitops_push.git.plumbing import fetch_ref

MODES = ("branch", "notes", "commit")
MAX_ATTEMPTS = 30  # pushes raced by concurrent runs: refetch, rebuild, retry

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass
class Snapshot:
    """The trail at one commit of its ref."""

    tip: str | None
    records: list[StoredRecord] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)
    paths: set[str] = field(default_factory=set)
    notes: dict[str, tuple[str, str]] = field(default_factory=dict)  # commit -> (path, blob)

    def newest(self) -> StoredRecord | None:
        return max(self.records, key=lambda r: r.seq, default=None)

    def plus(self, tip: str, record: StoredRecord, path: str, blob: str,
             note: str | None) -> Snapshot:
        """The trail at ``tip``, a commit adding ``record`` as one new file ``path`` (or
        one new last line of the note on commit ``note``) with blob ``blob``: what reading
        ``tip`` would give, without asking git."""
        data = json.loads(record.raw)  # as parsed from the blob, not the caller's dict
        records = sorted([*self.records, replace(record, data=data)],
                         key=lambda r: (r.seq, r.location))
        if note is not None:
            return Snapshot(tip, records, list(self.invalid), set(self.paths),
                            {**self.notes, note: (path, blob)})
        return Snapshot(tip, records, list(self.invalid), self.paths | {path}, dict(self.notes))

    def find(self, record: Mapping[str, Any]) -> StoredRecord | None:
        """An already-stored copy of ``record`` (makes spool flushing idempotent)."""
        for r in self.records:
            if (r.data.get("run_id") == record.get("run_id")
                    and r.data.get("phase") == record.get("phase")
                    and {k: v for k, v in r.data.items() if k not in CHAIN_FIELDS} == record):
                return r
        return None


def _parse(location: str, raw: bytes) -> StoredRecord | str:
    """A stored record, or why it is not one."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return f"not valid JSON ({exc})"
    if not isinstance(data, dict):
        return "not a JSON object"
    seq, prev = data.get("seq"), data.get("prev_sha256")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return "has no valid seq"
    if prev is not None and not (isinstance(prev, str) and _SHA256_RE.fullmatch(prev)):
        return "has no valid prev_sha256"
    return StoredRecord(seq, prev, digest(raw), location, data, raw)


@dataclass(frozen=True)
class Fetch:
    """One fetch of origin's trail ref: the new tip, and what this clone had before."""

    ok: bool
    tip: str | None
    previous: str | None = None  # the tracking ref before this fetch (when asked)
    error: str = ""


class TrailReader:
    """The read side of a trail: its ref, spool location, and the records on it.

    Takes every ``Trail`` constructor argument (see there); the ones only appending
    uses (``secrets``, ``max_attempts``, ``sleep``) are kept for ``Trail``.
    """

    def __init__(
        self,
        repo: Repo,
        settings: AuditSettings | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        spool_dir: Path | str | None = None,
        remote: str = "origin",
        default_branch: str | None = None,
        secrets: Mapping[str, str] | Iterable[str] = (),
        max_attempts: int = MAX_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
        network_timeout: float = NETWORK_TIMEOUT,
    ) -> None:
        self.repo = repo
        self.settings = settings or AuditSettings()
        if self.settings.mode not in MODES:
            raise ConfigError(f"audit.mode must be one of {', '.join(MODES)}, "
                              f"not {self.settings.mode!r}")
        self.mode = self.settings.mode
        self.environ = dict(repo.environ if environ is None else environ)
        self.remote = remote
        self.secrets: Mapping[str, str] | tuple[str, ...] = (
            dict(secrets) if isinstance(secrets, Mapping) else tuple(secrets))
        self.max_attempts = max(1, max_attempts)
        self.network_timeout = network_timeout
        self.warnings: list[str] = []  # non-fatal: stale reads, unreadable spool files
        self._explicit_spool = spool_dir
        self._default_branch = default_branch
        self._sleep = sleep
        self._blobs: dict[str, bytes] = {}
        self._parsed: dict[tuple[str, bytes], StoredRecord | str] = {}
        # origin's tip as this process last saw it (fetched, or pushed by us): the next
        # append builds on it without fetching first, since a push that lost a race is
        # refused and retried from a fresh fetch anyway. One round trip less per record.
        self._known_tip: tuple[str | None] | None = None
        self._snapshots: dict[str, Snapshot] = {}

    # -- where the trail lives ----------------------------------------------------------
    @cached_property
    def has_origin(self) -> bool:
        return self.repo.has_remote(self.remote)

    @cached_property
    def target_branch(self) -> str:
        """Commit mode: the deployed branch the records are committed to."""
        if self._default_branch:
            return self._default_branch
        remote_default = self.repo.remote_head(self.remote)
        if remote_default:
            return remote_default
        current = self.repo.current_branch()
        if current:
            return current
        raise ConfigError("audit.mode commit: cannot tell the deployed branch (no origin/HEAD, "
                          "detached HEAD); set default_branch in gitops-push.yaml")

    @cached_property
    def ref(self) -> str:
        """The trail's ref on origin (and locally when there is no origin)."""
        if self.mode == "notes":
            return self.settings.notes_ref
        branch = self.target_branch if self.mode == "commit" else self.settings.branch
        return f"refs/heads/{branch}"

    @cached_property
    def tracking_ref(self) -> str:
        """Where this clone keeps its copy: origin/<branch>, or the notes ref itself (so
        ``git log --notes=...`` shows the records)."""
        if self.mode == "notes" or not self.has_origin:
            return self.ref
        return f"refs/remotes/{self.remote}/{self.ref[len('refs/heads/'):]}"

    @cached_property
    def directory(self) -> str:
        return self.settings.directory.strip("/") if self.settings.directory not in ("", ".") \
            else ""

    @cached_property
    def spool_dir(self) -> Path:
        """Constructor argument, else $GITOPS_PUSH_SPOOL_DIR (relative: to the repository
        root), else ``<git-dir>/gitops-push/spool`` (outside the working tree)."""
        chosen = self._explicit_spool or self.environ.get(ENV_SPOOL_DIR)
        if not chosen:
            return self.repo.git_dir / "gitops-push" / "spool"
        path = Path(chosen).expanduser()
        return path if path.is_absolute() else self.repo.root / path

    # -- reading ------------------------------------------------------------------------
    def _fetch(self, *, previous: bool = False) -> Fetch:
        """Bring origin's trail ref into the tracking ref; with ``previous``, report what it
        was before (only ``verify`` compares them: one rev-parse less for everyone else)."""
        if not self.has_origin:
            return Fetch(True, rev(self.repo, self.ref))
        before = rev(self.repo, self.tracking_ref) if previous else None
        got = fetch_ref(self.repo, self.remote, self.ref, self.tracking_ref,
                        timeout=self.network_timeout)
        if got.missing:
            return Fetch(True, None, before)  # no record was pushed yet
        if got.ok:
            return Fetch(True, rev(self.repo, self.tracking_ref), before)
        return Fetch(False, None, before, got.detail)

    def _read_blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        """Blob contents, cached by id: a retry after a lost push race reads only new ones."""
        wanted = list(dict.fromkeys(shas))
        missing = [s for s in wanted if s not in self._blobs]
        if missing:
            self._blobs.update(self.repo.read_blobs(missing))
        return {s: self._blobs.get(s, b"") for s in wanted}

    def _ls_tree(self, tip: str) -> list[tuple[str, str]]:
        return blobs_under(self.repo, tip,
                           self.directory if self.mode != "notes" and self.directory else None)

    def _snapshot(self, tip: str | None) -> Snapshot:
        """The trail at commit ``tip``; commits never change, so each is read once."""
        if tip is None:
            return Snapshot(tip)
        cached = self._snapshots.get(tip)
        if cached is not None:
            return cached
        snap = Snapshot(tip)
        entries = self._ls_tree(tip)
        blobs = self._read_blobs(sha for _, sha in entries)
        for path, sha in entries:
            if self.mode == "notes":
                obj = path.replace("/", "")
                if not HEX_RE.fullmatch(obj):
                    continue
                snap.notes[obj] = (path, sha)
                for n, line in enumerate(blobs[sha].splitlines(keepends=True), 1):
                    if line.strip():
                        self._parse_into(snap, f"notes:{obj}:{n}", line)
            elif path.endswith(".json"):
                snap.paths.add(path)
                self._parse_into(snap, path, blobs[sha])
        snap.records.sort(key=lambda r: (r.seq, r.location))
        self._snapshots[tip] = snap
        return snap

    def _parse_into(self, snap: Snapshot, location: str, raw: bytes) -> None:
        key = (location, raw)  # retries re-read the same trail: parse each record once
        parsed = self._parsed.get(key)
        if parsed is None:
            parsed = self._parsed[key] = _parse(location, raw)
        if isinstance(parsed, str):
            snap.invalid.append((location, parsed))
        else:
            snap.records.append(parsed)

    def _load(self, fetch: bool, *, previous: bool = False) -> tuple[Snapshot, Fetch | None]:
        fetched = self._fetch(previous=previous) if fetch else None
        if fetched is not None and fetched.ok:
            self._known_tip = (fetched.tip,)
            return self._snapshot(fetched.tip), fetched
        if fetched is not None:
            self.warnings.append(f"could not fetch {self.ref} from {self.remote} "
                                 f"({fetched.error.strip()}); using this clone's copy")
        return self._snapshot(rev(self.repo, self.tracking_ref)), fetched

    def seen_records(self) -> list[dict[str, Any]] | None:
        """The records at origin's tip as this process last saw it (fetched, or pushed by
        it), without asking where the tracking ref is; None when it saw none."""
        if self._known_tip is None:
            return None
        return [dict(r.data) for r in self._snapshot(self._known_tip[0]).records]

    def stored_records(self, *, fetch: bool = True) -> list[StoredRecord]:
        return self._load(fetch)[0].records

    def records(self, *, fetch: bool = True) -> list[dict[str, Any]]:
        """Every record in trail order (by seq), fetched from origin first when there is one."""
        return [dict(r.data) for r in self.stored_records(fetch=fetch)]

    def log(self, stack: str | None = None, since: str | datetime | None = None
            ) -> list[dict[str, Any]]:
        """One entry per run, oldest first: its ``finished`` record, else its ``started``
        record (a run in progress or interrupted). ``since`` is a date or ISO time."""
        cutoff = None
        if since is not None:
            cutoff = parse_time(since)
            if cutoff is None:
                raise UserError(f"--since: {since!r} is not a date (YYYY-MM-DD) or ISO time")
        runs: dict[object, dict[str, Any]] = {}
        for r in self.records():
            rid = r.get("run_id")
            if r.get("phase") == "finished" or rid not in runs:
                runs[rid] = r
        out = []
        for r in runs.values():
            if stack is not None and not any(
                isinstance(s, Mapping) and s.get("name") == stack for s in r.get("stacks") or []
            ):
                continue
            t = record_time(r)
            if cutoff is not None and (t is None or t < cutoff):
                continue
            out.append(r)
        return out

    def last_successful(self, stack: str, records: Sequence[Mapping[str, Any]] | None = None
                        ) -> Deployment | None:
        """The newest ``finished`` record whose entry for ``stack`` succeeded (result
        ``success``, or ``deployed: true``): the commit to roll back to."""
        for r in reversed(list(self.records() if records is None else records)):
            head = r.get("head")
            if r.get("phase") != "finished" or not isinstance(head, str):
                continue
            for s in r.get("stacks") or []:
                if isinstance(s, Mapping) and s.get("name") == stack and (
                        s.get("result") == "success" or s.get("deployed") is True):
                    return Deployment(stack, head, r.get("run_id"), r.get("command"),
                                      r.get("finished_at"), dict(r))
        return None


__all__ = ["MAX_ATTEMPTS", "MODES", "Fetch", "Snapshot", "TrailReader"]
