"""The command line: click only. Options become arguments of one core call; the result
goes to output.py; the exit code comes from the result. Errors are mapped once, in
``main``. Heavy modules are imported inside commands so ``--help`` stays instant.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import click

from gitops_push import __version__
from gitops_push.cli.options import State, env, refuse_empty_values, usage_envelope
from gitops_push.errors import DOCUMENTED_EXIT_CODES, ExitCode, GitopsPushError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="gitops-push")
@click.option("-C", "--repo", type=click.Path(file_okay=False, path_type=Path), default=".",
              envvar=env("repo"), help="Repository to work in (default: current directory).")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar=env("config"), help="Config file (default: gitops-push.yaml at the root).")
@click.option("-v", "--verbose", count=True, help="More detail; -vv logs every command run.")
@click.pass_context
def cli(ctx: click.Context, repo: Path, config: Path | None, verbose: int) -> None:
    """Push-based GitOps: plan and apply changed Terraform and Kubernetes stacks from CI,
    with a tamper-evident audit trail in git.

    \b
    Examples:
      gitops-push changed                    # which stacks changed, and why
      gitops-push plan --plan-dir plans      # in a merge request
      gitops-push apply --plan-dir plans     # on the default branch
      gitops-push drift                      # scheduled: is live state still git's?
    """
    state: State = ctx.ensure_object(State)
    state.repo, state.config, state.verbose = repo, config, verbose
    if verbose >= 2:
        import logging

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(asctime)s %(name)s: %(message)s")


from gitops_push.cli import runs, scale, setup, trail  # noqa: E402  (the group comes first)

for command in (runs.changed, runs.lint, runs.plan, runs.apply, runs.drift, runs.rollback,
                trail.audit, trail.status, trail.locks, setup.init, setup.templates):
    cli.add_command(command)
scale.register(cli)  # fan-out, summary, comment (issue 15)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map every outcome to a documented exit code."""
    code = run(argv)
    # The process ends here. Its last garbage collection would walk every object the
    # imports created (10-40 ms of every run, issue 14) to free nothing that matters:
    # frozen, they are left to the exit. Files are closed and handlers flushed already.
    gc.freeze()
    sys.exit(code)


def run(argv: list[str] | None = None) -> int:
    state = State()
    refuse_empty_values(cli)
    try:
        cli.main(args=argv, prog_name="gitops-push", standalone_mode=False, obj=state)
        code = int(state.extra.get("exit_code", 0))
    except click.exceptions.Exit as exc:
        code = int(exc.exit_code)
    except click.Abort:
        code = ExitCode.INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        code = ExitCode.USAGE
        usage_envelope(exc, sys.argv[1:] if argv is None else argv,
                       os.environ.get(env("output")) == "json")
    except GitopsPushError as exc:
        code = _report(state, exc)
    except KeyboardInterrupt:
        from gitops_push import output as out

        out.message("interrupted", style="red")
        code = ExitCode.INTERRUPTED
    except Exception as exc:  # a bug: short message, traceback with -v
        from gitops_push import output as out

        if state.verbose:
            import traceback

            traceback.print_exc()
        out.error(f"internal error: {type(exc).__name__}: {exc} (run with -v for a traceback)")
        code = ExitCode.INTERNAL
    assert code in DOCUMENTED_EXIT_CODES, code
    return code


def _report(state: State, exc: GitopsPushError) -> int:
    from gitops_push import output as out

    code = int(exc.exit_code)
    out.error(exc)
    if state.output == "json" and state.command:
        out.print_json(out.Envelope(state.command, exit_code=code, status="error",
                                    errors=[out.error_entry(exc)]))
    return code
