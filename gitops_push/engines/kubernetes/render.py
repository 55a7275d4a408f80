"""A stack's objects: files read from its directory, or its kustomization rendered.

Locations are repository-relative (``stack_dir`` may be a temporary worktree). For lint,
kustomize is run through a wrapper kustomization that adds kustomize's own origin
annotations, so findings in rendered objects point at the file that defined them.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import yaml

from gitops_push import proc
from gitops_push.engines.base import Diagnostic, EngineContext
from gitops_push.engines.kubernetes.kubectl import KUBECTL
from gitops_push.engines.kubernetes.objects import (
    Manifest,
    display_path,
    identity_problem,
    kustomization_file,
    manifest_files,
    parse_file,
    parse_rendered,
)
from gitops_push.errors import ParseError, ToolError, UserError

if TYPE_CHECKING:
    from gitops_push.config import Stack

ORIGIN_ANNOTATION = "config.kubernetes.io/origin"
KUSTOMIZE_TIMEOUT = 600.0


def tree_root(stack: Stack, ctx: EngineContext) -> Path:
    """The checkout the stack lives in (``stack_dir`` may be a temporary worktree)."""
    depth = len([p for p in PurePosixPath(stack.path).parts if p not in (".", "")])
    root = ctx.stack_dir
    for _ in range(depth):
        root = root.parent
    return root


def parse_diag(exc: ParseError) -> Diagnostic:
    file, _, line = (exc.path or "").rpartition(":")
    if not line.isdigit():
        file, line = exc.path or "", ""
    return Diagnostic("error", exc.message, file=file or None, line=int(line) if line else None)


def read_files(stack: Stack, ctx: EngineContext) -> tuple[list[Manifest], list[Diagnostic]]:
    """Every object in the stack's manifest files, and what could not be read."""
    manifests: list[Manifest] = []
    errors: list[Diagnostic] = []
    for path, rel, problem in manifest_files(ctx.stack_dir, tree_root(stack, ctx)):
        display = display_path(stack.path, rel)
        if problem:
            errors.append(Diagnostic("error", problem, file=display))
            continue
        try:
            manifests.extend(parse_file(path.read_bytes(), display))
        except ParseError as exc:
            errors.append(parse_diag(exc))
        except OSError as exc:
            errors.append(Diagnostic("error", f"cannot read: {exc.strerror}", file=display))
    return manifests, errors


def kustomize(ctx: EngineContext, *, with_origins: bool = False) -> tuple[str, Path | None]:
    """``kubectl kustomize``; with origins, through a wrapper that annotates them.

    Returns the rendered YAML and the wrapper directory the origin paths are relative to.
    """
    def run(directory: Path) -> proc.Result:
        return proc.run([KUBECTL, "kustomize", str(directory)], env=ctx.env, cwd=ctx.stack_dir,
                        check=False, timeout=KUSTOMIZE_TIMEOUT, cancel=ctx.cancel,
                        secrets=ctx.secrets)

    if with_origins:
        with tempfile.TemporaryDirectory(prefix="gitops-push-kustomize-") as tmp:
            wrapper = Path(tmp).resolve()
            rel = os.path.relpath(ctx.stack_dir.resolve(), wrapper)
            (wrapper / "kustomization.yaml").write_text(yaml.safe_dump({
                "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "resources": [Path(rel).as_posix()], "buildMetadata": ["originAnnotations"]}))
            result = run(wrapper)
            if result.returncode == 0:
                return result.stdout, wrapper
    result = run(ctx.stack_dir)  # also the fallback: its error names the user's files
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        detail = lines[-1] if lines else f"exit code {result.returncode}"
        raise ToolError(f"kustomize failed: {re.sub(r'^(Error|error): ', '', detail)}",
                        command=result.command, returncode=result.returncode,
                        output_tail=result.tail)
    return result.stdout, None


def lint_kustomize(stack: Stack, ctx: EngineContext, kfile: Path
                   ) -> tuple[list[Manifest], list[Diagnostic]]:
    """Source files for syntax, then the rendered objects, located via kustomize origins."""
    _, errors = read_files(stack, ctx)
    kdisplay = display_path(stack.path, kfile.name)
    try:
        text, wrapper = kustomize(ctx, with_origins=True)
    except ToolError as exc:
        return [], [*errors, Diagnostic("error", exc.message, file=kdisplay)]
    try:
        rendered = parse_rendered(text, kdisplay)
    except ParseError as exc:
        return [], [*errors, parse_diag(exc)]
    root = tree_root(stack, ctx).resolve()
    return [locate(m, wrapper, root) for m in rendered], errors


def render(stack: Stack, ctx: EngineContext) -> list[Manifest]:
    """The stack's objects for plan, apply and drift; what lint calls an error stops here."""
    kfile = kustomization_file(ctx.stack_dir)
    if kfile is not None:
        try:
            text, _ = kustomize(ctx)
        except ToolError as exc:
            raise ToolError(f"stack {stack.name!r}: {exc.message}", command=exc.command,
                            returncode=exc.returncode, output_tail=exc.output_tail) from exc
        manifests = parse_rendered(text, display_path(stack.path, kfile.name))
    else:
        manifests, errors = read_files(stack, ctx)
        if errors:
            raise ParseError(f"stack {stack.name!r}: {errors[0].message}",
                             path=errors[0].location)
    for m in manifests:
        problem = identity_problem(m)
        if problem:
            raise UserError(f"stack {stack.name!r}: {problem[0]}", path=m.source)
    return manifests


def locate(m: Manifest, wrapper: Path | None, root: Path) -> Manifest:
    """Point a rendered object at the source file (and document) it came from."""
    meta = m.body.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or not isinstance(annotations, dict) \
            or ORIGIN_ANNOTATION not in annotations:
        return m
    rest = {k: v for k, v in annotations.items() if k != ORIGIN_ANNOTATION}
    new_meta = {k: v for k, v in meta.items() if k != "annotations"}
    if rest:
        new_meta["annotations"] = rest
    clean = replace(m, body={**m.body, "metadata": new_meta})
    try:
        origin = yaml.safe_load(str(annotations[ORIGIN_ANNOTATION]))
    except yaml.YAMLError:
        return clean
    rel = origin.get("path") or origin.get("configuredIn") if isinstance(origin, dict) else None
    if wrapper is None or not isinstance(rel, str):
        return clean
    source = (wrapper / rel).resolve()
    try:
        display = source.relative_to(root).as_posix()
    except ValueError:
        return clean
    located = replace(clean, file=display, line=None, node=None)
    if "path" not in origin:  # made by a generator: the kustomization is the source
        return located
    try:
        candidates = [c for c in parse_file(source.read_bytes(), display) if c.kind == m.kind]
    except (OSError, ParseError):
        return located
    named = [c for c in candidates if c.name and c.name in m.name]
    best = max(named, key=lambda c: len(c.name)) if named else (
        candidates[0] if len(candidates) == 1 else None)
    return replace(located, line=best.line, node=best.node) if best else located
