"""Just enough HCL scanning to find what a Terraform module reads from disk.

Change detection needs two facts per ``.tf`` file: local ``module`` sources
(``source = "../modules/x"``) and literal paths given to ``file()``,
``templatefile()`` and friends. A real tokenizer (comments, strings with nested
``${}`` interpolation, heredocs) keeps a ``source`` inside a comment or a heredoc
from counting; malformed input is a ParseError naming file and line, never a hang.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gitops_push.errors import ParseError

FILE_FUNCTIONS = frozenset(
    {
        "file",
        "templatefile",
        "filebase64",
        "filemd5",
        "filesha1",
        "filesha256",
        "filesha512",
        "filebase64sha256",
        "filebase64sha512",
        "fileexists",
    }
)
_PATH_PREFIX = re.compile(r"^\$\{path\.(module|root|cwd)\}/?")
_HEREDOC = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_]*)[ \t]*\r?\n")
MAX_BYTES = 8 * 1024 * 1024
_TOKEN = re.compile(
    r"(?P<ws>[ \t\r]+)|(?P<nl>\n)|(?P<line>(?:#|//)[^\n]*)|(?P<block>/\*)|(?P<str>\")"
    r"|(?P<heredoc><<-?[A-Za-z_][A-Za-z0-9_]*[ \t]*\r?\n)|(?P<punct>[{}()\[\]=,])"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_\-]*)|(?P<other>[^\s\"#/{}()\[\]=,<A-Za-z_]+|[/<])"
)
_STRING_PLAIN = re.compile(r"[^\"\\\n$%]+")
_MAYBE_REFS = re.compile(r"\bmodule\b|\bfile[a-z0-9]*\s*\(")


@dataclass(frozen=True)
class Token:
    """One token of a ``.tf`` file, as far as the scanner needs it."""

    kind: str  # ident | string | heredoc | punct | newline
    value: str
    line: int
    literal: bool = True  # a string with no interpolation other than path.*


@dataclass(frozen=True)
class ModuleRef:
    """A ``module`` block's source, where it is written."""

    name: str
    source: str
    file: str
    line: int


@dataclass(frozen=True)
class FileRef:
    """A literal path given to ``file()`` and its kin, where it is written."""

    function: str
    path: str  # the literal, with any ${path.module}/ prefix removed
    anchor: str  # "module" | "root" | "cwd" | "" (no prefix: relative to the root module)
    file: str
    line: int


@dataclass(frozen=True)
class References:
    """Every module source and file path one ``.tf`` file (or directory) names."""

    modules: tuple[ModuleRef, ...]
    files: tuple[FileRef, ...]


class _Scanner:
    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.pos = 0
        self.line = 1

    def error(self, message: str, line: int | None = None) -> ParseError:
        return ParseError(message, path=f"{self.path}:{line or self.line}")

    def tokens(self) -> list[Token]:
        text, out = self.text, []
        n = len(text)
        match = _TOKEN.match
        while self.pos < n:
            m = match(text, self.pos)
            if m is None:  # a lone character no rule covers: skip it
                self.pos += 1
                continue
            kind = m.lastgroup
            if kind == "nl":
                out.append(Token("newline", "\n", self.line))
                self.line += 1
                self.pos = m.end()
            elif kind == "block":
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.error("unterminated /* comment")
                self.line += text.count("\n", self.pos, end)
                self.pos = end + 2
            elif kind == "str":
                out.append(self.string())
            elif kind == "heredoc":
                out.append(self.heredoc(_HEREDOC.match(text, self.pos)))  # type: ignore[arg-type]
            elif kind in ("punct", "ident"):
                out.append(Token(kind, m.group(), self.line))
                self.pos = m.end()
            else:  # whitespace, line comments, other characters
                self.pos = m.end()
        return out

    def string(self) -> Token:
        """A quoted template string; nested ``${ }`` may itself contain strings."""
        start_line, text = self.line, self.text
        self.pos += 1
        buf: list[str] = []
        n = len(text)
        while True:
            plain = _STRING_PLAIN.match(text, self.pos)
            if plain is not None and plain.end() > self.pos:
                buf.append(plain.group())
                self.pos = plain.end()
            if self.pos >= n:
                raise self.error("unterminated string", start_line)
            c = text[self.pos]
            if c == "\\":
                buf.append(text[self.pos : self.pos + 2])
                self.pos += 2
            elif c == '"':
                self.pos += 1
                break
            elif c == "\n":
                raise self.error("unterminated string (newline inside quotes)", start_line)
            elif text.startswith(("$${", "%%{"), self.pos):
                buf.append(text[self.pos : self.pos + 3])
                self.pos += 3
            elif text.startswith(("${", "%{"), self.pos):
                inner_start = self.pos
                self.skip_template_expr()
                buf.append(text[inner_start : self.pos])
            else:
                buf.append(c)
                self.pos += 1
        value = "".join(buf)
        rest = _PATH_PREFIX.sub("", value, count=1)
        literal = "${" not in rest and "%{" not in rest
        return Token("string", value, start_line, literal)

    def skip_template_expr(self) -> None:
        """Skip ``${ ... }`` including nested braces and strings."""
        start_line, text, n = self.line, self.text, len(self.text)
        self.pos += 2
        depth = 1
        while depth:
            if self.pos >= n:
                raise self.error("unterminated ${ interpolation", start_line)
            c = text[self.pos]
            if c == '"':
                self.string()
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            elif c == "\n":
                self.line += 1
            self.pos += 1

    def heredoc(self, m: re.Match[str]) -> Token:
        start_line = self.line
        marker = m.group(2)
        self.pos = m.end()
        self.line += 1
        end_re = re.compile(r"^[ \t]*" + re.escape(marker) + r"[ \t]*\r?$", re.MULTILINE)
        end = end_re.search(self.text, self.pos)
        if end is None:
            raise self.error(f"unterminated heredoc <<{marker}", start_line)
        body = self.text[self.pos : end.start()]
        self.line += body.count("\n")
        self.pos = end.end()
        return Token("heredoc", body, start_line, literal=False)


def scan(text: str, path: str) -> References:
    """Local-module and file() references of one ``.tf`` file."""
    if len(text) > MAX_BYTES:
        raise ParseError(f"file is too large to scan ({len(text)} bytes)", path=path)
    if not _MAYBE_REFS.search(text):
        return References((), ())  # nothing here can reference another path
    tokens = _Scanner(text, path).tokens()
    modules: list[ModuleRef] = []
    files: list[FileRef] = []
    depth = 0
    module_depth: int | None = None
    module_name = ""
    sig = [t for t in tokens if t.kind != "newline"]
    for i, tok in enumerate(sig):
        if tok.kind == "punct":
            if tok.value in "{([":
                depth += 1
            elif tok.value in "})]":
                depth -= 1
                if module_depth is not None and depth < module_depth:
                    module_depth = None
            if depth < 0:
                raise ParseError("unbalanced closing bracket", path=f"{path}:{tok.line}")
            continue
        if tok.kind != "ident":
            continue
        nxt = sig[i + 1] if i + 1 < len(sig) else None
        if (
            tok.value == "module"
            and depth == 0
            and nxt is not None
            and nxt.kind == "string"
            and i + 2 < len(sig)
            and sig[i + 2].value == "{"
        ):
            module_depth = depth + 1
            module_name = nxt.value
        elif (
            tok.value == "source"
            and module_depth is not None
            and depth == module_depth
            and nxt is not None
            and nxt.value == "="
            and i + 2 < len(sig)
            and sig[i + 2].kind == "string"
            and sig[i + 2].literal
        ):
            modules.append(ModuleRef(module_name, sig[i + 2].value, path, tok.line))
        elif (
            tok.value in FILE_FUNCTIONS
            and nxt is not None
            and nxt.value == "("
            and i + 2 < len(sig)
            and sig[i + 2].kind == "string"
            and sig[i + 2].literal
        ):
            literal = sig[i + 2].value
            m = _PATH_PREFIX.match(literal)
            files.append(
                FileRef(
                    tok.value,
                    literal[m.end() :] if m else literal,
                    m.group(1) if m else "",
                    path,
                    tok.line,
                )
            )
    if depth > 0:
        raise ParseError("unclosed block or bracket at end of file", path=path)
    return References(tuple(modules), tuple(files))


def is_local_source(source: str) -> bool:
    """Terraform treats only ``./`` and ``../`` sources as local paths."""
    return source.startswith(("./", "../")) or source in (".", "..")


_SALVAGE_SOURCE = re.compile(r'^[ \t]*source[ \t]*=[ \t]*"([^"\n]*)"', re.MULTILINE)


def salvage_modules(text: str, path: str) -> list[ModuleRef]:
    """Local module sources of a file ``scan`` rejected, line by line (a best effort for
    a file with a syntax error; the caller treats its stack as changed anyway)."""
    return [ModuleRef("(unparsed)", m.group(1), path, text.count("\n", 0, m.start()) + 1)
            for m in _SALVAGE_SOURCE.finditer(text) if is_local_source(m.group(1))]
