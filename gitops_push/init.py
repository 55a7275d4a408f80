"""``gitops-push init`` and ``templates``: a starter config and the shipped CI templates."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gitops_push import config as config_mod
from gitops_push.discovery import resolve_stacks
from gitops_push.errors import UserError
from gitops_push.fsutil import atomic_write
from gitops_push.git import Repo

# template name -> (destination in the user's repository, description)
CI_FILES: dict[str, list[tuple[str, str]]] = {
    "github": [
        ("github/workflows/gitops-push-plan.yml", ".github/workflows/gitops-push-plan.yml"),
        ("github/workflows/gitops-push-apply.yml", ".github/workflows/gitops-push-apply.yml"),
        ("github/workflows/gitops-push-drift.yml", ".github/workflows/gitops-push-drift.yml"),
    ],
    "gitlab": [
        ("gitlab/gitops-push.gitlab-ci.yml", "ci/gitops-push.gitlab-ci.yml"),
    ],
    "none": [],
}
GITLAB_INCLUDE = "include:\n  - local: ci/gitops-push.gitlab-ci.yml\n"


@dataclass(frozen=True)
class InitResult:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stacks: list[dict[str, Any]] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)


def templates_root() -> Any:
    """The shipped templates: package data when installed, ci-templates/ in a checkout."""
    try:
        root = resources.files("gitops_push.templates")
        if root.is_dir():
            return root
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "ci-templates"


def list_templates() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def walk(node: Any, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            name = f"{prefix}{child.name}"
            if child.is_dir():
                if child.name != "__pycache__":
                    walk(child, name + "/")
            elif child.name.endswith((".yml", ".yaml")):
                first = child.read_text(encoding="utf-8").splitlines()[:1]
                desc = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
                out.append((name, desc))

    walk(templates_root(), "")
    return out


def read_template(name: str) -> str:
    known = dict(list_templates())
    if name not in known:
        raise UserError(f"no template {name!r}; available: {', '.join(sorted(known))}")
    node = templates_root()
    for part in name.split("/"):
        node = node / part
    text: str = node.read_text(encoding="utf-8")
    return text


def _working_tree_sha(repo: Repo) -> str:
    """A tree object of the working tree as it is (commits or not), for discovery."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**repo.env, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        repo.run("add", "-A", "--", ".", env=env)
        return repo.run("write-tree", env=env).stdout.strip()


def starter_config(repo: Repo) -> tuple[str, list[dict[str, Any]]]:
    cfg = config_mod.Config(file=None)
    tree = repo.tree(_working_tree_sha(repo))
    stacks = resolve_stacks(cfg, repo, tree, strict=False)
    lines = [
        "# gitops-push configuration: https://github.com/gitops-push/gitops-push/docs/config.md",
        "version: 1",
        "",
        "# Stacks found in this repository. Each is planned and applied on its own;",
        "# depends_on orders them, watch adds files outside the directory.",
    ]
    if stacks:
        lines.append("stacks:")
    else:
        lines.append("stacks: []  # none found: add Terraform or Kubernetes directories")
    rows = []
    for s in stacks:
        lines += [f"  - name: {s.name}", f"    path: {_yaml_str(s.path)}", f"    type: {s.type}",
                  "    # depends_on: [other-stack]"]
        rows.append({"name": s.name, "path": s.path, "type": s.type})
    lines += [
        "",
        "# Directories matching these globs become stacks too (remove to list stacks only).",
        "# discover:",
        "#   terraform: [\"infra/*\"]",
        "#   kubernetes: [\"k8s/*\"]",
        "",
        "# Audit records go to the branch gitops-push/audit (or: notes, commit).",
        "audit:",
        "  mode: branch",
        "",
    ]
    return "\n".join(lines), rows


def _yaml_str(value: str) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def init(repo: Repo, *, ci: str, force: bool) -> InitResult:
    result = InitResult()
    text, rows = starter_config(repo)
    config_mod.parse(text, config_mod.CONFIG_FILE)  # never write a config we cannot read
    result.stacks.extend(rows)
    files: list[tuple[Path, str]] = [(repo.root / config_mod.CONFIG_FILE, text)]
    for template, dest in CI_FILES[ci]:
        files.append((repo.root / dest, read_template(template)))
    if ci == "gitlab":
        gl = repo.root / ".gitlab-ci.yml"
        if not gl.exists():
            files.append((gl, GITLAB_INCLUDE))
        else:
            result.next_steps.append(
                "add to your .gitlab-ci.yml:\n" + GITLAB_INCLUDE.rstrip())
    existing = [p for p, _ in files if p.exists()]
    if existing and not force:
        names = ", ".join(str(p.relative_to(repo.root)) for p in existing)
        raise UserError(f"refusing to overwrite existing file(s): {names} (use --force)")
    for path, content in files:
        atomic_write(path, content, what="file")
        result.written.append(str(path.relative_to(repo.root)))
    result.next_steps[:0] = [
        "review gitops-push.yaml (names, depends_on, credentials per stack)",
        "run `gitops-push changed --all` and `gitops-push plan --all` locally",
    ]
    if ci == "github":
        result.next_steps.append("create GitHub environments (e.g. production) with required "
                                 "reviewers, and OIDC roles for plan (read-only) and apply")
    elif ci == "gitlab":
        result.next_steps.append("create protected CI/CD variables for apply credentials and "
                                 "a project access token for audit pushes (see docs/ci.md)")
    result.next_steps.append("commit the files and open a merge request")
    return result
