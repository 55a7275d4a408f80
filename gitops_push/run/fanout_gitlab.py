"""The GitLab side of ``gitops-push fan-out``: the child pipeline (see fanout.py).

One job per group that extends ``.gitops-push-fan-out-<command>`` (from
ci-templates/gitlab/gitops-push-fan-out-jobs.gitlab-ci.yml), ``needs:`` for the DAG,
one stage per level, a per-stack ``resource_group``, and the names of the variables
the job's stacks read.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from gitops_push.detect.changes import StackStatus
from gitops_push.run.fanout import FanOut

GITLAB_JOB_NAME_MAX = 255
GITLAB_NEEDS_MAX = 50  # GitLab's default limit of `needs:` per job (ci_dag_limit_needs)
GITLAB_EXTENDS = ".gitops-push-fan-out-{command}"
GITLAB_INCLUDE = "ci/gitops-push-fan-out-jobs.gitlab-ci.yml"
# An apply job applies the plans reviewers approved, which the parent pipeline's plan job
# saved: GitLab hands a child job a parent job's artifacts through this `needs:` entry
# (the trigger job sets PARENT_PIPELINE_ID).
PARENT_PLANS = {"pipeline": "$PARENT_PIPELINE_ID", "job": "gitops-push:plan",
                "artifacts": True}
BARRIER = "gitops-push level {level} barrier"
_RESOURCE_BAD = re.compile(r"[^A-Za-z0-9_./-]")
_PLAIN_KEY = re.compile(r"[A-Za-z_.][A-Za-z0-9_.-]*")  # no YAML plain-scalar surprises
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def gitlab_job_names(plan: FanOut) -> dict[str, str]:
    """Job key -> a unique GitLab job name of at most 255 characters."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for j in plan.jobs:
        stacks = j.names
        label = stacks[0] if len(stacks) == 1 else f"{stacks[0]} +{len(stacks) - 1}"
        base = f"{plan.command} {label}"[:GITLAB_JOB_NAME_MAX]
        name = base
        if name in used:
            suffix = f" #{j.key}"
            name = base[:GITLAB_JOB_NAME_MAX - len(suffix)] + suffix
        used.add(name)
        names[j.key] = name
    return names


def resource_group(stacks: Sequence[str]) -> str:
    """Per stack: ``gitops-push-$GITOPS_PUSH_ENVIRONMENT-<stack>``; a group job holds
    one named after its stacks' hash (each stack stays locked by gitops-push too)."""
    if len(stacks) == 1:
        tail = _RESOURCE_BAD.sub("-", stacks[0])[:180]
    else:
        tail = "group-" + hashlib.sha256(" ".join(sorted(stacks)).encode()).hexdigest()[:16]
    return f"gitops-push-$GITOPS_PUSH_ENVIRONMENT-{tail}"


def shipped_jobs() -> dict[str, Any]:
    """The child jobs shipped with this version (ci-templates/gitlab/...-jobs.gitlab-ci.yml)."""
    import yaml

    from gitops_push.init import read_template

    text = read_template("gitlab/" + GITLAB_INCLUDE.rsplit("/", 1)[1])
    doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    assert isinstance(doc, dict)
    return doc


def gitlab_pipeline(plan: FanOut, *, include: Sequence[str] = (),
                    extends: str | None = None) -> dict[str, Any]:
    """The child pipeline: one job per group, ``needs:`` for the DAG, one stage per level
    (a job whose needs would pass GitLab's limit waits for a barrier of its stage
    instead); an apply job also needs the parent's plan job, for the reviewed plans.

    The job definitions come from ``include`` (local files of the project), else the
    shipped ones are embedded, so the pipeline runs without any file in the repository.
    """
    names = gitlab_job_names(plan)
    base = extends or GITLAB_EXTENDS.format(command=plan.command)
    doc: dict[str, Any] = {}
    embedded: dict[str, Any] = {}
    if include:
        doc["include"] = [{"local": p} for p in include]
    else:
        embedded = shipped_jobs()
    doc["stages"] = [f"gitops-push-{lvl}" for lvl in range(1, max(plan.levels, 1) + 1)]
    variables = {"GITOPS_PUSH_FAN_OUT_HEAD": plan.head,
                 "GITOPS_PUSH_FAN_OUT_JOBS": str(len(plan.jobs)),
                 "GITOPS_PUSH_FAN_OUT_FOR": plan.command}
    if plan.deployment_id:
        variables["GITOPS_PUSH_DEPLOYMENT_ID"] = plan.deployment_id
    doc["variables"] = {**embedded.pop("variables", {}), **variables}
    doc.update(embedded)
    if not plan.jobs:  # GitLab refuses a pipeline without jobs
        doc["gitops-push nothing to do"] = {
            "stage": doc["stages"][0],
            "script": [f"echo 'gitops-push: no stack to {plan.command}'"]}
        return doc
    parent = [dict(PARENT_PLANS)] if plan.command == "apply" else []
    room = GITLAB_NEEDS_MAX - len(parent)
    for j in plan.jobs:
        stacks = j.names
        job: dict[str, Any] = {"extends": base, "stage": f"gitops-push-{j.level}"}
        if len(j.needs) <= room:
            needs = [{"job": names[k], "artifacts": False} for k in j.needs]
        else:
            needs = [{"job": _barrier(doc, j.level), "artifacts": False}]
        job["needs"] = needs + [dict(n) for n in parent]
        job["resource_group"] = resource_group(stacks)
        job["variables"] = {
            "GITOPS_PUSH_STACK": " ".join(stacks),
            "GITOPS_PUSH_PARALLEL": str(j.parallel),
            # names only: which CI/CD variables this job's stacks read (docs/scaling-out.md)
            "GITOPS_PUSH_CREDENTIAL_VARIABLES": " ".join(
                sorted({n for s in stacks for n in plan.credentials[s]})),
        }
        if any(c.status == StackStatus.REMOVED for c in j.stacks):
            job["variables"]["GITOPS_PUSH_ALLOW_DESTROY"] = "true"
        doc[names[j.key]] = job
    return doc


def _barrier(doc: dict[str, Any], level: int) -> str:
    """A job with more dependencies than GitLab's `needs:` limit waits for a barrier in
    its own stage: having no `needs:`, the barrier starts only when every job of the
    earlier stages succeeded, and the job needs just the barrier (and the parent's plans,
    which a stage-ordered job could not fetch)."""
    name = BARRIER.format(level=level)
    doc.setdefault(name, {
        "stage": f"gitops-push-{level}",
        "variables": {"GIT_STRATEGY": "none"},
        "script": [f"echo 'gitops-push: every job before level {level} succeeded'"],
    })
    return name


def gitlab_yaml(plan: FanOut, **kwargs: Any) -> str:
    header = (f"# Generated by `gitops-push fan-out --for {plan.command}` at {plan.head[:12]}: "
              f"{len(plan.jobs)} job(s), {plan.levels} level(s). Do not edit.\n")
    return header + "\n".join(_emit(gitlab_pipeline(plan, **kwargs), "")) + "\n"


def _emit(value: Any, indent: str) -> list[str]:
    """Block YAML for the pipeline's plain shapes (dicts, lists, strings, bools), every
    string a JSON string: a valid YAML double-quoted scalar, so nothing in a stack name
    can change the structure. ~10x faster than PyYAML's representer for 2,000 stacks;
    a test parses the result back."""
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            plain = _PLAIN_KEY.fullmatch(str(k)) and str(k).lower() not in _YAML_WORDS
            key = k if plain else _quote(str(k))
            if isinstance(v, (dict, list)) and v:
                out.append(f"{indent}{key}:")
                out.extend(_emit(v, indent + "  "))
            elif isinstance(v, str) and (block := _block(v, indent + "  ")):
                out.append(f"{indent}{key}: {block[0]}")
                out.extend(block[1:])
            else:
                out.append(f"{indent}{key}: {_scalar(v)}")
    else:
        for item in value:
            if isinstance(item, (dict, list)) and item:
                lines = _emit(item, indent + "  ")
                out.append(f"{indent}- {lines[0].lstrip()}")
                out.extend(lines[1:])
            elif isinstance(item, str) and (block := _block(item, indent + "  ")):
                out.append(f"{indent}- {block[0]}")
                out.extend(block[1:])
            else:
                out.append(f"{indent}- {_scalar(item)}")
    return out


def _block(text: str, indent: str) -> list[str] | None:
    """A literal block (``|``/``|-``) for a multi-line script, when it is safe to write."""
    body = text[:-1] if text.endswith("\n") else text
    lines = body.split("\n")
    if len(lines) < 2 or not lines[0] or lines[0][0] in " \t" or any(
            (ln != ln.rstrip()) or not all(c.isprintable() for c in ln) for ln in lines):
        return None
    return ["|" if text.endswith("\n") else "|-", *(indent + ln if ln else "" for ln in lines)]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    return _quote(str(value))


def _quote(text: str) -> str:
    """A double-quoted scalar: JSON's escapes, plus YAML's for what it cannot print."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" if ord(c) < 0x10000
                   else f"\\U{ord(c):08x}" for c in json.dumps(text, ensure_ascii=False))


__all__ = ["GITLAB_JOB_NAME_MAX", "gitlab_job_names", "gitlab_pipeline", "gitlab_yaml",
           "resource_group"]
