"""``gitops-push init`` and ``templates``: a starter config and the shipped CI templates."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import yaml
from conftest import GitRepo

from gitops_push import config
from gitops_push.cli import run
from gitops_push.errors import ExitCode

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
