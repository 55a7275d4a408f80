"""Markdown for PR/MR comments and step summaries, rendered from the same report as the
table; every name is escaped so a file name cannot format or inject into a comment."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gitops_push.output.console import visible
from gitops_push.run.serialize import counts_data

if TYPE_CHECKING:
    from gitops_push.run.model import RunReport, StackOutcome

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


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


MARKDOWN_LIMIT = 60_000


def report_markdown(report: RunReport, limit: int = MARKDOWN_LIMIT) -> str:
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
            c = counts_data(o) or {}
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


def _md_details(o: StackOutcome) -> list[str]:
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
