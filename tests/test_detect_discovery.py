"""Stack discovery: which directories are stacks when the config does not list them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import GitRepo

from gitops_push import config
from gitops_push.detect.discovery import glob_match, resolve_stacks, stack_name
from gitops_push.errors import ConfigError
from gitops_push.git import Repo

MANIFEST = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"


def stacks_of(r: GitRepo) -> dict[str, tuple[str, str]]:
    repo = Repo(r.path, {})
    cfg = config.load(repo.root)
    return {s.name: (s.path, s.type) for s in resolve_stacks(cfg, repo, repo.tree(repo.head()))}


def test_without_config_terraform_roots_and_kubernetes_dirs_are_found(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({
        "infra/prod/main.tf": 'module "net" {\n  source = "../../modules/net"\n}\n',
        "modules/net/main.tf": 'resource "terraform_data" "x" {}\n',
        "k8s/base/kustomization.yaml": "resources: [cm.yaml]\n",
        "k8s/base/cm.yaml": MANIFEST,
        "k8s/prod/kustomization.yaml": "resources: [../base]\n",
        "plain/app/cm.yaml": MANIFEST,
        "plain/app/nested/more.yaml": MANIFEST,
        ".github/workflows/ci.yml": "on: push\n",
        "vendor/x/main.tf": "#\n",
        "infra/prod/.terraform/modules/m/main.tf": "#\n",
        "docs/notes.yaml": "title: not a manifest\n",
    })
    assert stacks_of(r) == {
        "infra-prod": ("infra/prod", "terraform"),
        "k8s-prod": ("k8s/prod", "kubernetes"),
        "plain-app": ("plain/app", "kubernetes"),
    }


def test_discover_globs_limit_what_becomes_a_stack(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({
        "gitops-push.yaml": "version: 1\ndiscover:\n  terraform: ['infra/*']\n",
        "infra/a/main.tf": "#\n",
        "infra/b/main.tf": "#\n",
        "other/c/main.tf": "#\n",
        "k8s/x/cm.yaml": MANIFEST,
    })
    assert set(stacks_of(r)) == {"infra-a", "infra-b"}


def test_an_explicit_stack_wins_over_a_discovered_one(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({
        "gitops-push.yaml": ("version: 1\ndiscover:\n  terraform: ['infra/*']\nstacks:\n"
                             "  - {name: alpha, path: infra/a, type: terraform}\n"),
        "infra/a/main.tf": "#\n",
        "infra/b/main.tf": "#\n",
    })
    assert stacks_of(r) == {"alpha": ("infra/a", "terraform"),
                            "infra-b": ("infra/b", "terraform")}


def test_a_missing_stack_directory_is_a_config_error(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({"gitops-push.yaml": "version: 1\nstacks:\n"
                                       "  - {name: a, path: nowhere, type: terraform}\n"})
    with pytest.raises(ConfigError) as info:
        stacks_of(r)
    assert info.value.path == "gitops-push.yaml:3"
    assert "does not exist" in info.value.message


def test_a_symlinked_stack_path_is_refused(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({"gitops-push.yaml": "version: 1\nstacks:\n"
                                       "  - {name: a, path: out, type: terraform}\n",
                   "x.txt": "x\n"}, commit=False)
    (r.path / "out").symlink_to("/tmp")
    r.commit("link")
    with pytest.raises(ConfigError) as info:
        stacks_of(r)
    assert "symlink" in info.value.message


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("infra/*", "infra/a", True),
    ("infra/*", "infra/a/b", False),
    ("infra/**", "infra/a/b", True),
    ("**/prod", "k8s/apps/prod", True),
    ("**/prod", "prod", True),
    ("infra/[ab]", "infra/b", True),
    ("infra/?", "infra/ab", False),
    ("shared/web/*.env", "shared/web/app.env", True),
])
def test_globs(pattern: str, path: str, expected: bool) -> None:
    assert glob_match(pattern, path) is expected


def test_discovered_names_are_valid_stack_names() -> None:
    assert stack_name("Infra/Prod EU") == "infra-prod-eu"
    assert stack_name(".") == "root"
    assert config.NAME_RE.fullmatch(stack_name("ünï/çødé"))
