"""Flag values the CLI refuses before a command runs, and how it reports them.

Issue 12: every bad value names its flag (and the ``GITOPS_PUSH_*`` variable it came
from); an empty value is refused rather than read as the default; with
``--output json`` a usage error is one JSON envelope too. Kept out of cli.py so the
command definitions stay a plain list.
"""

from __future__ import annotations

from typing import Any

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
