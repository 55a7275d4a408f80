"""Setting a repository up: init, and the CI templates shipped with gitops-push.
"""

from __future__ import annotations

import click

from gitops_push.cli.options import State


@click.command()
@click.option("--ci", type=click.Choice(["github", "gitlab", "none"]), default="none",
              show_default=True, help="Copy this CI system's templates into the repository.")
@click.option("--force", is_flag=True,
              help="Overwrite existing CI files (gitops-push.yaml is never overwritten).")
@click.option("--pip-spec", metavar="SPEC", default=None,
              help="What CI jobs pip install (GITOPS_PUSH_PIP_SPEC), e.g. a git URL pinned to "
                   "a commit (default: this install's, if it came from one).")
@click.pass_obj
def init(state: State, ci: str, force: bool, pip_spec: str | None) -> None:
    """Write a starter gitops-push.yaml (stacks discovered) and copy CI templates.

    An existing gitops-push.yaml is kept as it is, so this also adds CI files to a
    repository that is already set up.

    \b
    Examples:
      gitops-push init --ci github
      gitops-push init --ci gitlab --pip-spec git+https://github.com/ORG/gitops-push@COMMIT
      gitops-push init --ci gitlab --force
    """
    from gitops_push import init as init_mod
    from gitops_push import output as out
    from gitops_push.git import Repo

    state.command = "init"
    repo = Repo(state.repo)
    result = init_mod.init(repo, ci=ci, force=force, pip_spec=pip_spec)
    out.init_text(result)


@click.group()
def templates() -> None:
    """The CI templates shipped with gitops-push."""


@templates.command("list")
def templates_list() -> None:
    """List the shipped templates.

    \b
    Examples:
      gitops-push templates list
    """
    from gitops_push import init as init_mod

    for name, description in init_mod.list_templates():
        click.echo(f"{name}\t{description}")


@templates.command("show")
@click.argument("name")
def templates_show(name: str) -> None:
    """Print a shipped template.

    \b
    Examples:
      gitops-push templates list
      gitops-push templates show github/workflows/gitops-push-plan.yml
      gitops-push templates show gitlab/gitops-push.gitlab-ci.yml > ci/gitops-push.yml
    """
    from gitops_push import init as init_mod

    click.echo(init_mod.read_template(name), nl=False)
