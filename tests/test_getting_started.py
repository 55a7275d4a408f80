"""docs/getting-started.md works as written: its ``sh`` blocks run, in order.

The walk-through goes from a fresh clone to a first apply and a scheduled drift check
on the GitLab path, whose pipelines run for real here (``gitlab-ci-local``, shell
executor). The doc's commands are extracted from the markdown, so the page cannot
drift from this test. What the test adds is only what a reader or GitLab does:

* placeholders are filled in: ``ORG/gitops-push@COMMIT`` becomes a git URL of this
  checkout pinned to a commit (a snapshot of the working tree), the clone URL becomes
  a local bare repository, and the runner image becomes ``null`` (the shell executor
  stands in for an image with git, terraform and kubectl);
* GitLab's part: the merge-request pipeline, the merge, the default-branch pipeline
  and the schedule, run with gitlab-ci-local;
* offline installation: pip gets ``PIP_NO_INDEX`` and this environment's packages on
  ``PYTHONPATH`` for gitops-push's dependencies and build backend (no network here),
  so ``pip install git+...@COMMIT`` really clones and builds that commit.

The GitHub section (3b) cannot run here; actionlint and tests/test_templates.py check
its workflows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "getting-started.md"
GITLAB_CI_LOCAL = ROOT / "tests" / "tools" / "node_modules" / ".bin" / "gitlab-ci-local"

PIP_PLACEHOLDER = "git+https://github.com/ORG/gitops-push@COMMIT"
CLONE_PLACEHOLDER = "https://gitlab.example.com/acme/infra.git"
IMAGE_PLACEHOLDER = "registry.example.com/platform/iac-runner:2025-01"

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


def sh_blocks(markdown: str) -> list[tuple[str, str]]:
    """(section heading, code) of every ```sh block, list-item indentation removed."""
    out: list[tuple[str, str]] = []
    heading = ""
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            heading = line[3:].strip()
        m = re.fullmatch(r"(\s*)```sh", line)
        if m:
            indent = len(m.group(1))
            body = []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i][indent:])
                i += 1
            out.append((heading, "\n".join(body) + "\n"))
        i += 1
    return out


def test_the_walk_through_has_the_steps_this_test_relies_on() -> None:
    """Fast guard: the placeholders and the steps exist where the slow test expects them."""
    text = DOC.read_text()
    for placeholder in (PIP_PLACEHOLDER, CLONE_PLACEHOLDER, IMAGE_PLACEHOLDER):
        assert placeholder in text, placeholder
    blocks = [code for heading, code in sh_blocks(text) if "GitHub" not in heading]
    assert any("gitops-push init --ci gitlab" in b for b in blocks)
    assert any("git push -u origin" in b for b in blocks)
    assert "gitops-push==" not in text  # nothing is published to an index


def run(cmd: list[str], *, cwd: Path, env: Mapping[str, str], timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=dict(env), text=True, capture_output=True,
                          timeout=timeout, check=False)


def git(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    res = run(["git", *args], cwd=cwd, env=env or os.environ)
    assert res.returncode == 0, f"git {' '.join(args)}: {res.stderr}"
    return res.stdout.strip()


@dataclass
class Reader:
    """Runs the doc's blocks one after the other, like one terminal session."""

    start: Path
    env: dict[str, str]
    state: Path

    def run_block(self, code: str) -> subprocess.CompletedProcess[str]:
        env_file, cwd_file = self.state / "env", self.state / "cwd"
        script = (f'cd "$(cat {cwd_file})"\n. {env_file}\nset -euo pipefail\n{code}\n'
                  f"export -p > {env_file}\npwd > {cwd_file}\n")
        return run(["bash", "-c", script], cwd=self.start, env=self.env, timeout=600)

    def var(self, name: str) -> str:
        res = run(["bash", "-c", f'. {self.state / "env"}; printf %s "${{{name}:-}}"'],
                  cwd=self.start, env=self.env)
        return res.stdout

    @property
    def cwd(self) -> Path:
        return Path((self.state / "cwd").read_text().strip())


def snapshot_of_this_checkout(dest: Path) -> str:
    """The working tree's gitops-push as a git repository: what ORG/gitops-push@COMMIT is."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    for name in ("gitops_push", "ci-templates"):
        shutil.copytree(ROOT / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "gitops-push")
    return git(dest, "rev-parse", "HEAD")


def gitlab_ci_local(repo: Path, home: Path, env: Mapping[str, str], job: str,
                    variables: Mapping[str, str], *, needs: bool = False
                    ) -> subprocess.CompletedProcess[str]:
    cmd = [str(GITLAB_CI_LOCAL), "--home", str(home), "--no-color",
           # image: null (shell executor) is not valid for the schema; the generated
           # files are schema-checked unmodified in tests/test_templates.py.
           "--json-schema-validation=false", "--shell-isolation", "--no-artifacts-to-source"]
    for k, v in variables.items():
        cmd += ["--variable", f"{k}={v}"]
    if needs:
        cmd.append("--needs")
    cmd.append(job)
    return run(cmd, cwd=repo, env=env, timeout=600)


@pytest.mark.slow
def test_getting_started_from_a_fresh_clone_to_apply_and_a_scheduled_drift_check(
        tmp_path: Path) -> None:
    if not GITLAB_CI_LOCAL.exists():
        pytest.skip("gitlab-ci-local is missing: run `npm ci --prefix tests/tools`")
    for tool in ("terraform", "rsync", "node"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")

    # -- what exists before the reader starts: gitops-push's source, the team's repo
    source_sha = snapshot_of_this_checkout(tmp_path / "gitops-push")
    pip_spec = f"git+file://{tmp_path / 'gitops-push'}@{source_sha}"
    state = tmp_path / "tfstate" / "app.tfstate"
    state.parent.mkdir()
    origin = tmp_path / "infra.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    seed = tmp_path / "seed"
    git(tmp_path, "init", "-q", "-b", "main", str(seed))
    (seed / "infra" / "app").mkdir(parents=True)
    (seed / "infra" / "app" / "main.tf").write_text(STACK_TF.format(state=state, value="v1"))
    (seed / ".gitignore").write_text(".terraform/\n.gitlab-ci-local/\n")
    git(seed, "add", "-A")
    git(seed, "commit", "-qm", "The app stack")
    git(seed, "push", "-q", str(origin), "main")

    # -- the reader's terminal: no gitops-push on PATH, a python3 like this one's
    home = tmp_path / "home"
    home.mkdir()
    pybin = tmp_path / "python-bin"
    pybin.mkdir()
    (pybin / "python3").symlink_to(Path(sys.base_prefix) / "bin" / "python3")
    path = [p for p in os.environ["PATH"].split(os.pathsep)
            if not (Path(p) / "gitops-push").exists()]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITOPS_PUSH_", "CI_", "GITLAB_", "GITHUB_", "PIP_",
                                "VIRTUAL_ENV", "PYTHON")) and k != "CI"}
    env |= {"HOME": str(home), "PATH": os.pathsep.join([str(pybin), *path]),
            "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "PIP_FIND_LINKS": "",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    work = tmp_path / "laptop"
    work.mkdir()
    (tmp_path / "shell").mkdir()
    (tmp_path / "shell" / "env").write_text("")
    (tmp_path / "shell" / "cwd").write_text(str(work))
    reader = Reader(work, env, tmp_path / "shell")

    fill = {PIP_PLACEHOLDER: pip_spec, CLONE_PLACEHOLDER: str(origin),
            IMAGE_PLACEHOLDER: "null"}
    blocks = [code for heading, code in sh_blocks(DOC.read_text()) if "GitHub" not in heading]
    assert len(blocks) >= 4
    gcl_home = tmp_path / "gcl-home"
    gcl_home.mkdir()
    base_vars = {"GITLAB_CI": "true", "CI_DEFAULT_BRANCH": "main", "CI_PROJECT_ID": "42"}
    merged = False
    for code in blocks:
        for placeholder, value in fill.items():
            code = code.replace(placeholder, value)
        res = reader.run_block(code)
        assert res.returncode == 0, f"{code}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"

        if "gitops-push --version" in code:
            # The doc's own install, not one that was already there.
            venv = home / ".venvs" / "gitops-push"
            assert (venv / "bin" / "gitops-push").exists()
            assert "gitops-push, version" in res.stdout
            direct_url = next((venv / "lib").glob("python3*/site-packages/gitops_push-*"
                                                  ".dist-info/direct_url.json"))
            assert json.loads(direct_url.read_text())["vcs_info"]["commit_id"] == source_sha
            # CI jobs use this venv's python3, standing in for the runner image's.
            ci_env = {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}"}

        if "gitops-push init --ci gitlab" in code:
            assert "found 1 stack(s): infra-app" in res.stderr
            assert reader.var("GITOPS_PUSH_PIP_SPEC") == pip_spec

        if "git push -u origin" in code:
            clone = reader.cwd
            # GitLab: the merge request pipeline plans ...
            mr = gitlab_ci_local(clone, gcl_home, ci_env, "gitops-push:plan", {
                **base_vars, "CI_PIPELINE_SOURCE": "merge_request_event",
                "CI_MERGE_REQUEST_IID": "1",
                "CI_MERGE_REQUEST_DIFF_BASE_SHA": git(clone, "rev-parse", "origin/main")})
            assert mr.returncode == 0, mr.stdout + mr.stderr
            # Adopting gitops-push changes no stack: nothing to plan in the MR yet.
            assert "no stack changed" in mr.stdout + mr.stderr
            assert not state.exists(), "a merge request must not apply"
            # ... the merge (fast-forward) ...
            git(clone, "push", "-q", "origin", "adopt-gitops-push:main")
            # ... the default-branch pipeline, in the runner's fresh checkout ...
            runner = tmp_path / "runner"
            git(tmp_path, "clone", "-q", str(origin), str(runner))
            on_main = {**base_vars, "CI_COMMIT_BRANCH": "main", "CI_COMMIT_REF_NAME": "main"}
            push = gitlab_ci_local(runner, gcl_home, ci_env, "gitops-push:apply",
                                   {**on_main, "CI_PIPELINE_SOURCE": "push"}, needs=True)
            assert push.returncode == 0, push.stdout + push.stderr
            assert "v1" in state.read_text(), "the pipeline applied the app stack"
            # ... and the schedule: in sync (exit 0), then drifted (exit 4 fails the job).
            schedule = {**on_main, "CI_PIPELINE_SOURCE": "schedule"}
            drift = gitlab_ci_local(runner, gcl_home, ci_env, "gitops-push:drift", schedule)
            assert drift.returncode == 0, drift.stdout + drift.stderr
            outside = tmp_path / "console-edit"
            outside.mkdir()
            (outside / "main.tf").write_text(STACK_TF.format(state=state, value="hotfix"))
            for args in (["init", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
                tf = run(["terraform", *args], cwd=outside, env=env)
                assert tf.returncode == 0, tf.stdout + tf.stderr
            drift = gitlab_ci_local(runner, gcl_home, ci_env, "gitops-push:drift", schedule)
            assert drift.returncode != 0, "drift (exit code 4) must fail the scheduled job"
            assert "drifted" in drift.stdout + drift.stderr
            merged = True

        if "gitops-push audit verify" in code:
            assert merged, "the doc checks the trail before anything was deployed"
            assert "audit trail OK" in res.stdout + res.stderr
            assert "infra-app" in res.stdout  # status / audit log name the deployed stack
    assert merged
