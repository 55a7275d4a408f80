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

The code is split by concern: ``audit_record`` (times, run ids, encoding, ``scrub``,
``interrupted_runs``), ``audit_results`` (the dataclasses handed back),
``audit_reader`` (``TrailReader``: where the trail lives and reading it) and
``audit_verify`` (the checks behind ``verify``). This module holds ``Trail``, which
appends and spools records, and re-exports the public names of the others.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from secrets import token_hex
from typing import Any

from gitops_push.audit.reader import Fetch, Snapshot, TrailReader
from gitops_push.audit.record import (
    CHAIN_FIELDS,
    HEX_RE,
    SecretInRecord,
    SpoolUnwritable,
    digest,
    encode,
    interrupted_runs,
    now_utc,
    parse_time,
    record_time,
    scrub,
)
from gitops_push.audit.results import (
    AppendResult,
    StoredRecord,
    TrailStatus,
    VerifyResult,
)
from gitops_push.audit.verify import check_chain, check_history, check_rewrite
from gitops_push.ci import ENV_SPOOL_DIR
from gitops_push.errors import AuditError, GitopsPushError
from gitops_push.fsutil import atomic_write
from gitops_push.git import commit_tree, hash_object, push, rev, tree_with_file
from gitops_push.git.plumbing import set_ref, update_ref

SKIP_CI = "[skip ci]"
MAX_UNREACHABLE = 3  # fetches failing in a row: origin is down, spool the record
MAX_REJECTED = 3  # pushes refused while origin did not move: a hook or permissions
SPOOL_VERSION = 1

_RUN_ID_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")
_PHASE_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class PendingRecord:
    """A record's commit, built on ``tip`` and not pushed yet (``Trail.pending``)."""

    record: dict[str, Any]
    tip: str | None
    commit: str
    stored: StoredRecord
    refspec: str  # <commit>:<trail ref>
    lease: str  # <trail ref>:<tip>


# -- the trail ----------------------------------------------------------------------------
class Trail(TrailReader):
    """The audit trail of one repository, in the storage ``settings.mode`` selects.

    ``environ`` is read for ``GITOPS_PUSH_SPOOL_DIR`` only; ``secrets`` are values no
    record may contain (see ``scrub``); ``default_branch`` is commit mode's target
    (default: origin/HEAD, else the current branch).
    """

    # -- reading (records, log, last_successful: see TrailReader) -----------------------
    def status(self, current_run_id: str | None = None) -> TrailStatus:
        """Where the trail stands after a fetch: tip, newest record, spool, interrupted runs."""
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
        CLI maps that to exit 6 via ``result.error()``). A secret's value in the record
        is replaced by a marker naming it (``scrub``). Raises SpoolUnwritable when it
        can be neither pushed nor spooled. Notes mode annotates ``commit`` (default: the
        record's ``head``).
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
        rec = scrub(rec, self.secrets)
        plain: dict[str, Any] = json.loads(encode(rec))  # a plain-JSON copy; raises early
        return plain

    def _annotate(self, rec: Mapping[str, Any], commit: str | None) -> str | None:
        if self.mode != "notes":
            return None
        target = commit or rec.get("head")
        if isinstance(target, str) and HEX_RE.fullmatch(target):
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
                fetched = Fetch(True, self._known_tip[0])
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

    def _build(self, snap: Snapshot, rec: Mapping[str, Any], annotate: str | None
               ) -> tuple[str, StoredRecord]:
        """The commit adding ``rec`` on ``snap.tip``, with its chain fields filled in."""
        newest = snap.newest()
        full = {**rec, "seq": 0 if newest is None else newest.seq + 1,
                "prev_sha256": None if newest is None else newest.sha256}
        data = encode(full)
        if annotate is not None:  # notes: append one line to the note on that commit
            path, old_blob = snap.notes.get(annotate, (annotate, ""))
            old = self._read_blobs([old_blob])[old_blob] if old_blob else b""
            additive = not old or old.endswith(b"\n")  # no earlier line changes
            if old and not old.endswith(b"\n"):
                old += b"\n"
            location = f"notes:{annotate}:{len(old.splitlines()) + 1}"
            blob = hash_object(self.repo, old + data)
        else:
            path = location = self._record_path(full, snap.paths)
            additive = path not in snap.paths
            blob = hash_object(self.repo, data)
        tree = tree_with_file(self.repo, snap.tip, path, blob)
        seq = int(full["seq"])
        subject = f"gitops-push audit: {rec.get('command') or 'run'} {rec['run_id']} " \
                  f"{rec['phase']} {SKIP_CI}"
        body = (f"Record: {location}\nRecord-Seq: {seq}\nRecord-SHA256: {digest(data)}\n"
                f"Prev-SHA256: {full['prev_sha256'] or '-'}\n")
        new = commit_tree(self.repo, tree, [snap.tip] if snap.tip else [], f"{subject}\n\n{body}")
        stored = StoredRecord(seq, full["prev_sha256"], digest(data), location, full, data)
        if additive:  # commits never change: the next read of ``new`` needs no git
            self._snapshots[new] = snap.plus(new, stored, path, blob, annotate)
        return new, stored

    def _record_path(self, rec: Mapping[str, Any], taken: set[str]) -> str:
        t = parse_time(rec["run_id"]) or record_time(rec) or datetime.now(timezone.utc)
        base = f"{self.directory + '/' if self.directory else ''}{t:%Y}/{t:%m}/" \
               f"{rec['run_id']}-{rec['phase']}"
        path = f"{base}.json"
        return path if path not in taken else f"{base}-{rec['seq']}.json"

    def _publish(self, new: str, old: str | None) -> tuple[bool, str]:
        """Move the trail ref from ``old`` to ``new``, only if it is still at ``old``."""
        if not self.has_origin:
            return update_ref(self.repo, self.ref, new, old, message="gitops-push audit")
        # a lease, not just a fast-forward: origin rewound past ``old`` (a commit removed
        # on purpose) must not come back as the parent of a record built on a stale tip
        result = push(self.repo, self.remote, [f"{new}:{self.ref}"],
                      leases=[f"{self.ref}:{old or ''}"], timeout=self.network_timeout)
        if result.ok:
            set_ref(self.repo, self.tracking_ref, new)
            return True, ""
        return False, f"{self.remote} refused {self.ref}: {result.detail.strip()}"

    # -- one push together with other refs (lock_batch.RunGate) -------------------------
    def pending(self, record: Mapping[str, Any]) -> PendingRecord | None:
        """The commit that adds ``record`` on the tip this process last saw (fetched
        first when it saw none), for a caller that pushes it in one atomic push with other
        refs; ``published`` then says it landed. None when the record must take the usual
        way (``append``): no origin, records waiting in the spool, origin unreadable.
        Raises like ``append`` for a record holding a secret."""
        if not self.has_origin or self.spooled():
            return None
        rec = self._prepare(record)
        annotate = self._annotate(rec, None)
        if self._known_tip is None:
            fetched = self._fetch()
            if not fetched.ok:
                return None
            self._known_tip = (fetched.tip,)
        tip = self._known_tip[0]
        snap = self._snapshot(tip)
        if snap.find(rec) is not None:
            return None  # already stored (append reports it as such)
        new, stored = self._build(snap, rec, annotate)
        return PendingRecord(rec, tip, new, stored, f"{new}:{self.ref}",
                             f"{self.ref}:{tip or ''}")

    def published(self, pending: PendingRecord) -> AppendResult:
        """``pending`` was pushed: remember the new tip, as ``append`` would."""
        set_ref(self.repo, self.tracking_ref, pending.commit)
        self._known_tip = (pending.commit,)
        return self._stored(pending.record, pending.stored, pending.commit, 1)

    def saw_tip(self) -> None:
        """The tracking ref was just fetched by someone else (one fetch of the trail and
        the locks): build the next record on it."""
        self._known_tip = (rev(self.repo, self.tracking_ref),)

    def forget_tip(self) -> None:
        self._known_tip = None

    @property
    def fetch_refspec(self) -> str:
        return f"+{self.ref}:{self.tracking_ref}"

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
                if not (isinstance(annotate, str) and HEX_RE.fullmatch(annotate)):
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
        snap, fetched = self._load(True, previous=True)
        problems = check_chain(snap) + check_history(
            self.repo, snap.tip, mode=self.mode, directory=self.directory,
            read_blobs=self._read_blobs)
        if fetched is not None and fetched.ok:
            problems += check_rewrite(self.repo, fetched, snap, remote=self.remote,
                                      ref=self.ref, snapshot=self._snapshot)
        return VerifyResult(not problems, len(snap.records), self.mode, self.ref, snap.tip,
                            tuple(problems), tuple(self.warnings))
