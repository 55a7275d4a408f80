"""Commands for scaling out across CI runners (issue 15): ``fan-out``, ``summary`` and
``comment``. Registered on the main group by ``gitops_push.cli``; click only here."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from gitops_push.cli.options import (
    State,
    emit,
    env,
    flags_of,
    open_repo,
    output_option,
    stack_names,
    write_summaries,
)

PLATFORMS = click.Choice(["github", "gitlab"])


@click.command("fan-out")
@click.option("--platform", type=PLATFORMS, required=True, envvar=env("platform"),
              help="github: a strategy.matrix JSON; gitlab: a child-pipeline YAML.")
@click.option("--for", "command", type=click.Choice(["apply", "plan", "drift"]),
              required=True, help="Select stacks exactly as this command would.")
@click.option("--max-jobs", type=click.IntRange(1, 10_000), default=256, show_default=True,
              envvar=env("max-jobs"), help="Group stacks into at most this many jobs.")
@click.option("--max-waves", type=click.IntRange(0, 1000), default=0, envvar=env("max-waves"),
              help="Merge neighbouring waves into at most this many levels (0: no limit); "
                   "the GitHub fan-out workflow has one matrix job per level.")
@click.option("--base", metavar="REF", envvar=env("base"),
              help="Compare with REF (apply: instead of each stack's last deployment).")
@click.option("--stack", "stacks", multiple=True, metavar="NAME", envvar=env("stack"),
              help="Only these stacks (repeatable; env: space-separated).")
@click.option("--all", "all_stacks", is_flag=True, envvar=env("all"),
              help="Every stack, changed or not.")
@click.option("--allow-destroy", is_flag=True, envvar=env("allow-destroy"),
              help="apply: plan jobs destroying stacks removed from git.")
@click.option("--include", "includes", multiple=True, metavar="FILE",
              help="gitlab: the child pipeline includes this local file for the job "
                   "definitions (repeatable) instead of embedding the shipped ones.")
@click.option("--github-output", is_flag=True,
              help="github: also write matrix, waves and wave-N to $GITHUB_OUTPUT.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the job plan to this file instead of stdout.")
@click.pass_context
def fan_out(ctx: click.Context, platform: str, command: str, max_jobs: int, max_waves: int,
            base: str | None, stacks: tuple[str, ...], all_stacks: bool, allow_destroy: bool,
            includes: tuple[str, ...], github_output: bool, out_file: Path | None) -> None:
    """Print a CI job plan: one job per stack or group, in dependency order.

    \b
    Examples:
      gitops-push fan-out --platform gitlab --for apply --out child.yml
      gitops-push fan-out --platform github --for apply --max-waves 6 --github-output
      gitops-push fan-out --platform github --for drift --max-jobs 20
    """
    from gitops_push import output as out
    from gitops_push.ci import github_output_path
    from gitops_push.run import fanout
    from gitops_push.run import model as model_mod

    state: State = ctx.obj
    state.command = "fan-out"
    repo, config = open_repo(state)
    opts = model_mod.RunOptions(command, base=base, all_stacks=all_stacks,
                               stacks=stack_names(stacks), allow_destroy=allow_destroy,
                               flags=flags_of(ctx))
    plan = fanout.fan_out(repo, config, command, opts, os.environ, max_jobs=max_jobs,
                          max_levels=max_waves)
    for w in plan.warnings:
        out.warn(w)
    if platform == "github":
        import json

        text = json.dumps(fanout.github_matrix(plan), sort_keys=True) + "\n"
        if github_output:
            target = github_output_path(os.environ)
            if not target:
                raise click.UsageError("--github-output: GITHUB_OUTPUT is not set")
            levels = max_waves or plan.levels
            with open(target, "a", encoding="utf-8") as fh:
                for k, v in fanout.github_outputs(plan, levels).items():
                    fh.write(f"{k}={v}\n")
    else:
        from gitops_push.run.fanout_gitlab import gitlab_yaml

        text = gitlab_yaml(plan, include=includes)
    if out_file is not None:
        from gitops_push.fsutil import atomic_write

        atomic_write(out_file, text, what="job plan")
    else:
        sys.stdout.write(text)
    out.message(f"{len(plan.jobs)} job(s) in {plan.levels} level(s) for "
                f"{sum(len(j.stacks) for j in plan.jobs)} stack(s)")


@click.command("summary")
@click.option("--deployment", metavar="ID", envvar=env("deployment-id"),
              help="The deployment (default: this pipeline's, from CI).")
@click.option("--summary-md", type=click.Path(dir_okay=False, path_type=Path),
              envvar=env("summary-md"), help="Also write the Markdown summary here.")
@output_option
@click.pass_obj
def summary(state: State, deployment: str | None, summary_md: Path | None,
            output: str) -> None:
    """One summary of a fan-out: every stack of the deployment's jobs, newest result.

    Exits 1 if any stack failed or a job never finished. Appends to the GitHub step
    summary when run there; post it with `gitops-push comment`.

    \b
    Examples:
      gitops-push summary --deployment "$CI_PIPELINE_ID" --summary-md summary.md
    """
    from gitops_push import audit as audit_mod
    from gitops_push import output as out
    from gitops_push.ci import deployment_id
    from gitops_push.errors import UserError
    from gitops_push.run import deployment as dep

    state.output, state.command = output, "summary"
    wanted = deployment or deployment_id(os.environ)
    if not wanted:
        raise UserError("--deployment: not given and not in CI (no GITHUB_RUN_ID / "
                        "CI_PIPELINE_ID / GITOPS_PUSH_DEPLOYMENT_ID)")
    repo, config = open_repo(state)
    records = audit_mod.Trail(repo, config.audit, environ=os.environ).records()
    result = dep.summarize(records, wanted)
    markdown = dep.summary_markdown(result)
    write_summaries(markdown, summary_md)
    code = int(result.exit_code)
    emit(output, lambda: out.Envelope("summary", exit_code=code, data=dep.summary_data(result),
                                      status="success" if code == 0 else result.outcome),
         lambda: out.write_stdout(markdown))
    state.extra["exit_code"] = code


@click.command("comment")
@click.option("--platform", type=PLATFORMS, required=True, envvar=env("platform"),
              help="Where the pull/merge request lives.")
@click.option("--body-file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The Markdown to post (a missing file posts a short note instead).")
@click.option("--marker", default="plan", show_default=True,
              help="Names the hidden marker that finds our comment again.")
@click.option("--number", metavar="N", help="PR number / MR iid (default: from CI).")
@click.option("--project", metavar="ID", help="GitHub owner/name or GitLab project id "
                                               "(default: from CI).")
@click.option("--api-url", metavar="URL", help="API root (default: from CI).")
@output_option
@click.pass_obj
def comment(state: State, platform: str, body_file: Path, marker: str, number: str | None,
            project: str | None, api_url: str | None, output: str) -> None:
    """Create or update ONE comment on the pull/merge request (found by a hidden marker).

    The token comes from the environment only: GITOPS_PUSH_GITHUB_TOKEN or GITHUB_TOKEN
    (github), GITOPS_PUSH_GITLAB_TOKEN (gitlab). It is never printed.

    \b
    Examples:
      gitops-push comment --platform github --body-file gitops-push-summary.md
      gitops-push comment --platform gitlab --body-file summary.md --marker apply
    """
    from gitops_push import output as out
    from gitops_push.ci import review_context
    from gitops_push.errors import UserError
    from gitops_push.run import comment as comment_mod

    state.output, state.command = output, "comment"
    ctx = review_context(platform, os.environ)
    token_vars = ("GITOPS_PUSH_GITHUB_TOKEN or GITHUB_TOKEN" if platform == "github"
                  else "GITOPS_PUSH_GITLAB_TOKEN")
    missing = [what for what, value in (
        (f"a token ({token_vars})", ctx.token),
        ("the API URL (--api-url)", api_url or ctx.api_url),
        ("the project (--project)", project or ctx.project),
        ("the pull/merge request (--number) or the commit", number or ctx.number or ctx.commit),
    ) if not value]
    if missing:
        raise UserError(f"comment: missing {', '.join(missing)}; nothing was posted")
    try:
        body = body_file.read_text(encoding="utf-8")
    except OSError as exc:
        body = f"**gitops-push** wrote no summary ({exc.strerror}); see the job log."
    footer = f"\n\n---\n<sub>[pipeline]({ctx.run_url})</sub>\n" if ctx.run_url else "\n"
    target = comment_mod.Target(platform, str(api_url or ctx.api_url),
                                str(project or ctx.project), str(number or ctx.number or ""),
                                str(ctx.token), commit=str(ctx.commit or ""))
    res = comment_mod.upsert(target, body, name=marker, footer=footer)
    data: dict[str, Any] = {"action": res.action, "id": res.comment_id,
                            "truncated": res.truncated, "length": res.length}
    emit(output, lambda: out.Envelope("comment", data=data),
         lambda: out.message(
             f"no pull/merge request found for commit {str(ctx.commit)[:12]}: nothing was "
             "posted" if res.action == "skipped" else f"{res.action} comment {res.comment_id}"
             + (" (truncated to fit)" if res.truncated else "")))


def register(group: click.Group) -> None:
    for command in (fan_out, summary, comment):
        group.add_command(command)
