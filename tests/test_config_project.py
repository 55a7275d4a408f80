"""The project: the owner identity a repository's deployments carry beyond stack names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gitops_push import config
from gitops_push.config.project import default_project, from_remote, project_problem
from gitops_push.errors import ConfigError


@pytest.mark.parametrize("url", [
    "git@github.com:acme/team-a.git",
    "https://github.com/acme/team-a.git",
    "https://x-access-token:ghs_0123456789abcdef@github.com/acme/team-a",
    "ssh://git@github.com/acme/team-a/",
])
def test_the_default_project_is_the_same_for_every_clone_and_never_holds_a_token(url: str
                                                                                  ) -> None:
    assert from_remote(url, "checkout") == "acme-team-a"


def test_the_default_project_without_a_remote_is_the_directory_and_always_a_label_value(
        ) -> None:
    assert from_remote(None, "My Repo") == "my-repo"
    long = from_remote("https://example.com/" + "x" * 40 + "/" + "y" * 40, "d")
    assert len(long) <= 63 and project_problem(long) is None
    assert from_remote("/srv/git/Team_A/origin.git", "d") == "team_a-origin"


def test_default_project_reads_the_origin_remote(tmp_path: Path) -> None:
    repo = tmp_path / "work"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "remote", "add", "origin",
                    "git@gitlab.example.com:group/sub/app.git"], check=True)
    assert default_project(repo, {"PATH": "/usr/bin:/bin"}) == "sub-app"
    subprocess.run(["git", "-C", str(repo), "remote", "set-url", "origin", "../team-a/x.git"],
                   check=True)
    assert default_project(repo, {"PATH": "/usr/bin:/bin"}) == "team-a-x"
    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    assert default_project(plain, {"PATH": "/usr/bin:/bin"}) == "not-a-repo"


def test_the_project_key_is_read_and_checked() -> None:
    assert config.parse("version: 1\nproject: payments\n").project == "payments"
    assert config.parse("version: 1\n").project is None
    with pytest.raises(ConfigError) as info:
        config.parse("version: 1\nproject: -bad-\n")
    assert "project" in str(info.value) and ":2" in str(info.value)
