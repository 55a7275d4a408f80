"""The docs name only what exists: every gitops-push command line, flag, choice value,
template name, GITOPS_PUSH_* variable and repository path in docs/*.md and README.md is
checked against the real click command tree, template list and files (issue 12: a doc
told users to redirect a template that does not exist into their workflow file).

Generic on purpose: a new command, doc or template is checked without editing this file.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from gitops_push import cli, init

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

# Long flags the docs mention that belong to git, kubectl or terraform, not gitops-push.
FOREIGN_FLAGS = frozenset({
    "--end-of-options", "--unshallow", "--deepen", "--server-side", "--dry-run=server",
    "--prune", "--kubeconfig", "--context", "--applyset", "--force-with-lease",
    "--field-manager", "--force-conflicts=true", "--no-write-fetch-head", "--atomic",
    "--notes", "--porcelain", "--wait", "--minify", "--client", "--show-managed-fields",
    "--dangerous-override-ownership-of-existing-resources",  # kapp, in kubernetes.md
    "--no-index", "--find-links", "--no-deps",  # pip, in ci.md
})
SHELL_LANGS = frozenset({"sh", "bash", "shell", "zsh"})
YAML_LANGS = frozenset({"yaml", "yml"})
# words after which a command starts (shell operators, YAML keys of CI job scripts)
COMMAND_STARTS = frozenset({";", "&&", "||", "|", "(", "$", "-", "run:", "script:", "then",
                            "do", "exec", "time", "!", "else"})
PLACEHOLDER = "PLACEHOLDER"


@dataclass(frozen=True)
class Mention:
    where: str  # file:line
    tokens: tuple[str, ...]  # after "gitops-push"
    inline: bool = False  # prose (`plan --plan-dir`) may name a flag without its value


# -- reading the docs ---------------------------------------------------------------------
def _lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line number, text, fence language or None outside fences)."""
    lang: str | None = None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = re.match(r"^\s*(```+|~~~+)\s*([\w+-]*)", line)
        if fence:
            lang = None if lang is not None else fence.group(2).lower()
            continue
        yield n, line, lang


def _clean(line: str) -> str:
    line = re.sub(r"\$\{\{.*?\}\}", PLACEHOLDER, line)  # GitHub expressions
    line = re.sub(r"\$\([^()]*\)", PLACEHOLDER, line)  # command substitution
    line = re.sub(r"<[A-Za-z][^<>]*>", PLACEHOLDER, line)  # <placeholders>
    return line.replace("…", "...")


def _tokens(line: str) -> list[str]:
    lex = shlex.shlex(_clean(line), posix=True, punctuation_chars=";&|()<>")
    lex.whitespace_split = True
    lex.commenters = "#"
    return list(lex)


def _is_gitops_push(token: str) -> bool:
    return token.rpartition("/")[2] == "gitops-push"


def _invocations(tokens: list[str]) -> Iterator[tuple[str, ...]]:
    """gitops-push command lines in a shell line, each up to the next operator."""
    for i, tok in enumerate(tokens):
        if not _is_gitops_push(tok):
            continue
        before = [t for t in tokens[:i] if not re.match(r"^[A-Z_][A-Z0-9_]*=", t)]  # VAR=x
        if before and before[-1] not in COMMAND_STARTS:
            continue
        rest: list[str] = []
        for t in tokens[i + 1:]:
            if t in (";", "&&", "||", "|", "&", ">", ">>", "<", "2>", ")", "(", ">&"):
                break
            rest.append(t)
        yield tuple(rest)


def mentions() -> Iterator[Mention]:
    for path in DOCS:
        rel = path.relative_to(ROOT).as_posix()
        pending = ""
        for n, line, lang in _lines(path):
            where = f"{rel}:{n}"
            if lang is None:
                for span in re.findall(r"`([^`\n]+)`", line):
                    yield from _span(where, span)
                continue
            text = pending + line
            if text.rstrip().endswith("\\"):
                pending = text.rstrip()[:-1] + " "
                continue
            pending = ""
            action = re.match(r"^\s*command:\s*([a-z][a-z -]*?)\s*$", text)
            if lang in YAML_LANGS and action:  # the composite action's `command:` input
                yield Mention(where, tuple(action.group(1).split()))
                continue
            if lang not in SHELL_LANGS | YAML_LANGS and not text.lstrip().startswith("$ "):
                continue  # program output, not a command
            if "gitops-push" not in text:
                continue
            try:
                toks = _tokens(text)
            except ValueError as exc:
                yield Mention(where, ("<unparsable>", str(exc)))
                continue
            for inv in _invocations(toks):
                yield Mention(where, inv)


def _span(where: str, span: str) -> Iterator[Mention]:
    """Inline code: ``gitops-push plan --x``, ``plan --x``, ``audit log`` or ``--x``."""
    try:
        toks = _tokens(span)
    except ValueError:
        return
    if not toks:
        return
    cut = [i for i, t in enumerate(toks) if t in (";", "&&", "||", "|", ">", "<")]
    toks = toks[:cut[0]] if cut else toks  # `init --ci github|gitlab`: alternatives
    if not toks:
        return
    if _is_gitops_push(toks[0]):
        yield Mention(where, tuple(toks[1:]), inline=True)
        return
    top = cli.cli.commands.get(toks[0])
    if top is None:
        return
    second = toks[1] if len(toks) > 1 else ""
    if (isinstance(top, click.Group) and re.fullmatch(r"[a-z][a-z-]*", second)) or any(
            t.startswith("--") for t in toks[1:]):
        yield Mention(where, tuple(toks), inline=True)


# -- checking against the CLI ---------------------------------------------------------------
def _is_placeholder(value: str) -> bool:
    return (PLACEHOLDER in value or value.startswith("$") or value in ("...", "-")
            or bool(re.fullmatch(r"[A-Z][A-Z0-9_\-]*", value)))


def _option(cmd: click.Command, name: str) -> click.Option | None:
    for p in cmd.params:
        if isinstance(p, click.Option) and name in (*p.opts, *p.secondary_opts):
            return p
    return None


def check(tokens: tuple[str, ...], *, inline: bool = False) -> list[str]:
    """Problems with one ``gitops-push ...`` command line."""
    if tokens[:1] == ("<unparsable>",):
        return [f"cannot tokenize: {tokens[1]}"]
    cmd: click.Command = cli.cli
    path: list[str] = []
    positionals: list[str] = []
    problems: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        label = "gitops-push " + " ".join(path) if path else "gitops-push"
        if tok == "...":
            continue
        if tok.startswith("-") and tok != "-":
            name, eq, value = tok.partition("=")
            if name in ("-h", "--help") or (name == "--version" and not path):
                continue
            if re.fullmatch(r"-[A-Za-z]{2,}", name):  # -vv
                if any(_option(cmd, f"-{c}") is None for c in name[1:]):
                    problems.append(f"{label}: no option {name}")
                continue
            opt = _option(cmd, name)
            if opt is None:
                problems.append(f"{label}: no option {name}")
                continue
            if opt.is_flag or opt.count:
                continue
            if not eq:
                if i >= len(tokens):
                    if not inline:
                        problems.append(f"{label}: {name} needs a value")
                    break
                value = tokens[i]
                i += 1
            if isinstance(opt.type, click.Choice) and not _is_placeholder(value) and (
                    value not in opt.type.choices):
                problems.append(f"{label}: {name} {value!r} is not one of "
                                f"{', '.join(map(str, opt.type.choices))}")
            continue
        if isinstance(cmd, click.Group):
            sub = cmd.commands.get(tok)
            if sub is None:
                problems.append(f"{label}: no command {tok!r}")
                break
            cmd = sub
            path.append(tok)
            continue
        positionals.append(tok)
    arguments = [p for p in cmd.params if isinstance(p, click.Argument)]
    if len(positionals) > len(arguments):
        problems.append(f"gitops-push {' '.join(path)}: unexpected argument(s) "
                        f"{positionals[len(arguments):]}")
    if path == ["templates", "show"] and positionals and not _is_placeholder(positionals[0]):
        known = [n for n, _ in init.list_templates()]
        if positionals[0] not in known:
            problems.append(f"no template {positionals[0]!r}; templates: {', '.join(known)}")
    return problems


def all_options() -> set[str]:
    out: set[str] = {"--help", "--version"}

    def walk(cmd: click.Command) -> None:
        for p in cmd.params:
            if isinstance(p, click.Option):
                out.update(o for o in (*p.opts, *p.secondary_opts) if o.startswith("--"))
        if isinstance(cmd, click.Group):
            for sub in cmd.commands.values():
                walk(sub)

    walk(cli.cli)
    return out


def envvars() -> set[str]:
    out: set[str] = set()

    def walk(cmd: click.Command) -> None:
        for p in cmd.params:
            if isinstance(p.envvar, str):
                out.add(p.envvar)
        if isinstance(cmd, click.Group):
            for sub in cmd.commands.values():
                walk(sub)

    walk(cli.cli)
    return out


# -- the tests ------------------------------------------------------------------------------
def test_the_docs_mention_gitops_push_command_lines() -> None:
    """The extractor finds the documented commands at all (so the test below can fail)."""
    found = {m.tokens[0] for m in mentions() if m.tokens}
    assert {"plan", "apply", "drift", "rollback", "changed", "templates"} <= found
    assert any(m.where.startswith("docs/ci.md") and m.tokens == ("drift",) and not m.inline
               for m in mentions())  # `command: drift` of the composite action


@pytest.mark.parametrize("bad", [
    ("templates", "show", "github/apply.yml"),
    ("plan", "--lock-timeout", "1m"),
    ("audit", "show"),
    ("changed", "--output", "yaml"),
    ("locks", "break", "a", "b"),
])
def test_the_checker_catches_what_drifted_before(bad: tuple[str, ...]) -> None:
    assert check(bad)


def test_every_documented_command_line_runs_against_the_real_cli() -> None:
    problems = [f"{m.where}: gitops-push {' '.join(m.tokens)}: {p}"
                for m in mentions() for p in check(m.tokens, inline=m.inline)]
    assert problems == []


def test_every_flag_named_alone_exists() -> None:
    known = all_options()
    problems = []
    for path in DOCS:
        rel = path.relative_to(ROOT).as_posix()
        for n, line, lang in _lines(path):
            if lang is not None:
                continue
            for flag in re.findall(r"`(--[a-z][a-z0-9-]*(?:=[^`\s]*)?)[^`]*`", line):
                name = flag.partition("=")[0]
                if name not in known and flag not in FOREIGN_FLAGS and (
                        name not in FOREIGN_FLAGS):
                    problems.append(f"{rel}:{n}: {flag} is no gitops-push flag (a git, kubectl "
                                    "or terraform flag? add it to FOREIGN_FLAGS)")
    assert problems == []


def test_every_gitops_push_variable_named_exists() -> None:
    known = envvars()
    sources = "\n".join(p.read_text(encoding="utf-8", errors="replace")
                        for pattern in ("gitops_push/**/*.py", "ci-templates/**/*")
                        for p in ROOT.glob(pattern) if p.is_file())
    problems = []
    for path in DOCS:
        rel = path.relative_to(ROOT).as_posix()
        for n, line, _ in _lines(path):
            for var in re.findall(r"\bGITOPS_PUSH_[A-Z0-9_]*[A-Z0-9]\b", line):
                if var not in known and var not in sources:
                    problems.append(f"{rel}:{n}: {var} is read nowhere")
    assert problems == []


def test_every_repository_path_and_link_exists() -> None:
    problems = []
    for path in DOCS:
        rel = path.relative_to(ROOT).as_posix()
        for n, line, lang in _lines(path):
            if lang is not None:
                continue
            for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", line):
                if "://" in target or target.startswith("mailto:"):
                    continue
                if not (path.parent / target).exists():
                    problems.append(f"{rel}:{n}: link to {target}, which does not exist")
            for repo_path in re.findall(
                    r"`((?:ci-templates|docs|scripts|examples|bench|gitops_push)/[^`\s*<>]+)`",
                    line):
                if not (ROOT / repo_path.rstrip("/")).exists():
                    problems.append(f"{rel}:{n}: {repo_path} does not exist in the repository")
    assert problems == []


def _row(doc: str, key: str) -> str:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    return next(line for line in text.splitlines() if line.startswith(f"| `{key}`"))


def test_config_md_gives_the_discover_default_the_code_has() -> None:
    from gitops_push import config

    assert config.parse("version: 1\n", "gitops-push.yaml").discover == {}
    assert config.Config(file=None).discover == config.DEFAULT_DISCOVER
    row = _row("config.md", "discover")
    assert "only the `stacks:` it lists exist" in row and "Without any config file" in row


def test_audit_md_says_rollback_of_run_is_the_run_rolled_back_to() -> None:
    # tests/test_run_rollback.py checks the record holds the --to run id
    row = _row("audit.md", "rollback_to")
    assert "the run rolled back *to*" in row and "does not name a run being undone" in row
