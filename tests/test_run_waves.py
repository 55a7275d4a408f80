"""run_waves, the one scheduler: wave by wave, stacks of a wave side by side, dependents of
a failure skipped, a crashing task reported as that stack's failure."""

from __future__ import annotations

import os
import threading
import time

import pytest

from gitops_push.config import Stack
from gitops_push.detect.changes import StackChange
from gitops_push.errors import ToolError
from gitops_push.run.model import NullReporter, StackOutcome
from gitops_push.run.waves import base_outcome, go_threads, run_waves, run_width

DEPS = {"app": {"net"}, "web": {"app"}}


def change(name: str, wave: int) -> StackChange:
    return StackChange(Stack(name, f"stacks/{name}", "terraform"), "changed", wave=wave)


CHANGES = [change("net", 0), change("solo", 0), change("app", 1), change("web", 2)]


def run(task: object, parallel: int = 4) -> dict[str, StackOutcome]:
    outcomes = run_waves(CHANGES, task, parallel=parallel,  # type: ignore[arg-type]
                         reporter=NullReporter(), cancel=threading.Event(),
                         depends=lambda name: DEPS.get(name, set()))
    return {o.name: o for o in outcomes}


def test_waves_run_in_order_and_a_wave_runs_side_by_side() -> None:
    spans: dict[str, tuple[float, float]] = {}

    def task(c: StackChange) -> StackOutcome:
        start = time.monotonic()
        time.sleep(0.2)
        spans[c.stack.name] = (start, time.monotonic())
        return base_outcome(c, "applied")

    result = run(task)
    assert {n: o.result for n, o in result.items()} == dict.fromkeys(
        ("net", "solo", "app", "web"), "applied")
    assert spans["net"][0] < spans["solo"][1] and spans["solo"][0] < spans["net"][1]
    assert spans["app"][0] >= max(spans["net"][1], spans["solo"][1])
    assert spans["web"][0] >= spans["app"][1]


def test_dependents_of_a_failure_are_skipped_and_others_go_on() -> None:
    def task(c: StackChange) -> StackOutcome:
        if c.stack.name == "net":
            raise ToolError("terraform apply failed")
        return base_outcome(c, "applied")

    result = run(task)
    assert result["net"].result == "failed" and "terraform apply failed" in result["net"].message
    assert result["solo"].result == "applied"
    assert result["app"].result == "skipped"
    assert result["app"].message == "skipped: dependency failed (net)"
    assert result["web"].message == "skipped: dependency failed (app)"


def test_a_bug_in_a_task_fails_only_that_stack() -> None:
    def task(c: StackChange) -> StackOutcome:
        if c.stack.name == "solo":
            raise KeyError("oops")
        return base_outcome(c, "applied")

    result = run(task)
    assert result["solo"].result == "failed"
    assert result["solo"].message.startswith("internal error: KeyError")
    assert result["web"].result == "applied"


def test_width_and_go_threads_share_the_cpus_between_running_stacks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_width(CHANGES, 8) == 2  # the widest wave
    assert run_width(CHANGES, 1) == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert go_threads(2, {}) == {"GOMAXPROCS": "4"}
    assert go_threads(1, {}) == {}  # one stack at a time: no limit
    assert go_threads(2, {"GOMAXPROCS": "3"}) == {}  # the user's value wins
