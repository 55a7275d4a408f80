"""Running the terraform (or tofu) binary for one stack: command lines, UI output, plan JSON.

Every call goes through ``proc.run`` (argument lists, the filtered environment the
runner built, timeouts that stop Terraform with SIGINT so it releases its state lock).
Plan and apply run with ``-json`` and are rendered back to plain lines here, because
Terraform's human output can show copies of sensitive values in clear.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitops_push import proc
from gitops_push.engines.base import EngineContext
from gitops_push.engines.terraform.plan import obj
from gitops_push.engines.terraform.settings import TerraformSettings
from gitops_push.errors import ToolError, UserError


@dataclass(frozen=True)
class Tf:
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
    diag = obj(msg.get("diagnostic"))
    if msg.get("type") == "diagnostic" and diag:
        rng = obj(diag.get("range"))
        if rng.get("filename"):
            lines.append(f"  on {rng['filename']} line {obj(rng.get('start')).get('line')}")
        lines += [f"  {d}" for d in str(diag.get("detail") or "").strip().splitlines()]
    return lines


# -- command lines -----------------------------------------------------------------------


# What may make ``init`` install a provider: a provider, module, required_providers,
# backend or cloud block (a backend's state may name providers the configuration no longer
# does), or a resource / data source / ephemeral resource whose type is not a built-in
# terraform_*. Block labels may be quoted or not (``resource null_resource x {}``).
_PROVIDER_HINT = re.compile(
    r'^[ \t]*(?:(?:provider|module|backend)[ \t]+"?[A-Za-z_]|required_providers\b'
    r'|cloud[ \t]*\{|(?:resource|data|ephemeral)[ \t]+"?(?!terraform_)[A-Za-z_])',
    re.MULTILINE)
_MAY_INSTALL_FILES = (".terraform.lock.hcl", "terraform.tfstate", "terraform.tfstate.d")


def installs_providers(stack_dir: Path) -> bool:
    """Whether ``init`` may install providers (into the shared cache).

    Conservative: only a directory of ``.tf``/``.tofu`` files using nothing but built-in
    ``terraform_*`` resources and data sources, with the default backend, no state file
    (one could hold resources of other providers) and no lock file, is known not to.
    """
    try:
        files = list(stack_dir.iterdir())
    except OSError:
        return True
    for f in files:
        name = f.name
        if name in _MAY_INSTALL_FILES or name.endswith((".tf.json", ".tofu.json")):
            return True
        if name.endswith((".tf", ".tofu")):
            try:
                text = f.read_text(encoding="utf-8", errors="replace")
            except OSError:
                return True
            if _PROVIDER_HINT.search(text):
                return True
    return False


def seconds(value: float) -> str:
    return f"{value:g}s"


def parallelism(settings: TerraformSettings) -> list[str]:
    return [f"-parallelism={settings.parallelism}"] if settings.parallelism else []


def plan_args(ctx: EngineContext, settings: TerraformSettings, out: Path,
              mode: list[str]) -> list[str]:
    args = ["plan", "-input=false", "-no-color", f"-out={out.absolute()}",
            f"-lock-timeout={seconds(settings.lock_timeout)}", *parallelism(settings), *mode]
    for name in settings.var_files:
        require_inside(ctx.stack_dir, name, "var_files")
        args.append(f"-var-file={name}")
    args += [f"-var={k}={v}" for k, v in settings.vars]
    return args


def require_inside(stack_dir: Path, name: str, key: str) -> None:
    """Runtime twin of the config check: a symlink must not lead out of the stack either."""
    root = stack_dir.resolve()
    target = (stack_dir / name).resolve()
    if target != root and root not in target.parents:
        raise UserError(f"terraform: {key}: {name!r} resolves outside the stack directory",
                        path=os.fspath(stack_dir / name))


def show_json(tf: Tf, plan_file: Path) -> dict[str, Any]:
    """``show -json``: holds every value in clear, so it is parsed in memory and dropped.

    Not redacted by proc.run: replacing a secret that equals a JSON key or literal
    (``true``) would corrupt the document; what we keep is redacted by ``plan.clean``.
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
