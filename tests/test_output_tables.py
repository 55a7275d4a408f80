"""What people read: tables keep identifiers whole where they are copied from (CI logs)."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Callable

import pytest
from conftest import GitRepo
from test_cli_app import invoke

from gitops_push import output

RUN_ID = "20261128T101500Z-a1b2c3d4-github-123456789012-attempt-3"
STACK = "infra-network-eu-west-1-production-with-a-long-name"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _audit_entries() -> list[dict[str, object]]:
    return [{"finished_at": "2026-11-28T10:15:00Z", "run_id": RUN_ID, "command": "apply",
             "head": "0123456789abcdef" * 2, "actor": "Ada Author", "outcome": "success",
             "stacks": [{"name": STACK, "result": "applied"}]}]


def test_without_a_terminal_changed_never_wraps_stack_names(
        make_repo: Callable[..., GitRepo]) -> None:
    path = "infra/" + STACK.removeprefix("infra-")
    r = make_repo({f"{path}/main.tf": "#\n", "infra/b/main.tf": "#\n"})
    base = r.head()
    r.commit("x", {f"{path}/main.tf": "# changed\n"})
    code, out, _ = invoke(r, "changed", "--base", base, env={"COLUMNS": "80"})
    assert code == 0
    assert any(STACK in line and f"{path}/main.tf" in line for line in out.splitlines()), out


def test_without_a_terminal_run_ids_are_never_split(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    output.audit_table(_audit_entries())
    out = capsys.readouterr().out
    assert any(RUN_ID in line and f"{STACK}:applied" in line for line in out.splitlines()), out


def test_in_ci_tables_keep_identifiers_whole_even_on_a_terminal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Some CI runners give jobs a pseudo-terminal; CI=true still means a log to copy from."""
    term = _Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("CI", "true")
    output.locks_table([{"stack": STACK, "run_id": RUN_ID, "actor": "Ada",
                         "pipeline_url": "https://ci.example.com/p/1", "acquired_at": "t0",
                         "expires_at": "t1", "expired": False}])
    lines = term.getvalue().splitlines()
    assert any(RUN_ID in line and STACK in line for line in lines), term.getvalue()


def test_on_an_interactive_terminal_tables_fit_its_width(
        monkeypatch: pytest.MonkeyPatch) -> None:
    term = _Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.delenv("CI", raising=False)
    output.audit_table(_audit_entries())
    lines = re.sub(r"\x1b\[[0-9;]*m", "", term.getvalue()).splitlines()  # bold headers
    assert max(len(line) for line in lines) <= 100

