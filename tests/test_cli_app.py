"""The command line: help, version, env-var flags, the JSON envelope and exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import EXAMPLE_FILES, GitRepo

from gitops_push import __version__, cli
from gitops_push.errors import DOCUMENTED_EXIT_CODES, ExitCode

ROOT = Path(__file__).resolve().parent.parent


def invoke(repo: GitRepo | None, *args: str, env: dict[str, str] | None = None
           ) -> tuple[int, str, str]:
    """Run the CLI in-process like main() does: (exit code, stdout, stderr)."""
    runner = CliRunner()
    argv = [*(["-C", str(repo.path)] if repo else []), *args]
    result = runner.invoke(_entry, argv, env={"NO_COLOR": "1", "COLUMNS": "100", **(env or {})},
                           catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                 "help_option_names": []})
@click.pass_context
def _entry(ctx: click.Context) -> None:
    ctx.exit(cli.run(list(ctx.args)))


def all_commands() -> list[list[str]]:
    out: list[list[str]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        else:
            out.append(path)

    walk(cli.cli, [])
    return out


def test_version() -> None:
    code, out, _ = invoke(None, "--version")
    assert code == 0 and __version__ in out


@pytest.mark.parametrize("command", all_commands(), ids=" ".join)
def test_every_command_has_help_with_examples(command: list[str]) -> None:
    code, out, _ = invoke(None, *command, "--help")
    assert code == 0
    assert "Examples:" in out and "gitops-push " + command[0] in out


def test_help_does_not_import_heavy_modules() -> None:
    code = ("import sys; from gitops_push.cli import main\n"
            "sys.argv = ['gitops-push', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('kubernetes', "
            "'kubernetes_validate', 'jsonschema', 'yaml') or m in ('rich.table', 'rich.live')"
            " or m.startswith(('gitops_push.engines', 'gitops_push.run', 'gitops_push.detect'))]\n"
            "print('HEAVY', heavy)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert "HEAVY []" in res.stdout


def test_changed_json_envelope_keys_are_pinned(repo: GitRepo) -> None:
    base = repo.head()
    repo.commit("x", {"infra/network/x.tf": "#\n"})
    code, out, _ = invoke(repo, "changed", "--base", base, "--output", "json")
    assert code == 0
    doc = json.loads(out)
    assert sorted(doc) == ["command", "data", "errors", "exit_code", "schema_version", "status",
                           "warnings"]
    assert doc["schema_version"] == 1 and doc["status"] == "success"
    stack = doc["data"]["stacks"][0]
    assert {"name", "path", "type", "status", "wave", "files"} <= set(stack)
    assert (stack["name"], stack["status"], stack["wave"]) == ("network", "changed", 1)


def test_flags_come_from_environment_variables(repo: GitRepo) -> None:
    base = repo.head()
    repo.commit("x", {"infra/app/x.tf": "#\n"})
    code, out, _ = invoke(repo, "changed", env={"GITOPS_PUSH_BASE": base,
                                                "GITOPS_PUSH_OUTPUT": "json"})
    assert code == 0
    assert [s["name"] for s in json.loads(out)["data"]["stacks"]] == ["app"]


def test_a_config_error_exits_2_with_file_line_and_a_json_error(repo: GitRepo) -> None:
    repo.commit("bad", {"gitops-push.yaml": "version: 1\nstacks:\n  - name: x\n    pth: a\n"})
    code, out, err = invoke(repo, "changed", "--output", "json")
    assert code == ExitCode.USAGE
    doc = json.loads(out)
    assert doc["status"] == "error" and doc["exit_code"] == 2
    assert doc["errors"][0]["path"] == "gitops-push.yaml:4"
    assert "gitops-push.yaml:4" in err and "Traceback" not in err


def test_a_bad_flag_is_a_usage_error(repo: GitRepo) -> None:
    code, _, err = invoke(repo, "changed", "--output", "xml")
    assert code == ExitCode.USAGE and "xml" in err


def test_outside_a_repository_the_error_says_so(tmp_path: Path) -> None:
    code, _, err = invoke(None, "-C", str(tmp_path), "changed")
    assert code == ExitCode.USAGE and "not a git repository" in err


def test_hostile_names_are_printed_literally(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({**EXAMPLE_FILES})
    base = r.head()
    name = "infra/network/[bold red]x[/] $(id) \x1b[31mred.tf"
    r.commit("odd", {name: "#\n"})
    code, out, _ = invoke(r, "changed", "--base", base)
    assert code == 0
    assert "[bold red]x[/]" in out and "$(id)" in out
    assert "\x1b" not in out and "\\x1b[31mred" in out


def documented_exit_codes() -> dict[int, str]:
    """The rows of the exit-code table in docs/cli.md: code -> name."""
    doc = (ROOT / "docs" / "cli.md").read_text()
    section = doc[doc.index("## Exit codes"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    rows = re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", section, re.MULTILINE)
    assert rows, "docs/cli.md has no exit-code table"
    return {int(code): name for code, name in rows}


def test_exit_codes_are_documented() -> None:
    """The docs' table and the code agree both ways: every code the CLI may return is
    documented under its name, and the docs name no code the CLI does not have."""
    assert documented_exit_codes() == {int(c): c.name for c in ExitCode}
    assert set(DOCUMENTED_EXIT_CODES) == set(documented_exit_codes())


def test_cli_reference_is_current() -> None:
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, "docs/cli.md is stale: run scripts/gen_cli_docs.py"


def test_every_config_key_is_documented() -> None:
    from gitops_push.engines.kubernetes import settings as _k8s_settings
    from gitops_push.engines.terraform import settings as terraform

    config_doc = (ROOT / "docs" / "config.md").read_text()
    for key in ("version", "default_branch", "stacks", "defaults", "discover", "audit", "name",
                "path", "type", "depends_on", "watch", "credentials", "mode", "branch",
                "notes_ref", "directory"):
        assert f"`{key}`" in config_doc, key
    for keys, doc in ((terraform.SETTINGS_KEYS, "terraform.md"),
                      (_k8s_settings.SETTINGS_KEYS, "kubernetes.md")):
        text = (ROOT / "docs" / doc).read_text()
        assert [k for k in keys if f"`{k}`" not in text] == [], doc


# -- every bad value names its flag (issue 12) ------------------------------------------------
def value_params() -> list[tuple[list[str], str]]:
    """(command path, flag or argument) for every parameter that takes a value."""
    out: list[tuple[list[str], str]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        for p in cmd.params:
            if isinstance(p, click.Option) and not (p.is_flag or p.count):
                out.append((path, max(p.opts, key=len)))
            elif isinstance(p, click.Argument):
                out.append((path, (p.name or "").upper()))
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])

    walk(cli.cli, [])
    return out


@pytest.mark.parametrize(("command", "flag"), value_params(),
                         ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_an_empty_value_is_refused_naming_the_flag(command: list[str], flag: str,
                                                   tmp_path: Path) -> None:
    if not command:  # a global option: give it a command
        args = [flag, "", "status"]
    elif flag.startswith("-"):
        args = [*command, flag, ""]
    else:
        args = [*command, ""]
    prefix = [] if flag == "--repo" else ["-C", str(tmp_path)]
    code, _, err = invoke(None, *prefix, *args)
    assert code == ExitCode.USAGE, err
    assert f"'{flag}'" in err and "must not be empty" in err, err


@pytest.mark.parametrize(("args", "flag"), [
    (["apply", "--lock-timeout", "soon"], "--lock-timeout"),
    (["drift", "--lock-ttl", "forever"], "--lock-ttl"),
    (["rollback", "--to", "HEAD", "--lock-timeout", "10 minutes"], "--lock-timeout"),
    (["plan", "--parallel", "0"], "--parallel"),
    (["plan", "--parallel", "many"], "--parallel"),
    (["changed", "--output", "yaml"], "--output"),
    (["lint", "--stack", " , "], "--stack"),
    (["init", "--ci", "jenkins"], "--ci"),
])
def test_a_bad_flag_value_names_the_flag(repo: GitRepo, args: list[str], flag: str) -> None:
    code, _, err = invoke(repo, *args)
    assert code == ExitCode.USAGE and f"'{flag}'" in err, err


def test_a_bad_value_from_the_environment_names_the_variable(repo: GitRepo) -> None:
    code, _, err = invoke(repo, "apply", env={"GITOPS_PUSH_LOCK_TIMEOUT": "soon"})
    assert code == ExitCode.USAGE
    assert "'--lock-timeout'" in err and "GITOPS_PUSH_LOCK_TIMEOUT" in err


@pytest.mark.parametrize("stack", ["", " ", "\n "])  # the composite action's empty `stacks`
def test_an_empty_environment_variable_is_unset_not_an_error(repo: GitRepo, stack: str) -> None:
    code, _, err = invoke(repo, "lint", "--base", "HEAD", env={
        "GITOPS_PUSH_STACK": stack, "GITOPS_PUSH_HEAD": "", "GITOPS_PUSH_SUMMARY_MD": ""})
    assert code == 0 and "no stack changed" in err, err


def test_locks_break_of_an_unknown_stack_is_an_error(repo: GitRepo) -> None:
    code, _, err = invoke(repo, "locks", "break", "nosuch")
    assert code == ExitCode.USAGE
    assert "no stack 'nosuch'" in err and "network" in err
    code, _, err = invoke(repo, "locks", "break", "network")
    assert code == 0 and "not locked" in err


@pytest.mark.parametrize("args", [["changed", "--output", "json", "--base", ""],
                                  ["plan", "-o", "json", "--parallel", "0"],
                                  ["apply", "--output=json", "--lock-timeout", "soon"]])
def test_a_bad_flag_with_json_output_still_prints_one_envelope(repo: GitRepo,
                                                              args: list[str]) -> None:
    code, out, _ = invoke(repo, *args)
    doc = json.loads(out)
    assert code == doc["exit_code"] == ExitCode.USAGE and doc["status"] == "error"
    assert doc["command"] == args[0] and doc["errors"][0]["code"] == "usage"
    assert "Invalid value for '--" in doc["errors"][0]["message"]
