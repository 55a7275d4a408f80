"""``gitops-push init`` and ``templates``: a starter config and the shipped CI templates."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import GitRepo

from gitops_push import config
from gitops_push import init as init_mod
from gitops_push.cli.app import run
from gitops_push.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]

FILES = {
    "infra/prod/main.tf": 'module "net" {\n  source = "../../modules/net"\n}\n',
    "modules/net/main.tf": "#\n",
    "k8s/app/kustomization.yaml": "resources: [cm.yaml]\n",
    "k8s/app/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
}


def gp(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(list(args))
    return code, out.getvalue(), err.getvalue()


def test_init_writes_a_config_listing_discovered_stacks(make_repo: Callable[..., GitRepo]
                                                        ) -> None:
    r = make_repo(FILES)
    code, _, err = gp("-C", str(r.path), "init")
    assert code == 0, err
    cfg = config.parse((r.path / "gitops-push.yaml").read_text())
    assert {(s.stack.name, s.stack.path, s.stack.type) for s in cfg.stacks} == {
        ("infra-prod", "infra/prod", "terraform"), ("k8s-app", "k8s/app", "kubernetes")}
    assert "next steps" in err


def test_init_works_before_the_first_commit(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo(FILES, commit=False)
    assert gp("-C", str(r.path), "init")[0] == 0
    assert "infra/prod" in (r.path / "gitops-push.yaml").read_text()


def test_init_copies_github_workflows_and_refuses_to_overwrite(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo(FILES)
    assert gp("-C", str(r.path), "init", "--ci", "github")[0] == 0
    workflow = r.path / ".github/workflows/gitops-push-apply.yml"
    assert yaml.safe_load(workflow.read_text())["jobs"]
    workflow.write_text("# mine\n")
    code, _, err = gp("-C", str(r.path), "init", "--ci", "github")
    assert code == ExitCode.USAGE and "--force" in err
    assert workflow.read_text() == "# mine\n"
    assert gp("-C", str(r.path), "init", "--ci", "github", "--force")[0] == 0
    assert workflow.read_text() != "# mine\n"


def test_init_for_gitlab_adds_the_include(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo(FILES)
    assert gp("-C", str(r.path), "init", "--ci", "gitlab")[0] == 0
    assert "ci/gitops-push.gitlab-ci.yml" in (r.path / ".gitlab-ci.yml").read_text()
    assert (r.path / "ci/gitops-push.gitlab-ci.yml").is_file()


def test_templates_are_listed_and_shown() -> None:
    code, out, _ = gp("templates", "list")
    assert code == 0
    names = [line.split("\t")[0] for line in out.splitlines()]
    assert "github/workflows/gitops-push-plan.yml" in names
    assert "gitlab/gitops-push.gitlab-ci.yml" in names
    code, out, _ = gp("templates", "show", "github/action.yml")
    assert code == 0 and "runs:" in out
    code, _, err = gp("templates", "show", "nope.yml")
    assert code == ExitCode.USAGE and "available:" in err


# ------------------------------------------------ an existing setup (issue 12, item 4)

MY_CONFIG = """\
# our stacks -- reviewed by the platform team, keep this comment
version: 1
stacks:
  - name: prod   # renamed from infra-prod
    path: infra/prod
    type: terraform
"""


def test_adding_ci_files_leaves_an_existing_config_untouched(make_repo: Callable[..., GitRepo]
                                                             ) -> None:
    r = make_repo({**FILES, "gitops-push.yaml": MY_CONFIG})
    code, _, err = gp("-C", str(r.path), "init", "--ci", "gitlab")
    assert code == 0, err
    assert (r.path / "gitops-push.yaml").read_text() == MY_CONFIG
    assert (r.path / "ci/gitops-push.gitlab-ci.yml").is_file()
    assert "kept gitops-push.yaml" in err
    assert "prod (terraform, infra/prod)" in err  # the stacks of the config that is there
    # Another platform's files later: still untouched.
    code, _, err = gp("-C", str(r.path), "init", "--ci", "github")
    assert code == 0, err
    assert (r.path / "gitops-push.yaml").read_text() == MY_CONFIG
    assert (r.path / ".github/workflows/gitops-push-plan.yml").is_file()


def test_force_overwrites_ci_files_but_never_the_config(make_repo: Callable[..., GitRepo]
                                                        ) -> None:
    r = make_repo({**FILES, "gitops-push.yaml": MY_CONFIG})
    assert gp("-C", str(r.path), "init", "--ci", "github")[0] == 0
    workflow = r.path / ".github/workflows/gitops-push-drift.yml"
    workflow.write_text("# mine\n")
    code, _, err = gp("-C", str(r.path), "init", "--ci", "github")
    assert code == ExitCode.USAGE
    assert "gitops-push-drift.yml" in err and "gitops-push.yaml is never overwritten" in err
    code, _, err = gp("-C", str(r.path), "init", "--ci", "github", "--force")
    assert code == 0, err
    assert workflow.read_text() != "# mine\n"
    assert (r.path / "gitops-push.yaml").read_text() == MY_CONFIG


def test_an_existing_but_broken_config_is_reported_not_replaced(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({**FILES, "gitops-push.yaml": "version: 1\nstacks: [\n"})
    code, _, err = gp("-C", str(r.path), "init", "--ci", "github", "--force")
    assert code == ExitCode.USAGE
    assert "gitops-push.yaml" in err
    assert (r.path / "gitops-push.yaml").read_text() == "version: 1\nstacks: [\n"
    assert not (r.path / ".github").exists()


# --------------------------------------------- GitLab entry file (issue 12, item 3)


def test_gitlab_entry_file_declares_the_stages_of_the_included_jobs(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo(FILES)
    assert gp("-C", str(r.path), "init", "--ci", "gitlab")[0] == 0
    entry = yaml.safe_load((r.path / ".gitlab-ci.yml").read_text())
    assert entry["include"] == [{"local": "ci/gitops-push.gitlab-ci.yml"}]
    template = yaml.load((r.path / "ci/gitops-push.gitlab-ci.yml").read_text(),
                         Loader=_GitLabLoader)  # noqa: S506
    used = {job["stage"] for name, job in template.items()
            if isinstance(job, dict) and "stage" in job}
    assert used <= set(entry["stages"])
    # The template itself must not declare stages: that would replace the project's own.
    assert "stages" not in template


def test_an_existing_gitlab_ci_file_is_left_alone_with_advice(
        make_repo: Callable[..., GitRepo]) -> None:
    mine = "stages: [build, test]\nbuild:\n  stage: build\n  script: [make]\n"
    r = make_repo({**FILES, ".gitlab-ci.yml": mine})
    code, _, err = gp("-C", str(r.path), "init", "--ci", "gitlab")
    assert code == 0, err
    assert (r.path / ".gitlab-ci.yml").read_text() == mine
    assert "- local: ci/gitops-push.gitlab-ci.yml" in err
    assert "lint, plan, apply, drift" in err


class _GitLabLoader(yaml.SafeLoader):
    pass


_GitLabLoader.add_constructor("!reference", lambda loader, node: None)


# ----------------------------------------- the default branch (issue 12, item 12)


def test_github_workflows_deploy_from_the_repositorys_default_branch(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo(FILES)
    r.git("branch", "-m", "main", "trunk")
    r.git("push", "-q", "origin", "trunk")
    r.git("remote", "set-head", "origin", "trunk")
    r.git("checkout", "-qb", "feature")  # init runs on a feature branch
    assert gp("-C", str(r.path), "init", "--ci", "github")[0] == 0
    for name in ("plan", "apply"):
        wf = yaml.safe_load((r.path / f".github/workflows/gitops-push-{name}.yml").read_text())
        on = wf[True]  # YAML 1.1 reads `on:` as true
        triggers = on["pull_request"] if name == "plan" else on["push"]
        assert triggers["branches"] == ["trunk"], name


def test_before_the_first_commit_the_branch_checked_out_is_the_default(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo(FILES, commit=False)
    r.git("symbolic-ref", "HEAD", "refs/heads/production")
    assert gp("-C", str(r.path), "init", "--ci", "github")[0] == 0
    text = (r.path / ".github/workflows/gitops-push-apply.yml").read_text()
    assert 'branches: ["production"]' in text
    assert "branches: [main]" not in text


# --------------------------------------- what CI installs (issue 12, item 2)

SPEC = "git+https://github.com/acme/gitops-push@" + "a" * 40


def test_pip_spec_is_written_into_every_ci_file(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo(FILES)
    for ci in ("github", "gitlab"):
        code, _, err = gp("-C", str(r.path), "init", "--ci", ci, "--pip-spec", SPEC)
        assert code == 0, err
        assert "set GITOPS_PUSH_PIP_SPEC" not in err
    files = [*(r.path / ".github/workflows").glob("*.yml"), r.path / "ci/gitops-push.gitlab-ci.yml"]
    assert len(files) == 4
    for path in files:
        data = yaml.load(path.read_text(), Loader=_GitLabLoader)  # noqa: S506
        assert data["variables" if "gitlab" in path.name else "env"][
            "GITOPS_PUSH_PIP_SPEC"] == SPEC, path.name


@pytest.mark.parametrize("bad", ["", "gitops-push\n--index-url http://evil", "${{ secrets.X }}"])
def test_a_pip_spec_that_cannot_be_one_line_of_a_ci_file_is_refused(
        make_repo: Callable[..., GitRepo], bad: str) -> None:
    r = make_repo(FILES)
    code, _, err = gp("-C", str(r.path), "init", "--ci", "github", "--pip-spec", bad)
    assert code == ExitCode.USAGE
    # an empty value is refused by the check every flag shares; the rest by init's own
    assert "--pip-spec" in err and ("one line" in err or "must not be empty" in err)
    assert not (r.path / "gitops-push.yaml").exists()
    assert not (r.path / ".github").exists()


def test_without_a_pip_spec_init_says_what_to_set(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo(FILES)
    code, _, err = gp("-C", str(r.path), "init", "--ci", "gitlab")
    assert code == 0
    # This test's gitops-push is an editable install, not a pinned git URL.
    assert "set GITOPS_PUSH_PIP_SPEC" in err
    assert "pinned to a commit" in err


@pytest.mark.parametrize(("direct_url", "spec"), [
    ({"url": "https://github.com/acme/gitops-push", "vcs_info": {"vcs": "git",
      "commit_id": "b" * 40, "requested_revision": "main"}},
     "git+https://github.com/acme/gitops-push@" + "b" * 40),
    ({"url": "https://token@github.com/acme/gitops-push",
      "vcs_info": {"vcs": "git", "commit_id": "b" * 40}}, None),  # credentials: never copied
    ({"url": "file:///home/me/gitops-push", "dir_info": {"editable": True}}, None),
    ({"url": "https://github.com/acme/gitops-push", "vcs_info": {"vcs": "git",
      "commit_id": "main"}}, None),  # not a commit
    ({"url": "https://files.example/gitops_push-0.1.0-py3-none-any.whl",
      "archive_info": {}}, None),
])
def test_the_pip_spec_of_this_install_only_when_it_is_a_pinned_git_url(
        direct_url: dict[str, object], spec: str | None) -> None:
    assert init_mod.pip_spec_from_direct_url(json.dumps(direct_url)) == spec
    assert init_mod.pip_spec_from_direct_url("{not json") is None


# ----------------------------------------- the header link (issue 12, item 10)


def test_the_config_header_links_to_a_real_github_file_url(make_repo: Callable[..., GitRepo]
                                                           ) -> None:
    r = make_repo(FILES)
    assert gp("-C", str(r.path), "init")[0] == 0
    first = (r.path / "gitops-push.yaml").read_text().splitlines()[0]
    m = re.search(r"https://github\.com/([^/\s]+)/([^/\s]+)/blob/([^/\s]+)/(\S+)", first)
    assert m, first
    assert (ROOT / m.group(4)).is_file(), f"{m.group(4)} is not a file of this repository"
