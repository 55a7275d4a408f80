"""Terraform / OpenTofu engine: lint, plan to a saved file, apply exactly that file, drift.

Every call goes through ``proc.run`` (argument lists, the filtered environment the
runner built, timeouts that stop Terraform with SIGINT so it releases its state lock).
Values never leave Terraform: summaries hold addresses, actions and attribute paths.
OpenTofu is this engine with ``binary: tofu`` (docs/terraform.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import yaml

from gitops_push import proc
from gitops_push.ci import ENV_TERRAFORM_BIN
from gitops_push.engines.base import (
    ApplyResult,
    Change,
    Diagnostic,
    DriftItem,
    DriftResult,
    EngineContext,
    EngineSpec,
    LintResult,
    OutputChange,
    PlanResult,
)
from gitops_push.errors import ToolError, UserError
from gitops_push.fsutil import atomic_write

if TYPE_CHECKING:
    from gitops_push.config import Stack
    from gitops_push.schema import Section

BIN_ENV = ENV_TERRAFORM_BIN  # overrides the default binary, not a stack's setting
DEFAULT_BINARY = "terraform"
MIN_VERSION = (1, 5, 0)  # `workspace select -or-create`, stable plan JSON; OpenTofu is >= 1.6
DEFAULT_LOCK_TIMEOUT = 300.0
VERSION_TIMEOUT = 60.0
PLAN_FILE = "terraform.tfplan"
SUMMARY_FILE = "terraform-plan.json"
SUMMARY_FORMAT = 1
MAX_FIELDS = 50  # attribute paths kept per change; a huge diff is summarised, not listed
INSTALL_HINT = (
    "Install Terraform >= 1.5 (https://developer.hashicorp.com/terraform/install) or "
    "OpenTofu (https://opentofu.org/docs/intro/install/) on PATH, or point the stack's "
    f"`terraform: binary:` setting or {BIN_ENV} at it."
)
SETTINGS_KEYS = (
    "binary",
    "workspace",
    "var_files",
    "vars",
    "backend_config",
    "env",
    "timeout",
    "parallelism",
    "lock_timeout",
)

_WORKSPACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_VAR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_\-]+")
_HUNK_RE = re.compile(r"@@ -(\d+)")
_STALE_MARKER = "Saved plan is stale"
_ACTIONS = {
    ("create",): "create",
    ("update",): "update",
    ("delete",): "delete",
    ("read",): "read",
    ("no-op",): "no-op",
    ("forget",): "forget",
    ("delete", "create"): "replace",
    ("create", "delete"): "replace",
}


# -- settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TerraformSettings:
    """A stack's ``terraform:`` settings (docs/terraform.md#settings)."""

    binary: str | None = None  # None: $GITOPS_PUSH_TERRAFORM_BIN, else "terraform"
    workspace: str | None = None  # None: leave Terraform's selection alone ("default")
    var_files: tuple[str, ...] = ()  # relative to the stack, inside it
    vars: tuple[tuple[str, str], ...] = ()  # non-secret; passed as -var name=value
    backend_config: tuple[str, ...] = ()  # each a file in the stack or key=value
    env: tuple[str, ...] = ()  # environment variables passed through (TF_VAR_*, tokens)
    timeout: float | None = None  # per terraform command
    parallelism: int | None = None
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT


def parse_settings(section: Section) -> TerraformSettings:
    """Validate ``terraform:`` (merged over ``defaults: terraform``), errors at file:line."""
    section.only(SETTINGS_KEYS)
    binary = section.str("binary", None)
    if binary is not None and (problem := binary_problem(binary)):
        raise section.error("binary", problem, section.value_node("binary"))
    timeout = section.duration("timeout", None)
    if timeout is not None and timeout <= 0:
        raise section.error("timeout", "must be greater than 0", section.value_node("timeout"))
    var_files = section.str_list("var_files")
    _check_stack_files(section, "var_files", var_files)
    return TerraformSettings(
        binary=binary,
        workspace=section.str("workspace", None, pattern=_WORKSPACE_RE),
        var_files=var_files,
        vars=tuple(section.str_map("vars", key_pattern=_VAR_NAME_RE).items()),
        backend_config=_parse_backend_config(section),
        env=section.str_list("env", pattern=_ENV_NAME_RE),
        timeout=timeout,
        parallelism=section.int("parallelism", None, minimum=1),
        lock_timeout=section.duration("lock_timeout", DEFAULT_LOCK_TIMEOUT) or 0.0,
    )


def binary_problem(value: str) -> str | None:
    """Why ``value`` cannot name the binary: a relative path would resolve against the stack."""
    if not value.strip() or "\x00" in value or "\n" in value:
        return "must be a program name or an absolute path"
    if "/" in value and not PurePosixPath(value).is_absolute():
        return (f"{value!r} is a relative path; use an absolute path or a name looked up "
                "on PATH (like 'tofu')")
    return None


def _inside_problem(value: str) -> str | None:
    p = PurePosixPath(value)
    if not value or p.is_absolute() or re.match(r"^[A-Za-z]:", value) or "\x00" in value:
        return f"{value!r} must be a path relative to the stack directory"
    if ".." in p.parts:
        return f"{value!r} escapes the stack directory ('..' is not allowed)"
    return None


def _check_stack_files(section: Section, key: str, values: Sequence[str | None]) -> None:
    """Files Terraform reads must live in the stack: a merge request cannot point at /etc."""
    node = section.value_node(key)
    items = node.value if isinstance(node, yaml.SequenceNode) else []
    for value, item in zip(values, items, strict=True):
        if value is not None and (problem := _inside_problem(value)):
            raise section.error(key, problem, item)


def _parse_backend_config(section: Section) -> tuple[str, ...]:
    """A mapping, or a list of files and ``key=value`` strings (Terraform's own rule)."""
    node = section.value_node("backend_config")
    if node is None or section.raw("backend_config") is None:
        return ()
    if isinstance(node, yaml.MappingNode):
        return tuple(f"{k}={v}" for k, v in section.str_map("backend_config").items())
    if not isinstance(node, yaml.SequenceNode):
        raise section.error(
            "backend_config", "must be a list (files or key=value) or a mapping", node)
    items = tuple(str(i) for i in section.str_list("backend_config"))
    _check_stack_files(section, "backend_config", [None if "=" in i else i for i in items])
    return items


def env_names(settings: TerraformSettings) -> tuple[str, ...]:
    """Variables the runner passes through: the stack's ``env`` and the binary override."""
    return (*settings.env, BIN_ENV)


def resolve_binary(settings: TerraformSettings, env: Mapping[str, str]) -> str:
    """The stack's ``binary``, else $GITOPS_PUSH_TERRAFORM_BIN, else ``terraform``."""
    if settings.binary:
        return settings.binary
    value = env.get(BIN_ENV, "")
    if value:
        if problem := binary_problem(value):
            raise UserError(f"{BIN_ENV}: {problem}")
        return value
    return DEFAULT_BINARY


def _settings(stack: Stack) -> TerraformSettings:
    settings = stack.settings
    return settings if isinstance(settings, TerraformSettings) else TerraformSettings()


# -- versions ----------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, int, int] | None:
    m = _VERSION_RE.match(text.strip())
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def _version_from_json(stdout: str) -> str | None:
    """``version -json`` prints ``terraform_version`` (OpenTofu keeps the key)."""
    try:
        doc = json.loads(stdout)
    except ValueError:
        return None
    value = doc.get("terraform_version") if isinstance(doc, dict) else None
    return value if isinstance(value, str) and parse_version(value) else None


# -- the engine --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tf:
    """How one stack's terraform commands run: binary, directory, environment, timeout."""

    binary: str
    ctx: EngineContext
    work_dir: Path  # absolute: commands run with cwd=stack_dir
    env: Mapping[str, str]
    timeout: float | None
    secrets: tuple[str, ...]  # ctx.secrets and the values of the stack's ``env`` variables

    @property
    def label(self) -> str:
        return Path(self.binary).name

    def run(self, *args: str, stream: bool = True, check: bool = True,
            on_line: Callable[[str], None] | None = None) -> proc.Result:
        return proc.run([self.binary, *args], env=self.env, cwd=self.ctx.stack_dir,
                        timeout=self.timeout, check=check, cancel=self.ctx.cancel,
                        on_line=on_line or (self.ctx.on_line if stream else None),
                        secrets=self.secrets, what=f"{self.label} {args[0]}")

    def run_ui(self, *args: str) -> tuple[proc.Result, str]:
        """Run plan/apply with ``-json``, streaming its messages as plain lines.

        Terraform's human plan text shows provider-computed copies of sensitive inputs
        (terraform_data's ``output``) in clear; its JSON messages carry no attribute
        values. Returns the result and the rendered tail; never raises on exit codes.
        """
        ui = _UiLines(self.ctx.on_line)
        try:
            result = self.run(args[0], "-json", *args[1:], check=False, on_line=ui)
        except ToolError as exc:  # timed out or interrupted: show messages, not JSON
            raise ToolError(exc.message, command=exc.command, returncode=exc.returncode,
                            output_tail=ui.text() or exc.output_tail) from exc
        return result, ui.text()

    def fail(self, result: proc.Result, message: str | None = None,
             tail: str | None = None) -> ToolError:
        return ToolError(
            message or f"{self.label} {result.command[1]} failed",
            command=result.command,
            returncode=result.returncode,
            output_tail=result.tail if tail is None else tail,
        )


class _UiLines:
    """Renders Terraform's ``-json`` UI messages as the lines a person would read.

    Called from proc.run's two reader threads with lines already redacted; keeps the
    last lines for error reports. A line that is not a JSON message passes through.
    """

    def __init__(self, forward: Callable[[str], None]) -> None:
        self.forward = forward
        self.tail: deque[str] = deque(maxlen=proc.TAIL_LINES)
        self.lock = threading.Lock()

    def __call__(self, raw: str) -> None:
        for line in _render_ui(raw):
            with self.lock:
                self.tail.append(line)
            self.forward(line)

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.tail)


def _render_ui(raw: str) -> list[str]:
    try:
        msg = json.loads(raw) if raw.startswith("{") else None
    except ValueError:
        msg = None
    if not isinstance(msg, dict) or not isinstance(msg.get("@message"), str):
        return [raw]
    lines = msg["@message"].strip("\n").splitlines() or [""]
    diag = _obj(msg.get("diagnostic"))
    if msg.get("type") == "diagnostic" and diag:
        rng = _obj(diag.get("range"))
        if rng.get("filename"):
            lines.append(f"  on {rng['filename']} line {_obj(rng.get('start')).get('line')}")
        lines += [f"  {d}" for d in str(diag.get("detail") or "").strip().splitlines()]
    return lines


@dataclass(frozen=True)
class _Facts:
    """What ``terraform-plan.json`` records besides the summary (never values)."""

    binary: str
    version: str
    workspace: str | None
    plan: PlanResult


@dataclass(frozen=True)
class _Fmt:
    """What ``fmt -check`` found: unformatted files (absolute) with the first changed line,
    or why fmt itself failed (a syntax error, which validate then reports located)."""

    files: tuple[tuple[Path, int | None], ...] = ()
    error: str | None = None


class TerraformEngine:
    """Terraform or OpenTofu through their CLI; one instance per run, thread-safe."""

    name = "terraform"

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._cache_locks: dict[str, threading.Lock] = {}
        self._inited: dict[tuple[str, str, tuple[str, ...]], proc.Result] = {}
        self._fmt_paths: dict[str, set[str]] = {}  # binary -> stack paths check() was given
        self._fmt_runs: dict[tuple[str, str], str | None] = {}
        self._fmt_lock = threading.Lock()

    # -- preflight ---------------------------------------------------------------------
    def check(self, stacks: list[Stack], env: Mapping[str, str]) -> None:
        """Each binary the stacks use runs and is new enough, before any stack starts."""
        users: dict[str, list[str]] = {}
        for stack in stacks:
            if isinstance(stack.settings, TerraformSettings):
                binary = resolve_binary(stack.settings, env)
                users.setdefault(binary, []).append(stack.name)
                with self._fmt_lock:
                    self._fmt_paths.setdefault(binary, set()).add(stack.path)
        for binary, names in users.items():
            self.version(binary, env, f"used by stack {', '.join(sorted(names))}")

    def version(self, binary: str, env: Mapping[str, str], who: str = "") -> str:
        """``binary``'s version (cached per binary and PATH); ToolError if unusable."""
        key = (binary, env.get("PATH", ""))
        with self._lock:
            if key in self._versions:
                return self._versions[key]
        where = f" ({who})" if who else ""
        run_env = {**proc.filtered_env(env), "CHECKPOINT_DISABLE": "1"}
        try:
            result = proc.run([binary, "version", "-json"], env=run_env,
                              timeout=VERSION_TIMEOUT, check=False)
        except ToolError as exc:
            if exc.returncode is not None:
                raise
            raise ToolError(f"{binary!r}{where} cannot be run: {exc.message}. {INSTALL_HINT}",
                            command=exc.command) from exc
        version = _version_from_json(result.stdout)
        if result.returncode != 0 or version is None:
            raise ToolError(
                f"{binary!r}{where} did not report its version (`version -json` printed no "
                f"terraform_version): is it Terraform or OpenTofu? {INSTALL_HINT}",
                command=result.command, returncode=result.returncode, output_tail=result.tail)
        found = parse_version(version) or (0, 0, 0)
        if found < MIN_VERSION:
            raise ToolError(f"{binary!r}{where} is version {version}; gitops-push needs "
                            f"Terraform or OpenTofu 1.5 or newer. {INSTALL_HINT}")
        with self._lock:
            self._versions[key] = version
        return version

    # -- lint --------------------------------------------------------------------------
    def lint(self, stack: Stack, ctx: EngineContext) -> LintResult:
        """``fmt -check`` and ``validate -json``, every finding located as repo file:line.

        Before a plan, the one ``init`` (with the backend) serves both; a lint-only run
        never touches the backend, so it needs no state credentials.
        """
        tf = self._prepare(stack, ctx)
        with ThreadPoolExecutor(max_workers=1) as pool:  # fmt reads only the .tf files
            fmt_job = pool.submit(self._fmt, tf, stack)
            init = self._init(tf, _settings(stack), backend=not ctx.lint_only, check=False)
            fmt = fmt_job.result()
        validate = tf.run("validate", "-json", "-no-color", stream=False, check=False)
        diags = _validate_diagnostics(validate.stdout, tf)
        errors = diags is not None and any(d.severity == "error" for d in diags)
        if init.returncode != 0 and not errors:
            raise tf.fail(init)  # not a configuration problem (network, registry, ...)
        if diags is None:
            raise tf.fail(validate, f"{tf.label} validate printed no JSON")
        if fmt.error is not None and not errors:  # validate names syntax errors
            diags.append(Diagnostic("error", f"{tf.label} fmt failed: {fmt.error}",
                                    _repo_path(ctx, ".")))
        elif fmt.error is None:
            diags[:0] = [
                Diagnostic("error", f"not formatted (run `{tf.label} fmt -recursive`)",
                           _repo_path(ctx, os.fspath(name)), line)
                for name, line in fmt.files
            ]
        return LintResult(stack=stack.name, diagnostics=tuple(diags))

    def _fmt(self, tf: _Tf, stack: Stack) -> _Fmt:
        """Unformatted files of the stack: from the run's one ``fmt`` over every stack
        when there is one, else from ``fmt`` in the stack's directory."""
        batch = self._fmt_batch(tf, stack)
        if batch is not None:
            root = tf.ctx.stack_dir.resolve()
            files = [(path, line) for name, line in _unformatted(batch)
                     if (path := (tf.ctx.repo_root / name).resolve()) == root
                     or root in path.parents]
            return _Fmt(tuple(files))
        result = tf.run("fmt", "-check", "-recursive", "-diff", "-no-color",
                        stream=False, check=False)
        if result.returncode not in (0, 3):  # the ``diff`` program -diff needs is missing?
            result = tf.run("fmt", "-check", "-recursive", "-no-color", stream=False,
                            check=False)
        if result.returncode not in (0, 3):
            return _Fmt(error=" ".join(result.stderr.split())[:500]
                        or f"exit code {result.returncode}")
        return _Fmt(tuple((tf.ctx.stack_dir / name, line)
                          for name, line in _unformatted(result.stdout)))

    def _fmt_batch(self, tf: _Tf, stack: Stack) -> str | None:
        """Output of ``fmt -check -diff`` run once for all the run's stacks of this binary (those
        ``check`` was given): each terraform start costs 40-50 ms of CPU. None when the
        stack is not among them (a base worktree) or the joint run failed (a syntax error
        somewhere): the caller then runs fmt in the stack alone, as before."""
        ctx = tf.ctx
        root = ctx.repo_root
        with self._fmt_lock:
            paths = sorted(p for p in self._fmt_paths.get(tf.binary, ())
                           if (root / p).is_dir())
            if len(paths) < 2 or stack.path not in paths or \
                    ctx.stack_dir.resolve() != (root / stack.path).resolve():
                return None
            key = (tf.binary, os.fspath(root))
            if key not in self._fmt_runs:
                result = proc.run(
                    [tf.binary, "fmt", "-check", "-recursive", "-diff", "-no-color",
                     *(f"./{p}" for p in paths)],  # ./ : a path never reads as an option
                    env=tf.env, cwd=root, timeout=tf.timeout, check=False, cancel=ctx.cancel,
                    secrets=tf.secrets, what=f"{tf.label} fmt")
                self._fmt_runs[key] = result.stdout if result.returncode in (0, 3) else None
            return self._fmt_runs[key]

    # -- plan --------------------------------------------------------------------------
    def plan(self, stack: Stack, ctx: EngineContext, *, destroy: bool = False) -> PlanResult:
        """Plan to ``work_dir/terraform.tfplan`` and summarise it without values."""
        settings = _settings(stack)
        tf = self._prepare(stack, ctx)
        plan_file = tf.work_dir / PLAN_FILE
        summary = tf.work_dir / SUMMARY_FILE
        for old in (plan_file, summary):  # a failed plan must not leave an older artifact
            old.unlink(missing_ok=True)
        self._init(tf, settings)
        self._select_workspace(tf, settings.workspace)
        result, tail = tf.run_ui(*_plan_args(ctx, settings, plan_file,
                                             ["-destroy"] if destroy else []))
        if result.returncode != 0:
            raise tf.fail(result, tail=tail)
        doc = _show_json(tf, plan_file)
        version = str(doc.get("terraform_version", ""))
        secrets = tf.secrets
        planned = PlanResult(
            stack=stack.name,
            changes=_changes(doc.get("resource_changes"), secrets),
            outputs=_outputs(doc.get("output_changes"), secrets),
            destroy=destroy,
            artifact=tf.work_dir,
            tool_version=f"{tf.label} {version}".strip(),
            notes=_notes(doc.get("resource_changes"), secrets),
        )
        _write_summary(summary, _Facts(tf.binary, version, settings.workspace, planned))
        return planned

    def load_plan(self, stack: Stack, ctx: EngineContext, artifact: Path) -> PlanResult:
        """Rebuild the PlanResult of a saved plan; refuse one made by another version."""
        facts = _read_summary(artifact, stack.name)
        binary = resolve_binary(_settings(stack), ctx.env)
        current = self.version(binary, ctx.env, f"used by stack {stack.name}")
        if facts.version and current != facts.version:
            raise ToolError(
                f"the saved plan for stack {stack.name!r} is stale: it was made by version "
                f"{facts.version} and {binary!r} is {current}; re-plan with one version")
        return facts.plan

    # -- apply -------------------------------------------------------------------------
    def apply(self, stack: Stack, ctx: EngineContext, plan: PlanResult) -> ApplyResult:
        """Apply exactly the saved plan file, streaming Terraform's output line by line."""
        start = time.monotonic()
        if plan.artifact is None:
            raise UserError(f"stack {stack.name!r}: no saved Terraform plan to apply")
        facts = _read_summary(plan.artifact, stack.name)
        plan_file = (plan.artifact / PLAN_FILE).absolute()
        settings = _settings(stack)
        tf = self._prepare(stack, ctx)
        self._init(tf, settings)  # a new process (or job) has an empty data dir
        self._select_workspace(tf, facts.workspace)
        result, tail = tf.run_ui("apply", "-input=false", "-no-color",
                                 f"-lock-timeout={_seconds(settings.lock_timeout)}",
                                 *_parallelism(settings), os.fspath(plan_file))
        if result.returncode != 0:
            if _STALE_MARKER in tail:
                raise tf.fail(result, f"the saved plan for stack {stack.name!r} is stale: the "
                                      "state changed after it was planned; re-plan and review "
                                      "the new plan", tail)
            raise tf.fail(result, tail=tail)
        return ApplyResult(
            stack=stack.name,
            changes=tuple(c for c in plan.changes if c.action != "no-op"),
            duration=time.monotonic() - start,
            output_tail=tail,
        )

    # -- drift -------------------------------------------------------------------------
    def drift(self, stack: Stack, ctx: EngineContext, *, after_apply: bool = False
              ) -> DriftResult:
        """Refresh-only plan (live vs state) and a normal plan (config vs live); no apply.

        ``after_apply``: the question is only "does live now match git", which the normal
        plan (it refreshes too) answers alone; a second plan would double the check's cost.
        """
        settings = _settings(stack)
        tf = self._prepare(stack, ctx)
        self._init(tf, settings)
        self._select_workspace(tf, settings.workspace)
        refresh_file = tf.work_dir / "drift-refresh.tfplan"
        config_file = tf.work_dir / "drift-config.tfplan"
        items: list[DriftItem] = []
        try:
            if not after_apply and self._plan_changed(tf, settings, refresh_file,
                                                      ["-refresh-only"]):
                doc = _show_json(tf, refresh_file)
                items += _drift_items(doc.get("resource_drift"), tf.secrets)
            if self._plan_changed(tf, settings, config_file, []):
                doc = _show_json(tf, config_file)
                if after_apply:
                    items += _drift_items(doc.get("resource_drift"), tf.secrets)
                items += _config_items(doc.get("resource_changes"), tf.secrets)
        finally:  # these plans hold values and nobody applies them
            refresh_file.unlink(missing_ok=True)
            config_file.unlink(missing_ok=True)
        return DriftResult(stack=stack.name, items=tuple(items))

    def _plan_changed(self, tf: _Tf, settings: TerraformSettings, out: Path,
                      mode: list[str]) -> bool:
        """``plan -detailed-exitcode``: 0 nothing to do, 2 changes, anything else failed."""
        result, tail = tf.run_ui(*_plan_args(tf.ctx, settings, out,
                                             [*mode, "-detailed-exitcode"]))
        if result.returncode not in (0, 2):
            raise tf.fail(result, tail=tail)
        return result.returncode == 2

    # -- shared steps ------------------------------------------------------------------
    def _prepare(self, stack: Stack, ctx: EngineContext) -> _Tf:
        """Binary, scratch dirs and environment; TF_DATA_DIR stays out of the work tree."""
        settings = _settings(stack)
        work_dir = ctx.work_dir.absolute()
        work_dir.mkdir(parents=True, exist_ok=True)
        data_dir = Path(ctx.extra.get("data_dir") or work_dir / ".terraform").absolute()
        env = {k: v for k, v in ctx.env.items() if k != BIN_ENV}
        env.update(TF_IN_AUTOMATION="1", TF_INPUT="0", CHECKPOINT_DISABLE="1",
                   TF_DATA_DIR=os.fspath(data_dir))
        cache = ctx.extra.get("plugin_cache_dir")
        if cache:  # shared by all stacks so providers download once per run
            Path(cache).mkdir(parents=True, exist_ok=True)
            env["TF_PLUGIN_CACHE_DIR"] = os.fspath(Path(cache).absolute())
        # Terraform prints provider-computed copies of sensitive inputs in clear (e.g.
        # terraform_data's ``output``), so values passed by ``env`` are redacted as well.
        secrets = (*ctx.secrets, *(ctx.env[n] for n in settings.env if ctx.env.get(n)))
        return _Tf(resolve_binary(settings, ctx.env), ctx, work_dir, env, settings.timeout,
                   secrets)

    def _init(self, tf: _Tf, settings: TerraformSettings, *, backend: bool = True,
              check: bool = True) -> proc.Result:
        """``init -reconfigure``: never migrate state in CI, whatever the data dir held.

        A failed init raises when ``check``; otherwise its result is returned (lint
        reports the configuration errors that made it fail) and nothing is remembered.
        """
        for value in settings.backend_config:
            if "=" not in value and backend:
                _require_inside(tf.ctx.stack_dir, value, "backend_config")
        args = ([f"-backend-config={c}" for c in settings.backend_config] if backend
                else ["-backend=false"])
        # plan, apply and the verifying drift check of one run share a data dir: initialise
        # it once (a new process, as in a separate apply job, starts empty and inits again)
        key = (tf.env.get("TF_DATA_DIR", ""), os.fspath(tf.ctx.stack_dir), tuple(args))
        with self._lock:
            done = self._inited.get(key)
        if done is not None and backend:
            return done
        cache = tf.env.get("TF_PLUGIN_CACHE_DIR")
        with self._cache_lock(cache if cache and installs_providers(tf.ctx.stack_dir) else None):
            result = tf.run("init", "-input=false", "-no-color", "-reconfigure", *args,
                            check=False)
        if result.returncode != 0:
            if check:
                raise tf.fail(result)
            return result
        if backend:
            with self._lock:
                self._inited[key] = result
        else:  # a lint init (-backend=false) leaves the data dir needing a real init
            with self._lock:
                self._inited = {k: v for k, v in self._inited.items() if k[0] != key[0]}
        return result

    @contextlib.contextmanager
    def _cache_lock(self, cache: str | None) -> Iterator[None]:
        """One provider-installing ``init`` at a time per plugin cache: concurrent installs
        into a shared cache race (hashicorp/terraform#31964). Stacks still plan and apply in
        parallel, and stacks that install no provider init in parallel too."""
        if not cache:
            yield
            return
        with self._lock:
            lock = self._cache_locks.setdefault(cache, threading.Lock())
        with lock:
            yield

    def _select_workspace(self, tf: _Tf, workspace: str | None) -> None:
        if workspace:
            tf.run("workspace", "select", "-or-create=true", "-no-color", workspace)


ENGINE = EngineSpec(
    name="terraform",
    parse_settings=parse_settings,
    factory=TerraformEngine,
    env_names=env_names,
)


# -- command lines -----------------------------------------------------------------------


# A block that may need a provider: any provider, module or required_providers block, or
# a resource / data source / ephemeral resource whose type is not a built-in terraform_*.
_PROVIDER_HINT = re.compile(
    r'^[ \t]*(?:provider[ \t]+"|module[ \t]+"|required_providers\b'
    r'|(?:resource|data|ephemeral)[ \t]+"(?!terraform_))', re.MULTILINE)


def installs_providers(stack_dir: Path) -> bool:
    """Whether ``init`` may install providers (into the shared cache).

    Conservative: only a directory of ``.tf``/``.tofu`` files using nothing but built-in
    ``terraform_*`` resources and data sources, with no lock file, is known not to.
    """
    try:
        files = list(stack_dir.iterdir())
    except OSError:
        return True
    for f in files:
        name = f.name
        if name == ".terraform.lock.hcl" or name.endswith((".tf.json", ".tofu.json")):
            return True
        if name.endswith((".tf", ".tofu")):
            try:
                text = f.read_text(encoding="utf-8", errors="replace")
            except OSError:
                return True
            if _PROVIDER_HINT.search(text):
                return True
    return False


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _parallelism(settings: TerraformSettings) -> list[str]:
    return [f"-parallelism={settings.parallelism}"] if settings.parallelism else []


def _plan_args(ctx: EngineContext, settings: TerraformSettings, out: Path,
               mode: list[str]) -> list[str]:
    args = ["plan", "-input=false", "-no-color", f"-out={out.absolute()}",
            f"-lock-timeout={_seconds(settings.lock_timeout)}", *_parallelism(settings), *mode]
    for name in settings.var_files:
        _require_inside(ctx.stack_dir, name, "var_files")
        args.append(f"-var-file={name}")
    args += [f"-var={k}={v}" for k, v in settings.vars]
    return args


def _require_inside(stack_dir: Path, name: str, key: str) -> None:
    """Runtime twin of the config check: a symlink must not lead out of the stack either."""
    root = stack_dir.resolve()
    target = (stack_dir / name).resolve()
    if target != root and root not in target.parents:
        raise UserError(f"terraform: {key}: {name!r} resolves outside the stack directory",
                        path=os.fspath(stack_dir / name))


def _show_json(tf: _Tf, plan_file: Path) -> dict[str, Any]:
    """``show -json``: holds every value in clear, so it is parsed in memory and dropped.

    Not redacted by proc.run: replacing a secret that equals a JSON key or literal
    (``true``) would corrupt the document; what we keep is redacted in ``_clean``.
    """
    result = proc.run([tf.binary, "show", "-json", "-no-color", os.fspath(plan_file)],
                      env=tf.env, cwd=tf.ctx.stack_dir, timeout=tf.timeout, check=False,
                      cancel=tf.ctx.cancel, what=f"{tf.label} show")
    if result.returncode != 0:
        raise ToolError(f"{tf.label} show failed", command=result.command,
                        returncode=result.returncode,
                        output_tail=proc.redact(result.stderr, tf.secrets)[-4000:])
    try:
        doc = json.loads(result.stdout)
    except ValueError as exc:
        raise ToolError(f"{tf.label} show -json printed no JSON",
                        command=result.command) from exc
    if not isinstance(doc, dict):
        raise ToolError(f"{tf.label} show -json printed no JSON object", command=result.command)
    return doc


# -- plan JSON -> summaries (addresses, actions, attribute paths; never values) ----------


def _clean(text: str, secrets: Iterable[str]) -> str:
    return proc.redact(str(text), secrets)


def _action(actions: Any) -> str:
    key = tuple(str(a) for a in actions) if isinstance(actions, list) else ()
    return _ACTIONS.get(key, "-".join(key) or "unknown")


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _entries(value: Any) -> list[dict[str, Any]]:
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def _changes(entries: Any, secrets: Sequence[str]) -> tuple[Change, ...]:
    out: list[Change] = []
    for entry in _entries(entries):
        change = entry.get("change") or {}
        action = _action(change.get("actions"))
        if action == "no-op" and change.get("importing"):
            action = "import"
        fields = changed_paths(change) if action in ("update", "replace") else ()
        out.append(Change(_clean(entry.get("address", "?"), secrets), action,
                          tuple(_clean(f, secrets) for f in fields)))
    return tuple(out)


def _outputs(changes: Any, secrets: Sequence[str]) -> tuple[OutputChange, ...]:
    if not isinstance(changes, dict):
        return ()
    return tuple(
        OutputChange(
            _clean(name, secrets),
            _action(change.get("actions")),
            sensitive=bool(change.get("before_sensitive") or change.get("after_sensitive")),
        )
        for name, change in sorted(changes.items())
        if isinstance(change, dict)
    )


def _notes(entries: Any, secrets: Sequence[str]) -> tuple[str, ...]:
    return tuple(
        _clean(f"{e['previous_address']} moved to {e.get('address', '?')}", secrets)
        for e in _entries(entries)
        if e.get("previous_address")
    )


def _drift_items(entries: Any, secrets: Sequence[str]) -> list[DriftItem]:
    """``resource_drift``: objects changed (``update``) or deleted outside Terraform."""
    items: list[DriftItem] = []
    for entry in _entries(entries):
        change = entry.get("change") or {}
        action = _action(change.get("actions"))
        address = _clean(entry.get("address", "?"), secrets)
        if action == "delete":
            items.append(DriftItem(address, "deleted"))
        elif action in ("update", "replace"):
            fields = tuple(_clean(f, secrets) for f in changed_paths(change))
            items.append(DriftItem(address, "changed", fields))
    return items


def _config_items(entries: Any, secrets: Sequence[str]) -> list[DriftItem]:
    """What a normal plan would change: the configuration differs from the live objects."""
    return [
        DriftItem(c.address, "config", c.fields)
        for c in _changes(entries, secrets)
        if c.action not in ("no-op", "read")
    ]


def changed_paths(change: Mapping[str, Any]) -> tuple[str, ...]:
    """Attribute paths that differ between ``before`` and ``after``; no values.

    A sensitive attribute is named but never descended into (its keys may be data).
    """
    out: list[str] = []
    _diff(change.get("before"), change.get("after"), change.get("after_unknown"),
          change.get("before_sensitive"), change.get("after_sensitive"), "", out)
    return tuple(out[:MAX_FIELDS])


def _diff(before: Any, after: Any, unknown: Any, sens_b: Any, sens_a: Any, path: str,
          out: list[str]) -> None:
    if len(out) >= MAX_FIELDS:
        return
    here = path or "(value)"
    if unknown is True or sens_b is True or sens_a is True:
        if unknown is True or before != after:
            out.append(here)
        return
    if isinstance(before, dict) and isinstance(after, dict):
        keys = [*before, *(k for k in after if k not in before)]
        if isinstance(unknown, dict):
            keys += [k for k in unknown if k not in before and k not in after]
        for key in keys:
            _diff(before.get(key), after.get(key), _sub(unknown, key), _sub(sens_b, key),
                  _sub(sens_a, key), _join(path, key), out)
        return
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            _diff(b, a, _sub(unknown, i), _sub(sens_b, i), _sub(sens_a, i), f"{path}[{i}]", out)
        return
    if before != after or _any_true(unknown):
        out.append(here)


def _sub(tree: Any, key: str | int) -> Any:
    """The marker subtree for ``key``: ``true`` covers everything below it."""
    if tree is True:
        return True
    if isinstance(tree, dict) and isinstance(key, str):
        return tree.get(key)
    if isinstance(tree, list) and isinstance(key, int) and key < len(tree):
        return tree[key]
    return None


def _any_true(tree: Any) -> bool:
    if isinstance(tree, dict):
        return any(_any_true(v) for v in tree.values())
    if isinstance(tree, list):
        return any(_any_true(v) for v in tree)
    return tree is True


def _join(path: str, key: str) -> str:
    if _PLAIN_KEY_RE.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


# -- lint output ---------------------------------------------------------------------------


def _repo_path(ctx: EngineContext, filename: str) -> str:
    """``filename`` (relative to the stack) as a repository path, for file:line messages."""
    full = Path(filename) if Path(filename).is_absolute() else ctx.stack_dir / filename
    try:
        return full.resolve().relative_to(ctx.repo_root.resolve()).as_posix()
    except ValueError:
        return filename


def _unformatted(stdout: str) -> list[tuple[str, int | None]]:
    """Files ``fmt -check`` lists; with ``-diff``, each with the first line it changes."""
    lines = stdout.splitlines()
    if not any(line.startswith("--- old/") for line in lines):  # list-only output
        return [(line, None) for line in lines if line.strip()]
    return [
        (name, _first_changed_line(lines, i + 2))
        for i, name in enumerate(lines[:-1])
        if lines[i + 1] == f"--- old/{name}"
    ]


def _first_changed_line(lines: list[str], start: int) -> int | None:
    for i in range(start, len(lines)):
        m = _HUNK_RE.match(lines[i])
        if m is None:
            continue
        line = int(m[1])
        for body in lines[i + 1:]:
            if not body.startswith(" "):
                return line
            line += 1
        return line
    return None


def _validate_diagnostics(stdout: str, tf: _Tf) -> list[Diagnostic] | None:
    """``validate -json`` diagnostics as ``file:line: summary: detail``; None if not JSON."""
    try:
        doc = json.loads(stdout)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    out: list[Diagnostic] = []
    for d in _entries(doc.get("diagnostics")):
        rng = _obj(d.get("range"))
        filename = rng.get("filename")
        start = _obj(rng.get("start"))
        message = " ".join(f"{d.get('summary', '')}: {d.get('detail', '')}".split()).rstrip(":")
        out.append(Diagnostic(
            severity="warning" if d.get("severity") == "warning" else "error",
            message=_clean(message, tf.secrets),
            file=_repo_path(tf.ctx, filename) if isinstance(filename, str) else None,
            line=start.get("line") if isinstance(start.get("line"), int) else None,
        ))
    return out


# -- the saved-plan summary ----------------------------------------------------------------


def _write_summary(path: Path, facts: _Facts) -> None:
    """``terraform-plan.json``: the summary and engine facts, written atomically, no values."""
    plan = facts.plan
    doc = {
        "format": SUMMARY_FORMAT,
        "engine": "terraform",
        "stack": plan.stack,
        "binary": facts.binary,
        "terraform_version": facts.version,
        "tool_version": plan.tool_version,
        "workspace": facts.workspace,
        "destroy": plan.destroy,
        "plan_file": PLAN_FILE,
        "changes": [{"address": c.address, "action": c.action, "fields": list(c.fields)}
                    for c in plan.changes],
        "outputs": [{"name": o.name, "action": o.action, "sensitive": o.sensitive}
                    for o in plan.outputs],
        "notes": list(plan.notes),
    }
    atomic_write(path, json.dumps(doc, indent=2, sort_keys=True) + "\n", what="plan summary")


def _read_summary(artifact: Path, stack: str) -> _Facts:
    """The saved plan's summary; UserError if it or the binary plan next to it is missing."""
    path = artifact / SUMMARY_FILE
    try:
        if not (artifact / PLAN_FILE).is_file():
            raise ValueError(f"{PLAN_FILE} is missing")
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != SUMMARY_FORMAT or doc.get("engine") != "terraform":
            raise ValueError(f"unsupported format {doc.get('format')!r}")
        if doc.get("stack") != stack:
            raise ValueError(f"it is the plan of stack {doc.get('stack')!r}")
        plan = PlanResult(
            stack=stack,
            changes=tuple(Change(c["address"], c["action"], tuple(c["fields"]))
                          for c in doc["changes"]),
            outputs=tuple(OutputChange(o["name"], o["action"], bool(o["sensitive"]))
                          for o in doc["outputs"]),
            destroy=bool(doc["destroy"]),
            artifact=artifact,
            tool_version=str(doc["tool_version"]),
            notes=tuple(str(n) for n in doc["notes"]),
        )
        return _Facts(str(doc["binary"]), str(doc["terraform_version"]),
                      doc.get("workspace"), plan)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise UserError(f"stack {stack!r}: cannot read the saved Terraform plan: {reason}",
                        path=os.fspath(path)) from exc
