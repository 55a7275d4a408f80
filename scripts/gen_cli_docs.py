"""Regenerate the command tables of docs/cli.md from the click definitions.

Run: .venv/bin/python scripts/gen_cli_docs.py  (tests/test_cli_app.py checks the doc is current)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

from gitops_push.cli.app import cli

BEGIN = "<!-- BEGIN GENERATED COMMANDS -->"
END = "<!-- END GENERATED COMMANDS -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def walk(cmd: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from walk(sub, [*path, name])
    else:
        yield path, cmd


def _default(p: click.Option) -> str:
    d = p.default
    if d in (None, False, ()) or "Sentinel" in repr(d):
        return ""
    return f"`{d}`"


def options_table(params: list[click.Parameter]) -> list[str]:
    rows = []
    for p in params:
        if isinstance(p, click.Option):
            flags = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
            envvar = f"`{p.envvar}`" if isinstance(p.envvar, str) else ""
            help_text = (p.help or "").replace("|", "\\|")
            rows.append(f"| {flags} | {envvar} | {_default(p)} | {help_text} |")
        elif isinstance(p, click.Argument) and p.name:
            rows.append(f"| `{p.name.upper()}` (argument) | | | |")
    if not rows:
        return []
    return ["| flag | environment variable | default | meaning |", "|---|---|---|---|", *rows, ""]


def render() -> str:
    out = ["### Global options", "", *options_table(cli.params)]
    for path, cmd in walk(cli, []):
        out += [f"### `gitops-push {' '.join(path)}`", ""]
        text = (cmd.help or "").replace("\b\n", "")
        paras = [p.strip() for p in text.split("\n\n")]
        out += [" ".join(line.strip() for line in p.splitlines()) for p in paras
                if p and not p.startswith("Examples:")]
        out.append("")
        out += options_table(cmd.params)
        examples = [p for p in paras if p.startswith("Examples:")]
        if examples:
            lines = [line.strip() for line in examples[0].splitlines()[1:] if line.strip()]
            out += ["```sh", *lines, "```", ""]
    return "\n".join(out)


def main() -> int:
    doc = DOC.read_text(encoding="utf-8")
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END)
    new = f"{head}{BEGIN}\n{render()}\n{END}{tail}"
    if "--check" in sys.argv:
        return 0 if new == doc else 1
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
