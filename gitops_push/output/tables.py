"""Everything gitops-push shows: rich tables and messages, the JSON envelope, Markdown.

One console for people writes to stderr; data (tables, JSON, Markdown) goes to stdout.
Names from the repository (file names, stack names, tool output) are hostile input:
they are shown literally — never interpreted as rich markup, control characters made
visible — and escaped in Markdown.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from gitops_push.changes import ChangeSet
    from gitops_push.errors import GitopsPushError

SCHEMA_VERSION = 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def visible(text: str) -> str:
    """Control characters (newlines, ESC sequences) shown as escapes, never executed."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def md_escape(text: str) -> str:
    """Escape Markdown and HTML so a file name cannot format or inject into a comment."""
    text = visible(text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(text: str) -> str:
    """Inline code that survives backticks and pipes inside ``text``."""
    text = visible(text).replace("|", "\\|")
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# -- consoles --------------------------------------------------------------------------
def _color(environ: Mapping[str, str], stream: IO[str]) -> bool:
    if environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def err_console(environ: Mapping[str, str] | None = None) -> Console:
    from rich.console import Console

    env = os.environ if environ is None else environ
    return Console(stderr=True, markup=False, highlight=False, emoji=False,
                   no_color=not _color(env, sys.stderr), soft_wrap=True)


# Wide enough for any table: without a terminal (CI logs, a pipe, a file) tables take their
# natural width instead of rich's 80 columns, so a run id or stack name people copy is
# never split over lines (issue 12).
UNWRAPPED_WIDTH = 100_000


def table_width(environ: Mapping[str, str], stream: IO[str]) -> int | None:
    """None (the terminal's width) on an interactive terminal, else unlimited."""
    if environ.get("CI") or not getattr(stream, "isatty", lambda: False)():
        return UNWRAPPED_WIDTH
    return None


def out_console(environ: Mapping[str, str] | None = None) -> Console:
    from rich.console import Console

    env = os.environ if environ is None else environ
    return Console(markup=False, highlight=False, emoji=False,
                   no_color=not _color(env, sys.stdout), soft_wrap=False,
                   width=table_width(env, sys.stdout))


def message(text: str, *, style: str | None = None) -> None:
    err_console().print(visible(text), style=style)


def warn(text: str) -> None:
    err_console().print("warning: " + visible(text), style="yellow")


def error(exc: GitopsPushError | str) -> None:
    text = str(exc)
    err_console().print("error: " + "\n".join(visible(line) for line in text.split("\n")),
                        style="bold red")


# -- the JSON envelope -----------------------------------------------------------------
@dataclass
class Envelope:
    command: str
    exit_code: int = 0
    status: str = "success"  # success | partial | error
    data: Any = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        body = {
            "schema_version": SCHEMA_VERSION,
            "command": self.command,
            "status": self.status,
            "exit_code": self.exit_code,
            "data": self.data,
            "errors": self.errors,
            "warnings": self.warnings,
        }
        return json.dumps(body, sort_keys=True, indent=2, ensure_ascii=False, default=str)


def error_entry(exc: GitopsPushError) -> dict[str, Any]:
    return {"code": exc.code, "message": str(exc) if exc.path is None else exc.message,
            "path": exc.path}


def print_json(envelope: Envelope) -> None:
    sys.stdout.write(envelope.to_json() + "\n")
    sys.stdout.flush()


# -- changed ---------------------------------------------------------------------------
def changeset_data(cs: ChangeSet) -> dict[str, Any]:
    return {
        "base": cs.range.base,
        "head": cs.range.head,
        "base_source": cs.range.source,
        "warnings": list(cs.range.warnings),
        "stacks": [
            {
                "name": c.stack.name,
                "path": c.stack.path,
                "type": c.stack.type,
                "status": c.status,
                "wave": c.wave,
                "depends_on": list(c.stack.depends_on),
                "files": list(c.files),
                "reasons": [{"file": r.file, "chain": list(r.chain)} for r in c.reasons],
                "note": c.note,
            }
            for c in cs.stacks
        ],
    }


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


# -- runs (plan / apply / drift) ---------------------------------------------------------
class PlainReporter:
    """Timestamped lines for CI logs: every stack step and tool line, prefixed."""

    def __init__(self, stream: IO[str] | None = None, *, stream_lines: bool = True) -> None:
        import threading

        self.stream = stream or sys.stderr
        self.stream_lines = stream_lines
        self._lock = threading.Lock()

    def _write(self, name: str, text: str) -> None:
        from datetime import datetime, timezone

        stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
        with self._lock:
            self.stream.write(f"{stamp} [{visible(name)}] {visible(text)}\n")
            self.stream.flush()

    def stack_started(self, name: str) -> None:
        self._write(name, "started")

    def stack_step(self, name: str, step: str) -> None:
        self._write(name, step)

    def stack_line(self, name: str, line: str) -> None:
        if self.stream_lines and line.strip():
            self._write(name, line)

    def stack_finished(self, outcome: Any) -> None:
        self._write(outcome.name, f"{outcome.result}: {outcome.message}"
                    + (f" ({outcome.duration:.1f}s)" if outcome.duration else ""))

    def warn(self, text: str) -> None:
        with self._lock:
            self.stream.write("warning: " + visible(text) + "\n")

    def close(self) -> None:
        pass


class LiveReporter(PlainReporter):
    """One live line per running stack (rich) on a terminal; finished stacks scroll above."""

    def __init__(self) -> None:
        super().__init__(stream_lines=False)
        from rich.live import Live

        self.console = err_console()
        self.state: dict[str, str] = {}
        self.live = Live(self._render(), console=self.console, refresh_per_second=8,
                         transient=True)
        self.live.start()

    def _render(self) -> Any:
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        for name, step in self.state.items():
            grid.add_row(Spinner("dots"), Text(visible(name), style="bold"), Text(visible(step)))
        return grid

    def _update(self) -> None:
        self.live.update(self._render())

    def stack_started(self, name: str) -> None:
        with self._lock:
            self.state[name] = "starting"
            self._update()

    def stack_step(self, name: str, step: str) -> None:
        with self._lock:
            self.state[name] = step
            self._update()

    def stack_line(self, name: str, line: str) -> None:
        if line.strip():
            with self._lock:
                step = self.state.get(name, "").split(" · ")[0]
                self.state[name] = f"{step} · {line.strip()[:80]}"
                self._update()

    def stack_finished(self, outcome: Any) -> None:
        from rich.text import Text

        with self._lock:
            self.state.pop(outcome.name, None)
            style = "green" if outcome.ok else ("yellow" if outcome.result in (
                "skipped", "drifted") else "red")
            self.console.print(Text(f"{_mark(outcome)} {visible(outcome.name)}: "
                                    f"{visible(outcome.result)} — {visible(outcome.message)}",
                                    style=style))
            self._update()

    def close(self) -> None:
        self.live.stop()


def _mark(outcome: Any) -> str:
    return "✓" if outcome.ok else ("•" if outcome.result in ("skipped", "drifted") else "✗")


def reporter(environ: Mapping[str, str] | None = None, *, quiet: bool = False) -> PlainReporter:
    env = os.environ if environ is None else environ
    if sys.stderr.isatty() and not env.get("CI") and not quiet:
        return LiveReporter()
    return PlainReporter()


def _counts(o: Any) -> dict[str, int] | None:
    result = o.apply or o.plan
    if result is None:
        return None
    c = result.counts
    return {"add": c.add, "change": c.change, "destroy": c.destroy, "replace": c.replace}


def outcome_data(o: Any) -> dict[str, Any]:
    plan = o.plan
    data: dict[str, Any] = {
        "name": o.name, "type": o.type, "path": o.path, "wave": o.wave, "status": o.status,
        "result": o.result, "ok": o.ok, "message": o.message, "error": o.error,
        "duration_s": round(o.duration, 3), "counts": _counts(o),
        "changes": [{"address": c.address, "action": c.action, "fields": list(c.fields)}
                    for c in (plan.changes if plan else ()) if c.action != "no-op"],
        "outputs": [{"name": x.name, "action": x.action, "sensitive": x.sensitive}
                    for x in (plan.outputs if plan else ())],
        "lint": [{"severity": d.severity, "message": d.message, "file": d.file, "line": d.line}
                 for d in (o.lint.diagnostics if o.lint else ())],
        "notes": list(plan.notes) if plan else [],
        "needs_consent": list(plan.needs_consent) if plan else [],
    }
    for key in ("drift", "verify"):
        d = getattr(o, key)
        data[key] = None if d is None else {
            "drifted": d.drifted,
            "items": [{"address": i.address, "kind": i.kind, "fields": list(i.fields)}
                      for i in d.items]}
    return data


def report_data(report: Any) -> dict[str, Any]:
    return {
        "run_id": report.run_id,
        "head": report.head,
        "base": report.base,
        "base_source": report.base_source,
        "interrupted": report.interrupted,
        "stacks": [outcome_data(o) for o in report.outcomes],
        "notes": list(report.notes),
        "audit": report.audit,
    }


def report_envelope(report: Any) -> Envelope:
    errors = [{"code": o.result, "message": o.error or o.message, "path": o.path}
              for o in report.outcomes if not o.ok and o.result != "skipped"]
    return Envelope(report.command, exit_code=int(report.exit_code), status=report.status,
                    data=report_data(report), errors=errors, warnings=list(report.warnings))


def report_table(report: Any) -> None:
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
        c = _counts(o) or {}
        table.add_row(
            Text(visible(o.name)), Text(visible(o.type)), Text(str(o.wave)),
            Text(o.result, style="green" if o.ok else "red"),
            *(Text(str(c.get(k, "")) if c else "") for k in ("add", "change", "destroy",
                                                              "replace")),
            Text(f"{o.duration:.1f}s"), Text(visible(o.message)[:300]),
        )
    out_console().print(table)
    for o in report.outcomes:
        if o.error and not o.ok and o.result != "skipped":
            err_console().print(Text(f"{visible(o.name)}:\n" + "\n".join(
                "  " + visible(line) for line in o.error.splitlines()[-30:]), style="red"))


MARKDOWN_LIMIT = 60_000


def report_markdown(report: Any, limit: int = MARKDOWN_LIMIT) -> str:
    """The PR/MR comment and step summary, from the same data as the table."""
    lines = [
        f"### gitops-push {md_escape(report.command)} · `{report.head[:12]}`",
        "",
    ]
    if not report.outcomes:
        lines += [md_escape(n) for n in report.notes] or ["No stack changed."]
    else:
        lines += ["| stack | result | add | change | destroy | replace | detail |",
                  "|---|---|--:|--:|--:|--:|---|"]
        for o in report.outcomes:
            c = _counts(o) or {}
            cells = [md_code(o.name), ("✅ " if o.ok else "❌ ") + md_escape(o.result),
                     *(str(c.get(k, "")) for k in ("add", "change", "destroy", "replace")),
                     md_escape(o.message[:200])]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for o in report.outcomes:
            details = _md_details(o)
            if details:
                lines += [f"<details><summary>{md_escape(o.name)}: "
                          f"{md_escape(o.result)}</summary>", "", *details, "", "</details>", ""]
    for w in report.warnings:
        lines.append(f"> ⚠️ {md_escape(w)}")
    lines.append(f"\n<sub>run `{md_escape(report.run_id)}`</sub>")
    text = "\n".join(lines) + "\n"
    return truncate_markdown(text, limit)


def _md_details(o: Any) -> list[str]:
    out: list[str] = []
    plan = o.plan
    for c in (plan.changes if plan else ()):
        if c.action in ("no-op", "read"):
            continue
        fields = f" ({', '.join(md_code(f) for f in c.fields[:10])})" if c.fields else ""
        out.append(f"- {md_escape(c.action)} {md_code(c.address)}{fields}")
    for x in (plan.outputs if plan else ()):
        if x.action != "no-op":
            out.append(f"- output {md_code(x.name)}: {md_escape(x.action)}"
                       + (" (sensitive)" if x.sensitive else ""))
    for key in ("drift", "verify"):
        d = getattr(o, key)
        for i in (d.items if d else ()):
            out.append(f"- {key}: {md_escape(i.kind)} {md_code(i.address)}")
    for d in (o.lint.diagnostics if o.lint else ()):
        out.append(f"- {md_escape(d.severity)}: {md_escape(str(d))}")
    if o.error and not o.ok:
        tail = "\n".join(o.error.splitlines()[-20:])
        fence = "```"
        while fence in tail:
            fence += "`"
        out += ["", fence + "text", *(visible(line) for line in tail.splitlines()), fence]
    return out


def truncate_markdown(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    note = "\n\n> ✂️ Summary truncated: see the job log for the full plan.\n"
    cut = text[: limit - len(note)]
    cut = cut[: cut.rfind("\n")] if "\n" in cut else cut
    if cut.count("<details>") > cut.count("</details>"):
        cut += "\n</details>"
    if cut.count("```") % 2:
        cut += "\n```"
    return cut + note


# -- audit, status, init -----------------------------------------------------------------
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


def verify_data(result: Any) -> dict[str, Any]:
    return {
        "ok": bool(result.ok),
        "records": getattr(result, "count", None),
        "problems": [str(p) for p in getattr(result, "problems", [])],
    }


def verify_text(result: Any) -> None:
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


def init_text(result: Any) -> None:
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
