"""Flag values the CLI refuses before a command runs, and how it reports them.

Issue 12: every bad value names its flag (and the ``GITOPS_PUSH_*`` variable it came
from); an empty value is refused rather than read as the default; with
``--output json`` a usage error is one JSON envelope too. Kept out of cli.py so the
command definitions stay a plain list.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from gitops_push.errors import ExitCode


def bad_value(ctx: click.Context, param: click.Parameter, message: str) -> click.BadParameter:
    """A bad value, naming the flag (click does) and the variable it came from, if any."""
    from click.core import ParameterSource

    envvar = getattr(param, "envvar", None)
    if (param.name and isinstance(envvar, str)
            and ctx.get_parameter_source(param.name) == ParameterSource.ENVIRONMENT):
        message += f" (from the environment variable {envvar})"
    return click.BadParameter(message, ctx=ctx, param=param)


def duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from gitops_push.config.schema import parse_duration

    seconds = parse_duration(value)
    if seconds is None:
        raise bad_value(ctx, param, f"{value!r} is not a duration like 90s, 10m or 1h")
    return seconds


def _check_not_empty(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Every option and argument that takes a value refuses an empty one (``--stack ''``,
    ``--plan-dir ''``), naming the flag: an empty value is a mistake (an unset CI variable
    interpolated), never a request for the default. Checked before the value is
    converted, since click turns an empty path into ``.``. Empty environment variables
    never reach this: click treats them as unset."""
    for v in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(v, str) and not v.replace(",", " ").strip():
            raise bad_value(ctx, param, f"{v!r}: the value must not be empty")


class _NonEmptyOption(click.Option):
    def type_cast_value(self, ctx: click.Context, value: Any) -> Any:
        _check_not_empty(ctx, self, value)
        return super().type_cast_value(ctx, value)


class _NonEmptyArgument(click.Argument):
    def type_cast_value(self, ctx: click.Context, value: Any) -> Any:
        _check_not_empty(ctx, self, value)
        return super().type_cast_value(ctx, value)


def refuse_empty_values(cmd: click.Command) -> None:
    """Give every value-taking parameter of the command tree the empty-value check."""
    for p in cmd.params:
        if type(p) is click.Option and not (p.is_flag or p.count):
            p.__class__ = _NonEmptyOption
        elif type(p) is click.Argument:
            p.__class__ = _NonEmptyArgument
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            refuse_empty_values(sub)


def usage_envelope(exc: click.ClickException, argv: list[str], json_by_default: bool) -> None:
    """docs/cli.md: with --output json, one JSON document also on failure, a bad flag
    included (click stops before the command knows its output format)."""
    from gitops_push import output as out

    wants_json = json_by_default  # GITOPS_PUSH_OUTPUT=json
    for i, arg in enumerate(argv):
        if arg in ("--output", "-o") and i + 1 < len(argv):
            wants_json = argv[i + 1] == "json"
        elif arg.startswith(("--output=", "-o")) and arg not in ("--output", "-o"):
            wants_json = arg.split("=", 1)[-1].removeprefix("-o") == "json"
    ctx = getattr(exc, "ctx", None)
    if not wants_json or ctx is None:
        return
    command = " ".join(ctx.command_path.split()[1:]) or "gitops-push"
    out.print_json(out.Envelope(command, exit_code=int(ExitCode.USAGE), status="error",
                                errors=[{"code": "usage", "message": exc.format_message(),
                                         "path": None}]))


F = TypeVar("F", bound=Callable[..., Any])


OUTPUTS = click.Choice(["table", "json"])


@dataclass
class State:
    """The global flags, shared by every command of one invocation."""

    repo: Path = Path()
    config: Path | None = None
    verbose: int = 0
    output: str = "table"
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def env(flag: str) -> str:
    """The GITOPS_PUSH_<FLAG> variable of a flag (CI templates set these)."""
    return "GITOPS_PUSH_" + flag.upper().replace("-", "_")


def output_option(f: F) -> F:
    return click.option("--output", "-o", type=OUTPUTS, default="table", show_default=True,
                        envvar=env("output"), help="Table for people, JSON envelope for tools.")(f)


def selection_options(f: F) -> F:
    f = click.option("--stack", "stacks", multiple=True, metavar="NAME", envvar=env("stack"),
                     help="Run only this stack (repeatable; env: space-separated).")(f)
    return click.option("--all", "all_stacks", is_flag=True, envvar=env("all"),
                        help="Every stack, changed or not.")(f)


def range_options(f: F) -> F:
    f = click.option("--head", metavar="REF", envvar=env("head"),
                     help="Commit to compare (default HEAD).")(f)
    return click.option("--base", metavar="REF", envvar=env("base"),
                        help="Commit to compare with (default: from CI, else merge-base with "
                             "the default branch).")(f)


def run_options(f: F) -> F:
    f = click.option("--summary-md", type=click.Path(dir_okay=False, path_type=Path),
                     envvar=env("summary-md"), help="Write a Markdown summary (PR/MR comment).")(f)
    f = click.option("--parallel", type=click.IntRange(1, 64), default=None,
                     envvar=env("parallel"), help="Stacks run at once per wave (default: CPUs).")(f)
    return output_option(f)


def open_repo(state: State) -> tuple[Any, Any]:
    from gitops_push import config as config_mod
    from gitops_push.git import Repo

    repo = Repo(state.repo)
    cfg_path = state.config
    if cfg_path is not None and not cfg_path.is_absolute():
        cfg_path = Path.cwd() / cfg_path
    return repo, config_mod.load(repo.root, cfg_path)


def flags_of(ctx: click.Context) -> dict[str, Any]:
    """The flags of this invocation for the audit record (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in ctx.params.items() if v not in (None, False, ())}


def stack_names(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for v in values for n in v.replace(",", " ").split())


def apply_options(f: F) -> F:
    f = click.option("--lock-ttl", default="1h", show_default=True, envvar=env("lock-ttl"),
                     callback=duration,
                     help="A lock left by a killed run expires after this (renewed while "
                          "alive).")(f)
    f = click.option("--lock-timeout", default="10m", show_default=True, callback=duration,
                     envvar=env("lock-timeout"), help="Wait this long for a held stack lock.")(f)
    f = click.option("--force-conflicts", is_flag=True, envvar=env("force-conflicts"),
                     help="Kubernetes: take over fields owned by another field manager "
                          "also in stacks with conflicts: fail (the default, force, always "
                          "does).")(f)
    f = click.option("--allow-destroy", is_flag=True, envvar=env("allow-destroy"),
                     help="Destroy stacks whose directory was removed from git.")(f)
    return click.option("--allow-branch", is_flag=True, envvar=env("allow-branch"),
                        help="Deploy from a branch other than the default (recorded).")(f)


def emit(output: str, envelope: Callable[[], Any], show: Callable[[], None]) -> None:
    """The one JSON-or-people branch: ``--output json`` prints the envelope (built only
    then), a table or message for people otherwise."""
    from gitops_push import output as out

    if output == "json":
        out.print_json(envelope())
    else:
        show()


def write_summaries(markdown: str, summary_md: Path | None) -> None:
    """A run's Markdown summary: to ``--summary-md``, and appended to the CI job's step
    summary when there is one (GITHUB_STEP_SUMMARY)."""
    from gitops_push import output as out
    from gitops_push.ci import step_summary_path
    from gitops_push.fsutil import atomic_write

    if summary_md is not None:
        atomic_write(summary_md, markdown, what="Markdown summary")
    step_summary = step_summary_path(os.environ)
    if step_summary:
        try:
            with open(step_summary, "a", encoding="utf-8") as fh:
                fh.write(markdown + "\n")
        except OSError as exc:
            out.warn(f"cannot append to GITHUB_STEP_SUMMARY: {exc.strerror}")
