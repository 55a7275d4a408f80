"""Tables for people (stdout) and the short messages around them (stderr)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gitops_push.output.console import err_console, out_console, visible
from gitops_push.output.envelope import verify_data
from gitops_push.run.model import Result
from gitops_push.run.serialize import counts_data

if TYPE_CHECKING:
    from gitops_push.audit.results import VerifyResult
    from gitops_push.detect.changes import ChangeSet
    from gitops_push.init import InitResult
    from gitops_push.run.model import RunReport

def reason_text(reasons: Sequence[Any], note: str, limit: int = 3) -> str:
    parts = [str(r) for r in reasons[:limit]]
    if len(reasons) > limit:
        parts.append(f"(+{len(reasons) - limit} more)")
    if not parts and note:
        parts.append(note)
    return "\n".join(visible(p) for p in parts)


def changeset_table(cs: ChangeSet) -> None:
    from rich.table import Table
    from rich.text import Text

    con = out_console()
    if not cs.stacks:
        err_console().print(f"No stack changed between {_short(cs.range.base)} and "
                            f"{_short(cs.range.head)}.")
        return
    table = Table(title=Text(f"Stacks changed {_short(cs.range.base)}..{_short(cs.range.head)}"))
    for col in ("stack", "type", "status", "wave", "reason"):
        table.add_column(col, overflow="fold")
    for c in cs.stacks:
        table.add_row(Text(visible(c.stack.name)), Text(c.stack.type), Text(c.status),
                      Text(str(c.wave)), Text(reason_text(c.reasons, c.note)))
    con.print(table)


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "(none)"


def report_table(report: RunReport) -> None:
    from rich.table import Table
    from rich.text import Text

    for note in report.notes:
        err_console().print(visible(note))
    if not report.outcomes:
        return
    table = Table(title=Text(f"gitops-push {report.command} · {report.head[:12]}"))
    for col in ("stack", "type", "wave", "result", "+", "~", "-", "±", "time", "detail"):
        table.add_column(col, overflow="fold",
                         justify="right" if col in "+~-±" or col == "time" else "left")
    for o in report.outcomes:
        c = counts_data(o) or {}
        table.add_row(
            Text(visible(o.name)), Text(visible(o.type)), Text(str(o.wave)),
            Text(o.result, style="green" if o.ok else "red"),
            *(Text(str(c.get(k, "")) if c else "") for k in ("add", "change", "destroy",
                                                              "replace")),
            Text(f"{o.duration:.1f}s"), Text(visible(o.message)[:300]),
        )
    out_console().print(table)
    for o in report.outcomes:
        if o.error and not o.ok and o.result != Result.SKIPPED:
            err_console().print(Text(f"{visible(o.name)}:\n" + "\n".join(
                "  " + visible(line) for line in o.error.splitlines()[-30:]), style="red"))


def _plain_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
                 blank: str = "-") -> None:
    """A titled table of plain values (markup-escaped; None and "" shown as ``blank``)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title))
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(Text(visible(str(v or blank))) for v in row))
    out_console().print(table)


def audit_table(entries: Sequence[Mapping[str, Any]]) -> None:
    if not entries:
        err_console().print("The audit trail is empty.")
        return
    _plain_table(
        "gitops-push audit log",
        ("finished", "run", "command", "commit", "actor", "outcome", "stacks"),
        ((e.get("finished_at") or e.get("started_at"),
          f"{e.get('deployment_id')} ({len(e['runs'])} jobs)" if e.get("runs")
          else e.get("run_id"), e.get("command"),
          str(e.get("head") or "")[:12], e.get("actor"), e.get("outcome") or e.get("phase"),
          ", ".join(f"{s.get('name')}:{s.get('result')}" for s in e.get("stacks") or []
                    if isinstance(s, Mapping)))
         for e in entries),
        blank="")


def verify_text(result: VerifyResult) -> None:
    data = verify_data(result)
    if data["ok"]:
        err_console().print(f"audit trail OK: {data['records']} record(s), hash chain intact, "
                            "history append-only", style="green")
    else:
        for p in data["problems"]:
            err_console().print("✗ " + visible(p), style="red")


def status_table(rows: Sequence[Mapping[str, Any]]) -> None:
    _plain_table(
        "gitops-push status", ("stack", "type", "deployed", "when", "by", "state"),
        ((r["name"], r["type"], str(r.get("deployed_commit") or "")[:12], r.get("deployed_at"),
          r.get("deployed_by"), r.get("state")) for r in rows))


def locks_table(rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        err_console().print("no stack is locked")
        return
    _plain_table(
        "gitops-push locks", ("stack", "run", "by", "pipeline", "since", "expires", "state"),
        ((r["stack"], r["run_id"], r.get("actor"), r.get("pipeline_url"), r["acquired_at"],
          r["expires_at"], "expired" if r["expired"] else "held") for r in rows))


def init_text(result: InitResult) -> None:
    con = err_console()
    for w in result.written:
        con.print(f"wrote {visible(w)}")
    for k in result.kept:
        con.print(f"kept {visible(k)} as it is (init never rewrites it)")
    con.print(f"found {len(result.stacks)} stack(s): " + ", ".join(
        visible(f"{s['name']} ({s['type']}, {s['path']})") for s in result.stacks))
    con.print("next steps:")
    for i, step in enumerate(result.next_steps, 1):
        con.print(f"  {i}. " + "\n     ".join(visible(x) for x in step.splitlines()))
