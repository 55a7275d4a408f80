"""The tamper-evident audit trail: one JSON record per run phase, stored in git.

Why git: the deploy history lives next to the code it deployed and inherits the
repository's access control; no database to run. Why a hash chain: anyone who can
push can rewrite git history, but every record names the sha256 of its predecessor
(and a sequence number), so an edited or removed record breaks a link that ``verify``
names. Why plumbing (``hash-object``, a temporary index, ``commit-tree``): records are
committed without touching the CI checkout's working tree or index, and a rejected push
is simply rebuilt on origin's new tip. Why a spool: a record is never lost — if origin
will not take it, it waits on disk and the next run pushes it first.

Storage (``audit.mode``): ``branch`` (default) commits one file per record to a
dedicated branch; ``notes`` appends JSON lines to a git note on the deployed commit;
``commit`` commits the file to the deployed branch itself with ``[skip ci]``.
See docs/audit.md.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import cached_property
from hashlib import sha256
from pathlib import Path
from secrets import token_hex
from typing import Any

from gitops_push.ci import ENV_SPOOL_DIR
from gitops_push.config import AuditSettings
from gitops_push.errors import (
    AuditError,
    AuditInvalid,
    ConfigError,
    GitopsPushError,
    ToolError,
    UserError,
)
from gitops_push.fsutil import atomic_write
from gitops_push.git import (
    NETWORK_TIMEOUT,
    Repo,
    commit_tree,
    hash_object,
    ident_env,
    push,
    rev,
    tree_with_file,
    zero_oid,
)

MODES = ("branch", "notes", "commit")
CHAIN_FIELDS = ("seq", "prev_sha256")
SKIP_CI = "[skip ci]"
MAX_ATTEMPTS = 30  # pushes raced by concurrent runs: refetch, rebuild, retry
MAX_UNREACHABLE = 3  # fetches failing in a row: origin is down, spool the record
MAX_REJECTED = 3  # pushes refused while origin did not move: a hook or permissions
MIN_SECRET_LEN = 4  # as proc.redact: shorter values match too much to mean anything
SPOOL_VERSION = 1

_RUN_ID_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")
_PHASE_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_HEX_RE = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_RUN_TIME_RE = re.compile(r"(\d{8}T\d{6}Z)")


# -- small helpers the runner uses --------------------------------------------------------
def now_utc() -> str:
    """The current UTC time as ISO 8601 with a ``Z`` (the format of every record time)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    """A run id that sorts by start time: ``20261126T101500Z-a1b2c3d4`` (UTC + random)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + token_hex(4)


def parse_time(value: object) -> datetime | None:
    """An aware UTC datetime from ``YYYY-MM-DD``, ISO 8601, or a run id's prefix."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str) or not value:
        return None
    m = _RUN_TIME_RE.match(value)
    text = value.strip()
    try:
        if m:
            parsed = datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ")
        else:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def record_time(record: Mapping[str, Any]) -> datetime | None:
    """When a record's run happened: ``finished_at``, else ``started_at``, else its run id."""
    for key in ("finished_at", "started_at", "run_id"):
        t = parse_time(record.get(key))
        if t is not None:
            return t
    return None


def encode(record: Mapping[str, Any]) -> bytes:
    """The exact stored bytes of a record: sorted compact JSON, UTF-8, one line + newline."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return text.encode("utf-8") + b"\n"


def digest(data: bytes) -> str:
    return sha256(data).hexdigest()


class SecretInRecord(AuditError):
    """A record holds the value of a secret: it is refused and stored nowhere."""

    code = "audit-secret"


class SpoolUnwritable(AuditError):
    """The record could not be pushed *and* could not be spooled; ``record`` holds it."""

    code = "audit-lost"

    def __init__(self, message: str, *, record: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.record = dict(record)


def scrub(record: Mapping[str, Any], secrets: Iterable[str]) -> None:
    """Refuse (raise SecretInRecord) a record with a secret's value in any key or value.

    Defence in depth: the runner only records what it chose to, but a tool's error
    message can quote a credential. The error names the field, never the value.
    """
    needles = sorted({s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LEN})
    if not needles:
        return

    def check(text: str, where: str) -> None:
        if any(s in text for s in needles):
            raise SecretInRecord(
                f"refusing to store the audit record: {where} contains the value of a secret "
                "(nothing was stored or spooled)"
            )

    def walk(value: Any, where: str) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                check(str(k), f"a key in {where or 'the record'}")
                walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")
        elif value is not None and not isinstance(value, bool):
            check(str(value), where or "the record")

    walk(record, "")


def interrupted_runs(
    records: Iterable[Mapping[str, Any]],
    current_run_id: str | None = None,
    *,
    active_run_ids: Iterable[str] = (),
    min_age: timedelta | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """``started`` records whose run never wrote its ``finished`` record.

    A run still in progress looks the same, so these are excluded: the current run,
    runs holding an unexpired stack lock (``active_run_ids``, see ``lock.active_run_ids``),
    runs younger than ``min_age`` when given, and runs a later record already reported
    (its ``interrupted_runs`` field lists them), so each interruption is reported once.
    """
    recs = list(records)
    finished = {r.get("run_id") for r in recs if r.get("phase") == "finished"}
    acknowledged: set[object] = set()
    for r in recs:
        listed = r.get("interrupted_runs")
        if isinstance(listed, list):
            acknowledged.update(x for x in listed if isinstance(x, str))
    skip = finished | acknowledged | set(active_run_ids) | {current_run_id}
    when = now or datetime.now(timezone.utc)
    out: list[dict[str, Any]] = []
    for r in recs:
        rid = r.get("run_id")
        if r.get("phase") != "started" or rid in skip:
            continue
        if min_age is not None:
            t = record_time(r)
            if t is not None and when - t < min_age:
                continue
        skip.add(rid)
        out.append(dict(r))
    return out


# -- results ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredRecord:
    """One record as stored: its exact bytes, their sha256, and where it lives."""

    seq: int
    prev_sha256: str | None
    sha256: str
    location: str  # tree path, or ``notes:<commit>:<line>``
    data: dict[str, Any] = field(compare=False)
    raw: bytes = field(repr=False, compare=False)


@dataclass(frozen=True)
class AppendResult:
    """What happened to one record. ``pushed`` is False only when it was spooled."""

    run_id: str
    phase: str
    pushed: bool  # in the trail: on origin, or in the local ref when there is no origin
    local_only: bool = False  # no origin remote: only this clone has it
    already_present: bool = False  # an identical record was already in the trail
    seq: int | None = None
    sha256: str | None = None
    path: str | None = None  # where it is stored in the trail
    commit: str | None = None  # the trail commit that holds it
    ref: str = ""
    attempts: int = 0
    spool_path: Path | None = None
    reason: str | None = None  # why it was spooled
    flushed: int = 0  # spooled records pushed before this one

    @property
    def message(self) -> str:
        if not self.pushed:
            return (f"audit record {self.run_id} ({self.phase}) was NOT pushed ({self.reason}); "
                    f"it is kept in the spool at {self.spool_path} and the next run pushes "
                    "it first")
        where = "the local ref only (no origin remote)" if self.local_only else "origin"
        verb = "was already in" if self.already_present else "recorded in"
        return f"audit record seq {self.seq} {verb} {self.ref} on {where}: {self.path}"

    def error(self) -> AuditError | None:
        """The exit-6 error for a spooled record (None when it was stored)."""
        if self.pushed:
            return None
        return AuditError(self.message, path=str(self.spool_path) if self.spool_path else None)


@dataclass(frozen=True)
class Deployment:
    """The newest successful deployment of one stack, from the trail."""

    stack: str
    head: str
    run_id: str | None
    command: str | None
    finished_at: str | None
    record: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Problem:
    kind: str  # invalid | genesis | duplicate | missing-link | broken-link | edited | deleted
    #            | rewritten
    message: str
    seq: int | None = None
    location: str | None = None
    commit: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    mode: str
    ref: str
    tip: str | None
    problems: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def error(self) -> AuditInvalid | None:
        if self.ok or self.first is None:
            return None
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return AuditInvalid(f"audit trail invalid: {self.first.message}{more}")


@dataclass(frozen=True)
class TrailStatus:
    mode: str
    ref: str
    remote: str | None
    tip: str | None
    count: int
    last: dict[str, Any] | None
    spooled: tuple[Path, ...]
    interrupted: tuple[str, ...]
    warnings: tuple[str, ...] = ()


@dataclass
class _Snapshot:
    """The trail at one commit of its ref."""

    tip: str | None
    records: list[StoredRecord] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)
    paths: set[str] = field(default_factory=set)
    notes: dict[str, tuple[str, str]] = field(default_factory=dict)  # commit -> (path, blob)

    def newest(self) -> StoredRecord | None:
        return max(self.records, key=lambda r: r.seq, default=None)

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
class _Fetch:
    ok: bool
    tip: str | None
    previous: str | None = None  # the tracking ref before this fetch
    error: str = ""


# -- the trail ----------------------------------------------------------------------------
class Trail:
    """The audit trail of one repository, in the storage ``settings.mode`` selects.

    ``environ`` is read for ``GITOPS_PUSH_SPOOL_DIR`` only; ``secrets`` are values no
    record may contain (see ``scrub``); ``default_branch`` is commit mode's target
    (default: origin/HEAD, else the current branch).
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
        secrets: Iterable[str] = (),
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
        self.secrets = tuple(secrets)
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
        self._snapshots: dict[str, _Snapshot] = {}

    # -- where the trail lives ----------------------------------------------------------
    @cached_property
    def _commit_env(self) -> dict[str, str]:
        return ident_env(self.repo)

    @cached_property
    def has_origin(self) -> bool:
        return self.repo.has_remote(self.remote)

    @cached_property
    def target_branch(self) -> str:
        """Commit mode: the deployed branch the records are committed to."""
        if self._default_branch:
            return self._default_branch
        res = self.repo.run("symbolic-ref", "--quiet", f"refs/remotes/{self.remote}/HEAD",
                            check=False)
        prefix = f"refs/remotes/{self.remote}/"
        if res.returncode == 0 and res.stdout.strip().startswith(prefix):
            return res.stdout.strip()[len(prefix):]
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
    def _fetch(self) -> _Fetch:
        """Bring origin's trail ref into the tracking ref; report what it was before."""
        if not self.has_origin:
            return _Fetch(True, rev(self.repo, self.ref))
        previous = rev(self.repo, self.tracking_ref)
        try:
            res = self.repo.run("fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                                self.remote, f"+{self.ref}:{self.tracking_ref}",
                                check=False, timeout=self.network_timeout)
        except ToolError as exc:
            return _Fetch(False, None, previous, exc.message)
        if res.returncode == 0:
            return _Fetch(True, rev(self.repo, self.tracking_ref), previous)
        if "couldn't find remote ref" in res.stderr:
            return _Fetch(True, None, previous)  # no record was pushed yet
        return _Fetch(False, None, previous, res.tail or f"git fetch exited {res.returncode}")

    def _read_blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        """Blob contents, cached by id: a retry after a lost push race reads only new ones."""
        wanted = list(dict.fromkeys(shas))
        missing = [s for s in wanted if s not in self._blobs]
        if missing:
            self._blobs.update(self.repo.read_blobs(missing))
        return {s: self._blobs.get(s, b"") for s in wanted}

    def _ls_tree(self, tip: str) -> list[tuple[str, str]]:
        spec = ["--", self.directory] if self.mode != "notes" and self.directory else []
        raw = self.repo.run("--literal-pathspecs", "ls-tree", "-r", "-z", tip, *spec).stdout
        out: list[tuple[str, str]] = []
        for item in raw.split("\x00"):
            meta, _, path = item.partition("\t")
            parts = meta.split()
            if len(parts) == 3 and parts[1] == "blob":
                out.append((path, parts[2]))
        return out

    def _snapshot(self, tip: str | None) -> _Snapshot:
        """The trail at commit ``tip``; commits never change, so each is read once."""
        if tip is None:
            return _Snapshot(tip)
        cached = self._snapshots.get(tip)
        if cached is not None:
            return cached
        snap = _Snapshot(tip)
        entries = self._ls_tree(tip)
        blobs = self._read_blobs(sha for _, sha in entries)
        for path, sha in entries:
            if self.mode == "notes":
                obj = path.replace("/", "")
                if not _HEX_RE.fullmatch(obj):
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

    def _parse_into(self, snap: _Snapshot, location: str, raw: bytes) -> None:
        key = (location, raw)  # retries re-read the same trail: parse each record once
        parsed = self._parsed.get(key)
        if parsed is None:
            parsed = self._parsed[key] = _parse(location, raw)
        if isinstance(parsed, str):
            snap.invalid.append((location, parsed))
        else:
            snap.records.append(parsed)

    def _load(self, fetch: bool) -> tuple[_Snapshot, _Fetch | None]:
        fetched = self._fetch() if fetch else None
        if fetched is not None and fetched.ok:
            self._known_tip = (fetched.tip,)
            return self._snapshot(fetched.tip), fetched
        if fetched is not None:
            self.warnings.append(f"could not fetch {self.ref} from {self.remote} "
                                 f"({fetched.error.strip()}); using this clone's copy")
        return self._snapshot(rev(self.repo, self.tracking_ref)), fetched

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

    def status(self, current_run_id: str | None = None) -> TrailStatus:
        snap, _ = self._load(True)
        newest = snap.newest()
        recs = [r.data for r in snap.records]
        return TrailStatus(
            self.mode, self.ref, self.remote if self.has_origin else None, snap.tip,
            len(snap.records), dict(newest.data) if newest else None, tuple(self.spooled()),
            tuple(str(r.get("run_id")) for r in interrupted_runs(recs, current_run_id)),
            tuple(self.warnings),
        )

    # -- appending ----------------------------------------------------------------------
    def append(self, record: Mapping[str, Any], *, commit: str | None = None) -> AppendResult:
        """Store one record, after pushing whatever an earlier run left in the spool.

        Returns ``pushed=False`` with ``spool_path`` when origin would not take it (the
        CLI maps that to exit 6 via ``result.error()``). Raises SecretInRecord for a
        record holding a secret and SpoolUnwritable when it can be neither pushed nor
        spooled. Notes mode annotates ``commit`` (default: the record's ``head``).
        """
        rec = self._prepare(record)
        annotate = self._annotate(rec, commit)
        try:
            flushed = len(self.flush_spool())
        except AuditError as exc:  # keep the order: this record waits behind them
            return self._spool(rec, annotate, f"earlier records are still waiting in the spool:"
                                              f" {exc.message}")
        return replace(self._store(rec, annotate), flushed=flushed)

    def _prepare(self, record: Mapping[str, Any]) -> dict[str, Any]:
        rec = {k: v for k, v in record.items() if k not in CHAIN_FIELDS}
        run_id, phase = rec.get("run_id"), rec.get("phase")
        if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
            raise ValueError(f"audit record: run_id must match {_RUN_ID_RE.pattern}: {run_id!r}")
        if not isinstance(phase, str) or not _PHASE_RE.fullmatch(phase):
            raise ValueError(f"audit record: phase must match {_PHASE_RE.pattern}: {phase!r}")
        scrub(rec, self.secrets)
        plain: dict[str, Any] = json.loads(encode(rec))  # a plain-JSON copy; raises early
        return plain

    def _annotate(self, rec: Mapping[str, Any], commit: str | None) -> str | None:
        if self.mode != "notes":
            return None
        target = commit or rec.get("head")
        if isinstance(target, str) and _HEX_RE.fullmatch(target):
            return target
        return self.repo.head()

    def _store(self, rec: dict[str, Any], annotate: str | None, *, spool: bool = True
               ) -> AppendResult:
        """Fetch, build on the tip, push; on a lost race rebuild on the new tip."""
        if self.mode == "commit" and not self.has_origin and \
                self.repo.current_branch() == self.target_branch:
            reason = (f"commit mode with no origin remote would move the checked-out branch "
                      f"{self.target_branch!r} under the working tree; use audit.mode branch "
                      "for local runs")
            return self._spool(rec, annotate, reason) if spool else self._unstored(rec, reason)
        unreachable = rejected = attempts = 0
        failed_tip: str | None = None
        failed = False
        reason = "no attempt was made"
        while attempts < self.max_attempts:
            attempts += 1
            if attempts > 1:
                cap = min(0.5, 0.05 * 2 ** min(attempts, 4))
                self._sleep(random.uniform(0.05, cap))  # noqa: S311  # jitter, not crypto
            if attempts == 1 and self._known_tip is not None and self.has_origin:
                fetched = _Fetch(True, self._known_tip[0])
            else:
                fetched = self._fetch()
            self._known_tip = None  # used once: a refused push means it is stale
            if not fetched.ok and "cannot lock ref" in fetched.error:
                continue  # another process of this clone is updating the tracking ref
            if not fetched.ok:
                unreachable += 1
                reason = f"cannot fetch {self.ref} from {self.remote}: {fetched.error.strip()}"
                if unreachable >= MAX_UNREACHABLE:
                    break
                continue
            if failed and fetched.tip == failed_tip:  # refused, yet nobody else pushed
                rejected += 1
                if rejected >= MAX_REJECTED:
                    break
            snap = self._snapshot(fetched.tip)
            same = snap.find(rec)
            if same is not None:
                return self._stored(rec, same, fetched.tip, attempts, already=True)
            new, stored = self._build(snap, rec, annotate)
            ok, why = self._publish(new, fetched.tip)
            if ok:
                self._known_tip = (new,) if self.has_origin else None
                return self._stored(rec, stored, new, attempts)
            failed, failed_tip, reason = True, fetched.tip, why
        return self._spool(rec, annotate, reason) if spool else self._unstored(rec, reason)

    def _stored(self, rec: Mapping[str, Any], stored: StoredRecord, commit: str | None,
                attempts: int, *, already: bool = False) -> AppendResult:
        return AppendResult(
            str(rec["run_id"]), str(rec["phase"]), True, local_only=not self.has_origin,
            already_present=already, seq=stored.seq, sha256=stored.sha256,
            path=stored.location, commit=commit, ref=self.ref, attempts=attempts,
        )

    def _unstored(self, rec: Mapping[str, Any], reason: str) -> AppendResult:
        return AppendResult(str(rec["run_id"]), str(rec["phase"]), False, ref=self.ref,
                            reason=reason)

    def _build(self, snap: _Snapshot, rec: Mapping[str, Any], annotate: str | None
               ) -> tuple[str, StoredRecord]:
        """The commit adding ``rec`` on ``snap.tip``, with its chain fields filled in."""
        newest = snap.newest()
        full = {**rec, "seq": 0 if newest is None else newest.seq + 1,
                "prev_sha256": None if newest is None else newest.sha256}
        data = encode(full)
        if annotate is not None:  # notes: append one line to the note on that commit
            path, old_blob = snap.notes.get(annotate, (annotate, ""))
            old = self._read_blobs([old_blob])[old_blob] if old_blob else b""
            if old and not old.endswith(b"\n"):
                old += b"\n"
            location = f"notes:{annotate}:{len(old.splitlines()) + 1}"
            blob = hash_object(self.repo, old + data)
        else:
            path = location = self._record_path(full, snap.paths)
            blob = hash_object(self.repo, data)
        tree = tree_with_file(self.repo, snap.tip, path, blob)
        seq = int(full["seq"])
        subject = f"gitops-push audit: {rec.get('command') or 'run'} {rec['run_id']} " \
                  f"{rec['phase']} {SKIP_CI}"
        body = (f"Record: {location}\nRecord-Seq: {seq}\nRecord-SHA256: {digest(data)}\n"
                f"Prev-SHA256: {full['prev_sha256'] or '-'}\n")
        new = commit_tree(self.repo, tree, [snap.tip] if snap.tip else [], f"{subject}\n\n{body}",
                          self._commit_env)
        return new, StoredRecord(seq, full["prev_sha256"], digest(data), location, full, data)

    def _record_path(self, rec: Mapping[str, Any], taken: set[str]) -> str:
        t = parse_time(rec["run_id"]) or record_time(rec) or datetime.now(timezone.utc)
        base = f"{self.directory + '/' if self.directory else ''}{t:%Y}/{t:%m}/" \
               f"{rec['run_id']}-{rec['phase']}"
        path = f"{base}.json"
        return path if path not in taken else f"{base}-{rec['seq']}.json"

    def _publish(self, new: str, old: str | None) -> tuple[bool, str]:
        """Move the trail ref from ``old`` to ``new``, only if it is still at ``old``."""
        if not self.has_origin:
            res = self.repo.run("update-ref", "-m", "gitops-push audit", self.ref, new,
                                old or zero_oid(new), check=False)
            return res.returncode == 0, res.stderr.strip()
        result = push(self.repo, self.remote, [f"{new}:{self.ref}"],
                      timeout=self.network_timeout)
        if result.ok:
            self.repo.run("update-ref", self.tracking_ref, new, check=False)
            return True, ""
        return False, f"{self.remote} refused {self.ref}: {result.detail.strip()}"

    # -- the spool ----------------------------------------------------------------------
    def spooled(self) -> list[Path]:
        """Spool files, oldest first (their names start with the spool time)."""
        try:
            return sorted(p for p in self.spool_dir.glob("*.json") if not p.name.startswith("."))
        except OSError:
            return []

    def _spool(self, rec: Mapping[str, Any], annotate: str | None, reason: str) -> AppendResult:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.spool_dir / f"{stamp}-{rec['run_id']}-{rec['phase']}.json"
        if path.exists():
            path = path.with_name(f"{path.stem}-{token_hex(3)}.json")
        payload = {"spool_version": SPOOL_VERSION, "spooled_at": now_utc(), "reason": reason,
                   "mode": self.mode, "annotate": annotate, "record": rec}
        try:
            atomic_write(path, json.dumps(payload, indent=2, sort_keys=True) + "\n",
                         what="audit spool file")
        except GitopsPushError as exc:
            raise SpoolUnwritable(
                f"audit record {rec['run_id']} ({rec['phase']}) could not be pushed ({reason}) "
                f"and could not be kept in the spool either ({exc.message}); make "
                f"{self.spool_dir} writable or set {ENV_SPOOL_DIR}",
                record=rec,
            ) from exc
        return AppendResult(str(rec["run_id"]), str(rec["phase"]), False, ref=self.ref,
                            spool_path=path, reason=reason)

    def flush_spool(self) -> list[AppendResult]:
        """Push spooled records, oldest first; raise AuditError naming what is left.

        Idempotent: a record already in the trail (pushed, but its spool file could not
        be deleted) is not pushed twice.
        """
        done: list[AppendResult] = []
        files = self.spooled()
        for i, path in enumerate(files):
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
                rec = self._prepare(payload["record"])
                annotate = payload.get("annotate")
                if not (isinstance(annotate, str) and _HEX_RE.fullmatch(annotate)):
                    annotate = None
                annotate = self._annotate(rec, annotate)
            except (OSError, ValueError, KeyError, TypeError, AttributeError,
                    SecretInRecord) as exc:
                bad = path.with_suffix(".unreadable")
                try:
                    path.replace(bad)
                except OSError:
                    bad = path
                self.warnings.append(f"spool file {path} is unreadable ({exc}); left as {bad}")
                continue
            res = self._store(rec, annotate, spool=False)
            if not res.pushed:
                raise AuditError(f"{len(files) - i} spooled audit record(s) could not be pushed "
                                 f"({res.reason}); they stay in {self.spool_dir}", path=str(path))
            try:
                path.unlink()
            except OSError as exc:
                self.warnings.append(f"pushed spooled record {path} but could not delete it "
                                     f"({exc.strerror}); it will not be pushed twice")
            done.append(replace(res, spool_path=path))
        return done

    # -- verification -------------------------------------------------------------------
    def verify(self) -> VerifyResult:
        """Check the hash chain, that history only ever added records, and that origin's
        ref was not rewritten under this clone. Problems are ordered: chain (by seq),
        history (oldest commit first), rewrite."""
        snap, fetched = self._load(True)
        problems = self._check_chain(snap) + self._check_history(snap.tip)
        if fetched is not None and fetched.ok:
            problems += self._check_rewrite(fetched, snap)
        return VerifyResult(not problems, len(snap.records), self.mode, self.ref, snap.tip,
                            tuple(problems), tuple(self.warnings))

    @staticmethod
    def _check_chain(snap: _Snapshot) -> list[Problem]:
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

    def _diffs(self, tip: str) -> list[tuple[str, str, str, str, str]]:
        """(commit, status, path, old blob, new blob) for every commit touching the trail,
        merges against each parent (a merge that drops a record shows as a deletion)."""
        spec = ["--", self.directory] if self.mode != "notes" and self.directory else []
        commits = self.repo.run("--literal-pathspecs", "rev-list", "--reverse",
                                "--full-history", tip, *spec).stdout
        if not commits.strip():
            return []
        raw = self.repo.run("--literal-pathspecs", "diff-tree", "--stdin", "-r", "-m", "--root",
                            "--no-renames", "--no-abbrev", "--raw", "-z", *spec,
                            input=commits.encode()).stdout
        out: list[tuple[str, str, str, str, str]] = []
        tokens = raw.split("\x00")
        commit, i = "", 0
        while i < len(tokens):
            tok = tokens[i]
            if tok.startswith(":") and i + 1 < len(tokens):
                _m1, _m2, old, new, status = tok[1:].split()
                out.append((commit, status[:1], tokens[i + 1], old, new))
                i += 2
                continue
            if tok.strip():
                commit = tok.split()[0]
            i += 1
        return out

    def _check_history(self, tip: str | None) -> list[Problem]:
        if tip is None:
            return []
        diffs = self._diffs(tip)
        if self.mode != "notes":
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
        blobs = self._read_blobs(s for _, _, o, n in pairs for s in (o, n))
        for c, obj, old, new in pairs:
            before, after = blobs[old], blobs[new]
            if not after.startswith(before) or (before and not before.endswith(b"\n")):
                problems.append(Problem("edited", f"commit {c[:12]} changed existing lines of "
                                        f"the note on {obj[:12]}: notes may only be appended to",
                                        location=f"notes:{obj}", commit=c))
        return problems

    def _check_rewrite(self, fetched: _Fetch, snap: _Snapshot) -> list[Problem]:
        """Records this clone saw at origin before, now gone: a force-push rewrote the
        trail (the only way the newest record can change without a later link)."""
        old = fetched.previous
        if old is None or old == fetched.tip:
            return []
        if fetched.tip is None:
            return [Problem("rewritten", f"{self.remote} no longer has {self.ref} (this clone "
                            f"last saw it at {old[:12]}): the trail was deleted", commit=old)]
        if self.repo.is_ancestor(old, fetched.tip):
            return []
        try:
            seen = self._snapshot(old)
        except ToolError:
            return []
        now = {r.sha256 for r in snap.records}
        gone = [r for r in seen.records if r.sha256 not in now]
        if not gone:
            return []
        return [Problem("rewritten", f"{self.remote}'s {self.ref} was rewritten (force-push): "
                        f"{len(gone)} record(s) this clone saw at {old[:12]} are gone or "
                        f"changed, first seq {gone[0].seq} ({gone[0].location})",
                        gone[0].seq, gone[0].location, old)]


__all__ = [
    "AppendResult",
    "Deployment",
    "Problem",
    "SecretInRecord",
    "SpoolUnwritable",
    "StoredRecord",
    "Trail",
    "TrailStatus",
    "VerifyResult",
    "encode",
    "interrupted_runs",
    "new_run_id",
    "now_utc",
    "parse_time",
    "record_time",
    "scrub",
]
