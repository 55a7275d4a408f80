"""Shared fixtures: isolated git identity and home, real repositories with a bare origin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["fixtures_kube"]

REAL_HOME = Path(os.path.expanduser("~")).resolve()

# What this test process writes under the real home directory, seen through Python's audit
# hooks (PEP 578): only the test's own writes count, never another process on the machine
# touching ~/.kube or ~/.cache. Tools the test starts get HOME pointed at a temporary
# directory (isolated_env), so they cannot write there either.
# event -> the arguments that name a path it writes (a symlink's target is only read)
_WRITE_EVENTS = {"os.mkdir": (0,), "os.rename": (0, 1), "os.remove": (0,), "os.rmdir": (0,),
                 "os.symlink": (1,), "os.link": (1,), "os.truncate": (0,), "os.chmod": (0,),
                 "os.utime": (0,), "shutil.rmtree": (0,), "shutil.copyfile": (1,),
                 "shutil.move": (0, 1)}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_home_writes: list[str] | None = None  # a list while a test runs


def home_write(event: str, args: tuple[object, ...]) -> str | None:
    """The path under the real home directory that this audit event writes, if any."""
    if event == "open":
        flags = args[2] if len(args) > 2 else 0
        mode = args[1] if len(args) > 1 else None
        if not ((isinstance(flags, int) and flags & _WRITE_FLAGS)
                or (isinstance(mode, str) and any(c in mode for c in "wax+"))):
            return None
        paths = args[:1]
    elif event in _WRITE_EVENTS:
        paths = tuple(args[i] for i in _WRITE_EVENTS[event] if i < len(args))
    else:
        return None
    for p in paths:
        if isinstance(p, str | bytes | os.PathLike):
            path = os.path.abspath(os.fsdecode(p))
            if path == str(REAL_HOME) or path.startswith(str(REAL_HOME) + os.sep):
                return path
    return None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _home_writes is not None and (event == "open" or event in _WRITE_EVENTS):
        path = home_write(event, args)
        if path is not None:
            _home_writes.append(f"{event} {path}")


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[Path]:
    """Every test gets its own HOME and git identity; writing to the real home fails it."""
    home = tmp_path_factory.mktemp("home")
    gitconfig = home / ".gitconfig"
    gitconfig.write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
    ci_vars = ("GITHUB_", "GITLAB_", "CI_", "GITOPS_PUSH_")
    monkeypatch.setenv("TMPDIR", str(home.parent))  # killed runs leave work dirs; keep them here
    for key in list(os.environ):
        if key == "GITOPS_PUSH_TEST_KUBECONFIG":
            continue
        if key.startswith(ci_vars) or key in ("CI", "GIT_DIR", "GIT_WORK_TREE", "KUBECONFIG",
                                              "TF_DATA_DIR", "TF_CLI_CONFIG_FILE"):
            monkeypatch.delenv(key, raising=False)
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Ada Author",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Carl Committer",
        "GIT_COMMITTER_EMAIL": "carl@example.com",
        "NO_COLOR": "1",
        "COLUMNS": "100",
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    global _home_writes
    _home_writes = []
    try:
        yield home
    finally:
        written, _home_writes = _home_writes, None
    assert not written, f"test wrote to the real home directory: {sorted(set(written))}"


def git(cwd: Path, *args: str, check: bool = True) -> str:
    res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {res.stderr}")
    return res.stdout.strip()


@dataclass
class GitRepo:
    """A working clone with a bare ``origin`` beside it."""

    path: Path
    origin: Path

    def write(self, files: Mapping[str, str | bytes | None]) -> None:
        """Write (str/bytes) or delete (None) files relative to the repo root."""
        for rel, content in files.items():
            p = self.path / rel
            if content is None:
                if p.is_dir():
                    import shutil

                    shutil.rmtree(p)
                else:
                    p.unlink()
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(content)

    def commit(self, message: str = "change", files: Mapping[str, str | bytes | None] | None = None,
               push: bool = False) -> str:
        if files:
            self.write(files)
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message)
        if push:
            self.push()
        return self.head()

    def push(self, *refs: str) -> None:
        git(self.path, "push", "-q", "origin", *(refs or ("HEAD",)))

    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD")

    def git(self, *args: str, check: bool = True) -> str:
        return git(self.path, *args, check=check)


@pytest.fixture
def make_repo(tmp_path: Path) -> Iterator[Callable[..., GitRepo]]:
    counter = {"n": 0}

    def factory(files: Mapping[str, str | bytes | None] | None = None, *, name: str = "repo",
                commit: bool = True) -> GitRepo:
        counter["n"] += 1
        base = tmp_path / f"{name}{counter['n']}"
        origin = base.with_name(base.name + "-origin.git")
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
        subprocess.run(["git", "init", "-q", "-b", "main", str(base)], check=True)
        git(base, "remote", "add", "origin", str(origin))
        repo = GitRepo(base, origin)
        if files is not None:
            repo.write(files)
        if commit and files is not None:
            repo.commit("initial", push=True)
            git(base, "branch", "--set-upstream-to=origin/main", "main")
            git(base, "remote", "set-head", "origin", "main")
        return repo

    yield factory


@pytest.fixture
def repo(make_repo: Callable[..., GitRepo]) -> GitRepo:
    """A small repo: two Terraform stacks sharing a module, and a kustomize overlay."""
    return make_repo(EXAMPLE_FILES)


EXAMPLE_FILES: dict[str, str] = {
    "gitops-push.yaml": (
        "version: 1\n"
        "stacks:\n"
        "  - name: network\n"
        "    path: infra/network\n"
        "    type: terraform\n"
        "  - name: app\n"
        "    path: infra/app\n"
        "    type: terraform\n"
        "    depends_on: [network]\n"
        "  - name: web\n"
        "    path: k8s/overlays/prod\n"
        "    type: kubernetes\n"
        "    depends_on: [app]\n"
        "    watch: [\"shared/web/*.env\"]\n"
    ),
    "infra/network/main.tf": 'resource "terraform_data" "net" {\n  input = "10.0.0.0/16"\n}\n',
    "infra/app/main.tf": (
        'module "svc" {\n  source = "../../modules/svc"\n}\n\n'
        'locals {\n  policy = file("${path.module}/../../shared/policy.json")\n}\n'
    ),
    "modules/svc/main.tf": 'module "inner" {\n  source = "./inner"\n}\n',
    "modules/svc/inner/main.tf": 'resource "terraform_data" "x" {}\n',
    "shared/policy.json": "{}\n",
    "shared/web/app.env": "A=1\n",
    "k8s/base/kustomization.yaml": "resources:\n  - deploy.yaml\n",
    "k8s/base/deploy.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  a: '1'\n"
    ),
    "k8s/overlays/prod/kustomization.yaml": "resources:\n  - ../../base\nnamePrefix: prod-\n",
    "README.md": "hello\n",
}


def load_json(text: str) -> dict[str, object]:
    data = json.loads(text)
    assert isinstance(data, dict)
    return data
