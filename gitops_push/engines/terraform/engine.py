"""Terraform / OpenTofu engine: lint, plan to a saved file, apply exactly that file, drift.

Every call goes through ``proc.run`` (argument lists, the filtered environment the
runner built, timeouts that stop Terraform with SIGINT so it releases its state lock).
Values never leave Terraform: summaries hold addresses, actions and attribute paths.
OpenTofu is this engine with ``binary: tofu`` (docs/terraform.md). The engine's private
helpers live next to it: ``settings`` (the ``terraform:`` settings), ``cli``
(running the binary), ``plan`` (plan JSON to summaries, the saved summary) and
``lint`` (fmt and validate output).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from gitops_push import proc
from gitops_push.engines.base import (
    ApplyResult,
    Diagnostic,
    DriftItem,
    DriftResult,
    EngineContext,
    LintResult,
    PlanResult,
)
from gitops_push.engines.terraform.cli import (
    Tf,
    installs_providers,
    parallelism,
    plan_args,
    require_inside,
    seconds,
    show_json,
)
from gitops_push.engines.terraform.fmt import FmtRuns
from gitops_push.engines.terraform.lint import repo_path, validate_diagnostics
from gitops_push.engines.terraform.plan import (
    PLAN_FILE,
    SUMMARY_FILE,
    PlanFacts,
    config_items,
    drift_items,
    move_notes,
    output_changes,
    read_summary,
    resource_changes,
    write_summary,
)
from gitops_push.engines.terraform.settings import (
    BIN_ENV,
    TerraformSettings,
    resolve_binary,
    settings_of,
)
from gitops_push.engines.terraform.version import probe_version
from gitops_push.errors import ToolError, UserError

if TYPE_CHECKING:
    from gitops_push.config import Stack


_STALE_MARKER = "Saved plan is stale"


# -- versions ----------------------------------------------------------------------------


# -- the engine --------------------------------------------------------------------------




class TerraformEngine:
    """Terraform or OpenTofu through their CLI; one instance per run, thread-safe."""

    name = "terraform"

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._cache_locks: dict[str, threading.Lock] = {}
        self._inited: dict[tuple[str, str, tuple[str, ...]], proc.Result] = {}
        self._fmt = FmtRuns()

    # -- preflight ---------------------------------------------------------------------
    def check(self, stacks: list[Stack], env: Mapping[str, str]) -> None:
        """Each binary the stacks use runs and is new enough, before any stack starts."""
        users: dict[str, list[str]] = {}
        for stack in stacks:
            if isinstance(stack.settings, TerraformSettings):
                binary = resolve_binary(stack.settings, env)
                users.setdefault(binary, []).append(stack.name)
                self._fmt.add(binary, stack.path)
        for binary, names in users.items():
            self.version(binary, env, f"used by stack {', '.join(sorted(names))}")

    def version(self, binary: str, env: Mapping[str, str], who: str = "") -> str:
        """``binary``'s version (cached per binary and PATH); ToolError if unusable."""
        key = (binary, env.get("PATH", ""))
        with self._lock:
            if key in self._versions:
                return self._versions[key]
        version = probe_version(binary, env, who)
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
        settings = settings_of(stack)
        with ThreadPoolExecutor(max_workers=1) as pool:  # fmt reads only the .tf files
            fmt_job = pool.submit(self._fmt.findings, tf, stack)
            init = self._init(tf, settings, backend=not ctx.lint_only, check=False)
            fmt = fmt_job.result()
        if init.returncode != 0 and not ctx.lint_only:
            # Terraform stops at a failing backend before it installs providers, and
            # validate would then blame the configuration: ask again without the backend
            offline = self._init(tf, settings, backend=False, check=False)
            if offline.returncode == 0:
                raise tf.fail(init)  # the backend (credentials, state store), not a finding
            init = offline
        validate = tf.run("validate", "-json", "-no-color", stream=False, check=False)
        diags = validate_diagnostics(validate.stdout, ctx, tf.secrets)
        errors = diags is not None and any(d.severity == "error" for d in diags)
        if init.returncode != 0 and not errors:
            raise tf.fail(init)  # not a configuration problem (network, registry, ...)
        if diags is None:
            raise tf.fail(validate, f"{tf.label} validate printed no JSON")
        if fmt.error is not None and not errors:  # validate names syntax errors
            diags.append(Diagnostic("error", f"{tf.label} fmt failed: {fmt.error}",
                                    repo_path(ctx, ".")))
        elif fmt.error is None:
            diags[:0] = [
                Diagnostic("error", f"not formatted (run `{tf.label} fmt -recursive`)",
                           repo_path(ctx, os.fspath(name)), line)
                for name, line in fmt.files
            ]
        return LintResult(stack=stack.name, diagnostics=tuple(diags))

    # -- plan --------------------------------------------------------------------------
    def plan(self, stack: Stack, ctx: EngineContext, *, destroy: bool = False) -> PlanResult:
        """Plan to ``work_dir/terraform.tfplan`` and summarise it without values."""
        settings = settings_of(stack)
        tf = self._prepare(stack, ctx)
        plan_file = tf.work_dir / PLAN_FILE
        summary = tf.work_dir / SUMMARY_FILE
        for old in (plan_file, summary):  # a failed plan must not leave an older artifact
            old.unlink(missing_ok=True)
        self._init(tf, settings)
        self._select_workspace(tf, settings.workspace)
        result, tail = tf.run_ui(*plan_args(ctx, settings, plan_file,
                                            ["-destroy"] if destroy else []))
        if result.returncode != 0:
            raise tf.fail(result, tail=tail)
        doc = show_json(tf, plan_file)
        version = str(doc.get("terraform_version", ""))
        secrets = tf.secrets
        planned = PlanResult(
            stack=stack.name,
            changes=resource_changes(doc.get("resource_changes"), secrets),
            outputs=output_changes(doc.get("output_changes"), secrets),
            destroy=destroy,
            artifact=tf.work_dir,
            tool_version=f"{tf.label} {version}".strip(),
            notes=move_notes(doc.get("resource_changes"), secrets),
        )
        write_summary(summary, PlanFacts(tf.binary, version, settings.workspace, planned))
        return planned

    def load_plan(self, stack: Stack, ctx: EngineContext, artifact: Path) -> PlanResult:
        """Rebuild the PlanResult of a saved plan; refuse one made by another version."""
        facts = read_summary(artifact, stack.name)
        binary = resolve_binary(settings_of(stack), ctx.env)
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
        facts = read_summary(plan.artifact, stack.name)
        plan_file = (plan.artifact / PLAN_FILE).absolute()
        settings = settings_of(stack)
        tf = self._prepare(stack, ctx)
        self._init(tf, settings)  # a new process (or job) has an empty data dir
        self._select_workspace(tf, facts.workspace)
        result, tail = tf.run_ui("apply", "-input=false", "-no-color",
                                 f"-lock-timeout={seconds(settings.lock_timeout)}",
                                 *parallelism(settings), os.fspath(plan_file))
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
        settings = settings_of(stack)
        tf = self._prepare(stack, ctx)
        self._init(tf, settings)
        self._select_workspace(tf, settings.workspace)
        refresh_file = tf.work_dir / "drift-refresh.tfplan"
        config_file = tf.work_dir / "drift-config.tfplan"
        items: list[DriftItem] = []
        try:
            if not after_apply and self._plan_changed(tf, settings, refresh_file,
                                                      ["-refresh-only"]):
                doc = show_json(tf, refresh_file)
                items += drift_items(doc.get("resource_drift"), tf.secrets)
            if self._plan_changed(tf, settings, config_file, []):
                doc = show_json(tf, config_file)
                if after_apply:
                    items += drift_items(doc.get("resource_drift"), tf.secrets)
                items += config_items(doc.get("resource_changes"), tf.secrets)
        finally:  # these plans hold values and nobody applies them
            refresh_file.unlink(missing_ok=True)
            config_file.unlink(missing_ok=True)
        return DriftResult(stack=stack.name, items=tuple(items))

    def _plan_changed(self, tf: Tf, settings: TerraformSettings, out: Path,
                      mode: list[str]) -> bool:
        """``plan -detailed-exitcode``: 0 nothing to do, 2 changes, anything else failed."""
        result, tail = tf.run_ui(*plan_args(tf.ctx, settings, out,
                                            [*mode, "-detailed-exitcode"]))
        if result.returncode not in (0, 2):
            raise tf.fail(result, tail=tail)
        return result.returncode == 2

    # -- shared steps ------------------------------------------------------------------
    def _prepare(self, stack: Stack, ctx: EngineContext) -> Tf:
        """Binary, scratch dirs and environment; TF_DATA_DIR stays out of the work tree."""
        settings = settings_of(stack)
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
        return Tf(resolve_binary(settings, ctx.env), ctx, work_dir, env, settings.timeout,
                   secrets)

    def _init(self, tf: Tf, settings: TerraformSettings, *, backend: bool = True,
              check: bool = True) -> proc.Result:
        """``init -reconfigure``: never migrate state in CI, whatever the data dir held.

        A failed init raises when ``check``; otherwise its result is returned (lint
        reports the configuration errors that made it fail) and nothing is remembered.
        """
        for value in settings.backend_config:
            if "=" not in value and backend:
                require_inside(tf.ctx.stack_dir, value, "backend_config")
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

    def _select_workspace(self, tf: Tf, workspace: str | None) -> None:
        if workspace:
            tf.run("workspace", "select", "-or-create=true", "-no-color", workspace)
