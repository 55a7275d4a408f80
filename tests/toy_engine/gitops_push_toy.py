"""A small third-party engine, installed by tests/test_engines_registry.py through the
``gitops_push.engines`` entry-point group exactly as a separate distribution would be.

A ``toy`` stack is a directory of ``*.txt`` files; the live system is the directory the
stack's ``toy: {target: ...}`` setting names. Plan compares them, apply copies the files
across (and deletes what git no longer has), drift reports the differences.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitops_push.config.schema import Section
from gitops_push.engines.base import (
    ApplyResult,
    Change,
    DriftItem,
    DriftResult,
    EngineContext,
    EngineSpec,
    LintResult,
    PlanResult,
)

PLAN_FILE = "toy-plan.json"


@dataclass(frozen=True)
class ToySettings:
    target: str = ""


def parse_settings(section: Section) -> ToySettings:
    section.only(["target"])
    return ToySettings(target=section.str("target") or "")


def _changes(stack_dir: Path, target: Path) -> tuple[Change, ...]:
    want = {p.name: p.read_text() for p in stack_dir.glob("*.txt")}
    have = {p.name: p.read_text() for p in target.glob("*.txt")} if target.is_dir() else {}
    out = [Change(name, "create" if name not in have else "update")
           for name, text in want.items() if have.get(name) != text]
    out += [Change(name, "delete") for name in have if name not in want]
    return tuple(sorted(out, key=lambda c: c.address))


class ToyEngine:
    name = "toy"

    def check(self, stacks: list[Any], env: Mapping[str, str]) -> None:
        return None

    def lint(self, stack: Any, ctx: EngineContext) -> LintResult:
        return LintResult(stack.name)

    def plan(self, stack: Any, ctx: EngineContext, *, destroy: bool = False) -> PlanResult:
        changes = _changes(ctx.stack_dir, Path(stack.settings.target))
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        (ctx.work_dir / PLAN_FILE).write_text(json.dumps([[c.address, c.action] for c in changes]))
        return PlanResult(stack.name, changes=changes, artifact=ctx.work_dir)

    def load_plan(self, stack: Any, ctx: EngineContext, artifact: Path) -> PlanResult:
        saved = json.loads((artifact / PLAN_FILE).read_text())
        return PlanResult(stack.name, changes=tuple(Change(a, b) for a, b in saved),
                          artifact=artifact)

    def apply(self, stack: Any, ctx: EngineContext, plan: PlanResult) -> ApplyResult:
        target = Path(stack.settings.target)
        target.mkdir(parents=True, exist_ok=True)
        for change in plan.changes:
            if change.action == "delete":
                (target / change.address).unlink()
            else:
                (target / change.address).write_text((ctx.stack_dir / change.address).read_text())
            ctx.on_line(f"{change.action} {change.address}")
        return ApplyResult(stack.name, changes=plan.changes)

    def drift(self, stack: Any, ctx: EngineContext, *, after_apply: bool = False) -> DriftResult:
        return DriftResult(stack.name, tuple(
            DriftItem(c.address, "changed") for c in _changes(ctx.stack_dir,
                                                             Path(stack.settings.target))))


ENGINE = EngineSpec(name="toy", parse_settings=parse_settings, factory=ToyEngine)
