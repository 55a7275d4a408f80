"""gitops-push.yaml: the stacks, discovery globs, audit and engine settings.

Parsed from YAML nodes so every error names the file and line; unknown keys are
rejected. Engine settings (``terraform:``, ``kubernetes:``) are validated by the
engine modules themselves through ``schema.Section``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from gitops_push import engines
from gitops_push.config.project import PROJECT_PATTERN
from gitops_push.config.schema import Section
from gitops_push.config.yamlsafe import compose_all
from gitops_push.errors import ConfigError, ParseError

CONFIG_FILE = "gitops-push.yaml"
CONFIG_NAMES = (CONFIG_FILE, "gitops-push.yml", ".gitops-push.yaml")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9\-_.]*")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PHASES = ("plan", "apply", "drift")
AUDIT_MODES = ("branch", "notes", "commit")
MAX_CONFIG_BYTES = 4 * 1024 * 1024
DEFAULT_DISCOVER = {
    "terraform": ("**",),
    "kubernetes": ("**",),
}


@dataclass(frozen=True)
class PhaseCredentials:
    """Environment for one phase: ``{NAME_SEEN_BY_TOOL: SOURCE_VARIABLE}``."""

    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stack:
    """A deployable unit: a Terraform root module or a Kubernetes manifest directory."""

    name: str
    path: str  # repo-relative POSIX path, no trailing slash; "." for the repo root
    type: str
    depends_on: tuple[str, ...] = ()
    watch: tuple[str, ...] = ()
    settings: Any = None  # the engine's own frozen settings dataclass
    credentials: Mapping[str, PhaseCredentials] = field(default_factory=dict)
    origin: str = "discovered"  # "file:line" of an explicit stack, or "discovered"

    def owns(self, path: str) -> bool:
        return self.path == "." or path == self.path or path.startswith(self.path + "/")


@dataclass(frozen=True)
class AuditSettings:
    """Where and how the audit trail is written (``audit:``)."""

    mode: str = "branch"
    branch: str = "gitops-push/audit"
    notes_ref: str = "refs/notes/gitops-push"
    directory: str = ".gitops-push/audit"  # inside the audit branch / deployed branch


@dataclass(frozen=True)
class StackSpec:
    """An explicit stack before it is checked against a commit's tree."""

    stack: Stack
    path_line: str  # file:line of its ``path`` (for missing/escaping path errors)
    depends_line: str = ""  # file:line of its ``depends_on`` (unknown stacks, cycles)


@dataclass(frozen=True)
class Config:
    """gitops-push.yaml, parsed: its stacks, discovery globs and settings."""

    file: str | None  # display path, None when no config file exists
    stacks: tuple[StackSpec, ...] = ()
    discover: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_DISCOVER))
    discover_explicit: bool = False
    audit: AuditSettings = field(default_factory=AuditSettings)
    default_branch: str | None = None
    defaults: Mapping[str, Section] = field(default_factory=dict)
    project: str | None = None  # None: derived from the repository (gitops_push.config.project)

    def default_settings(self, engine_type: str) -> Any:
        """Engine settings for a discovered stack: the ``defaults:`` of that engine."""
        section = self.defaults.get(engine_type) or Section(
            None, self.file or CONFIG_FILE, f"defaults: {engine_type}"
        )
        return engines.spec(engine_type).parse_settings(section)


def find_config(repo_root: Path, explicit: Path | None) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file not found: {explicit}", path="--config")
        return explicit
    for name in CONFIG_NAMES:
        candidate = repo_root / name
        if candidate.is_file():
            return candidate
    return None


def load(repo_root: Path, explicit: Path | None = None) -> Config:
    path = find_config(repo_root, explicit)
    if path is None:
        return Config(file=None)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", path=str(path)) from exc
    try:
        display = str(path.relative_to(repo_root))
    except ValueError:
        display = str(path)
    return parse(data, display)


def parse(data: bytes | str, file: str = CONFIG_FILE) -> Config:
    try:
        docs = compose_all(data, file, max_bytes=MAX_CONFIG_BYTES)
    except ParseError as exc:
        raise ConfigError(exc.message, path=exc.path) from exc
    if len(docs) != 1:
        raise ConfigError(
            "expected exactly one YAML document" if docs else "the file is empty", path=file
        )
    try:
        return _parse_root(Section(docs[0].node, file, "config"))
    except ParseError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(exc.message, path=exc.path) from exc


def _parse_root(root: Section) -> Config:
    root.only(["version", "project", "stacks", "discover", "defaults", "audit",
               "default_branch"])
    version = root.int("version", None)
    if version is None:
        raise root.error(None, "missing required key 'version' (use: version: 1)")
    if version != 1:
        raise root.error("version", f"unsupported version {version}; this gitops-push reads 1")

    defaults_sec = root.section("defaults").only(engines.names())
    defaults = {name: defaults_sec.section(name, f"defaults: {name}") for name in engines.names()}
    for name, sec in defaults.items():  # validate once, even when no stack uses them
        if defaults_sec.has(name):  # (an engine nobody configures is not even imported)
            engines.spec(name).parse_settings(sec)

    # with a config file, only what `discover:` names is discovered; without a config
    # file at all (Config's default), everything is
    discover_explicit = root.has("discover")
    discover: dict[str, tuple[str, ...]] = {}
    if discover_explicit:
        dsec = root.section("discover").only(engines.names())
        for name in engines.names():
            globs = dsec.str_list(name)
            for g in globs:
                _check_relative(g, dsec, name)
            if globs:
                discover[name] = globs

    audit_sec = root.section("audit").only(["mode", "branch", "notes_ref", "directory"])
    audit = AuditSettings(
        mode=audit_sec.str("mode", "branch", choices=AUDIT_MODES) or "branch",
        branch=audit_sec.str(
            "branch", "gitops-push/audit", pattern=re.compile(r"[A-Za-z0-9][A-Za-z0-9._/\-]*")
        )
        or "",
        notes_ref=audit_sec.str(
            "notes_ref",
            "refs/notes/gitops-push",
            pattern=re.compile(r"refs/notes/[A-Za-z0-9._/\-]+"),
        )
        or "",
        directory=audit_sec.str("directory", ".gitops-push/audit") or "",
    )
    _check_relative(audit.directory, audit_sec, "directory")

    default_branch = root.str(
        "default_branch", None, pattern=re.compile(r"[A-Za-z0-9][A-Za-z0-9._/\-]*")
    )
    project = root.str("project", None, pattern=PROJECT_PATTERN)
    specs = _parse_stacks(root, defaults)
    config = Config(
        file=root.file,
        stacks=tuple(specs),
        discover=discover,
        discover_explicit=discover_explicit,
        audit=audit,
        default_branch=default_branch,
        defaults=defaults,
        project=project,
    )
    check_graph([s.stack for s in specs],
                {s.stack.name: s.depends_line or s.stack.origin for s in specs})
    return config


def _check_relative(value: str, sec: Section, key: str) -> str:
    p = PurePosixPath(value)
    if value.startswith("/") or p.is_absolute() or re.match(r"^[A-Za-z]:", value):
        raise sec.error(key, f"{value!r} must be relative to the repository root")
    if ".." in p.parts:
        raise sec.error(key, f"{value!r} escapes the repository ('..' is not allowed)")
    if "\x00" in value or "\n" in value:
        raise sec.error(key, "must not contain NUL or newline characters")
    return value


def normalize_path(value: str) -> str:
    parts = [p for p in PurePosixPath(value).parts if p not in (".", "")]
    return "/".join(parts) or "."


def _parse_stacks(root: Section, defaults: Mapping[str, Section]) -> list[StackSpec]:
    node = root.value_node("stacks")
    if node is None:
        return []
    import yaml

    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise root.error("stacks", "must be a list of stacks", node)
    specs: list[StackSpec] = []
    names: dict[str, str] = {}
    paths: dict[str, str] = {}
    for item in node.value:
        sec = Section(item, root.file, "stack")
        name = sec.str("name", required=True, pattern=NAME_RE)
        assert name is not None
        sec.what = f"stack {name!r}"
        sec.only(["name", "path", "type", "depends_on", "watch", "credentials", *engines.names()])
        where = sec.where("name")
        if name in names:
            raise ConfigError(
                f"duplicate stack name {name!r} (first defined at {names[name]})", path=where
            )
        names[name] = where
        raw_path = sec.str("path", required=True)
        assert raw_path is not None
        _check_relative(raw_path, sec, "path")
        path = normalize_path(raw_path)
        if path in paths:
            raise ConfigError(
                f"stack {name!r}: path {path!r} is already used by stack {paths[path]!r}",
                path=sec.where("path"),
            )
        paths[path] = name
        stype = sec.str("type", required=True, choices=engines.names())
        assert stype is not None
        for other in engines.names():
            if other != stype and sec.has(other):
                raise sec.error(other, f"settings for {other} on a {stype} stack")
        own = sec.section(stype, f"stack {name!r}: {stype}")
        settings = engines.spec(stype).parse_settings(own.merged_over(defaults[stype]))
        depends_on = sec.str_list("depends_on", pattern=NAME_RE)
        watch = sec.str_list("watch")
        for g in watch:
            _check_relative(g, sec, "watch")
        stack = Stack(
            name=name,
            path=path,
            type=stype,
            depends_on=depends_on,
            watch=watch,
            settings=settings,
            credentials=_parse_credentials(sec.section("credentials")),
            origin=where,
        )
        specs.append(StackSpec(stack, sec.where("path"),
                               sec.where("depends_on") if sec.has("depends_on") else ""))
    return specs


def _parse_credentials(sec: Section) -> dict[str, PhaseCredentials]:
    """``credentials: {plan: {env: {...}}, apply: {...}, drift: {...}}``.

    ``env`` is a mapping ``NAME_FOR_TOOL: SOURCE_VARIABLE`` or a list of names passed
    through unchanged. Drift uses the plan credentials unless it names its own.
    """
    sec.only(PHASES)
    out: dict[str, PhaseCredentials] = {}
    for phase in PHASES:
        psec = sec.section(phase).only(["env"])
        node = psec.value_node("env")
        import yaml

        if node is None:
            continue
        if isinstance(node, yaml.SequenceNode):
            env = {n: n for n in psec.str_list("env", pattern=ENV_NAME_RE)}
        else:
            env = psec.str_map("env", key_pattern=ENV_NAME_RE, allow_scalars=False)
            for k, v in env.items():
                if not ENV_NAME_RE.fullmatch(v):
                    raise psec.error("env", f"{k}: {v!r} is not an environment variable name")
        out[phase] = PhaseCredentials(env=env)
    if "drift" not in out and "plan" in out:
        out["drift"] = out["plan"]
    return out


def check_graph(stacks: list[Stack], origins: Mapping[str, str] | None = None) -> None:
    """Unknown dependencies and cycles, the cycle named as ``a -> b -> a``."""
    by_name = {s.name: s for s in stacks}
    for s in stacks:
        for dep in s.depends_on:
            if dep not in by_name:
                raise ConfigError(
                    f"stack {s.name!r} depends on unknown stack {dep!r}",
                    path=(origins or {}).get(s.name),
                )
            if dep == s.name:
                raise ConfigError(
                    f"dependency cycle: {s.name} -> {s.name}", path=(origins or {}).get(s.name)
                )
    # iterative depth-first search: a chain of thousands of stacks must not hit the
    # recursion limit
    state: dict[str, int] = {}
    for root in sorted(by_name):
        if root in state:
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            name, index = stack.pop()
            deps = by_name[name].depends_on
            if index == 0:
                state[name] = 1
                path.append(name)
            if index < len(deps):
                stack.append((name, index + 1))
                dep = deps[index]
                if state.get(dep) == 1:
                    cycle = [*path[path.index(dep) :], dep]
                    raise ConfigError(
                        f"dependency cycle: {' -> '.join(cycle)}", path=(origins or {}).get(name)
                    )
                if dep not in state:
                    stack.append((dep, 0))
            else:
                state[name] = 2
                path.pop()
