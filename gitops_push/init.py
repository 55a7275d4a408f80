"""``gitops-push init`` and ``templates``: a starter config and the shipped CI templates."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gitops_push import ci as ci_env
from gitops_push import config as config_mod
from gitops_push.detect import range as range_mod
from gitops_push.detect.discovery import resolve_stacks
from gitops_push.errors import UserError
from gitops_push.fsutil import atomic_write
from gitops_push.git import Repo
from gitops_push.git.plumbing import worktree_tree

# template name -> destination in the user's repository
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
# The stages the GitLab template's jobs use. The template does not declare them: an
# included `stages:` would replace the including pipeline's own (GitLab's defaults
# build/test/deploy included), so the entry file declares them (issue 12, item 3).
GITLAB_STAGES = ("lint", "plan", "apply", "drift")
GITLAB_INCLUDE = "include:\n  - local: ci/gitops-push.gitlab-ci.yml\n"
GITLAB_ENTRY = GITLAB_INCLUDE + "\nstages: [" + ", ".join(GITLAB_STAGES) + "]\n"
# The documentation link init writes into the config header: a real GitHub file URL.
DOCS_URL = "https://github.com/gitops-push/gitops-push/blob/main/docs/{page}"
# How the templates name the branch they deploy from, replaced by the repository's own.
GITHUB_BRANCH_FILTER = re.compile(r"^(\s*branches: )\[main\]$", re.MULTILINE)
PIP_SPEC_LINE = re.compile(r'^(\s*GITOPS_PUSH_PIP_SPEC: )""$', re.MULTILINE)
SHA40 = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class InitResult:
    """What ``init`` wrote, kept and found, and what to do next."""

    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # existing files init never rewrites
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


def _stack_rows(repo: Repo, cfg: config_mod.Config) -> list[Any]:
    return resolve_stacks(cfg, repo, repo.tree(worktree_tree(repo)), strict=False)


def starter_config(repo: Repo) -> tuple[str, list[dict[str, Any]]]:
    stacks = _stack_rows(repo, config_mod.Config(file=None))
    lines = [
        "# gitops-push configuration: " + DOCS_URL.format(page="config.md"),
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
    return json.dumps(value, ensure_ascii=False)


def default_branch(repo: Repo) -> str:
    """The branch the workflows deploy from: what the git layer knows (origin/HEAD, CI),
    else the branch checked out (also before the first commit), else ``main``."""
    ctx = ci_env.detect(repo.environ)
    return (range_mod.default_branch(repo, config_mod.Config(file=None), ctx)
            or repo.current_branch() or "main")


def pip_spec_from_direct_url(text: str | None) -> str | None:
    """A pip requirement that installs this very gitops-push again, from pip's record of
    where it came from (PEP 610 ``direct_url.json``): only a git URL pinned to a commit,
    over https and without credentials, is reusable in CI."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    url, vcs = data.get("url"), data.get("vcs_info")
    if not isinstance(url, str) or not isinstance(vcs, dict) or vcs.get("vcs") != "git":
        return None
    commit = vcs.get("commit_id")
    if not isinstance(commit, str) or not SHA40.fullmatch(commit):
        return None
    if not re.fullmatch(r"https://[A-Za-z0-9.-]+(:[0-9]+)?/[A-Za-z0-9._~/-]+", url):
        return None  # userinfo, a local path or an odd scheme: not for a CI file
    return f"git+{url}@{commit}"


def installed_pip_spec() -> str | None:
    """How this gitops-push was installed, when pip can install it the same way in CI."""
    from importlib import metadata

    try:
        return pip_spec_from_direct_url(metadata.distribution("gitops-push")
                                        .read_text("direct_url.json"))
    except metadata.PackageNotFoundError:
        return None


def _fill(template: str, pattern: re.Pattern[str], value: str, name: str) -> str:
    """Replace the one line ``pattern`` matches; a template without it is a bug here."""
    out, n = pattern.subn(lambda m: m.group(1) + value, template)
    if n == 0:
        raise AssertionError(f"template {name} has no line matching {pattern.pattern}")
    return out


def render_template(template: str, *, branch: str, pip_spec: str | None) -> str:
    """A shipped template made for this repository: its default branch, its pip spec."""
    text = read_template(template)
    if template.startswith("github/workflows/") and "branches: [main]" in text:
        text = _fill(text, GITHUB_BRANCH_FILTER, f"[{_yaml_str(branch)}]", template)
    if pip_spec:
        text = _fill(text, PIP_SPEC_LINE, _yaml_str(pip_spec), template)
    return text


def _gitlab_entry_advice(text: str) -> str | None:
    """What an existing .gitlab-ci.yml lacks to run the included jobs, or None."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    try:
        doc = yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        doc = None
    stages = doc.get("stages") if isinstance(doc, dict) else None
    # Without `stages:` GitLab uses .pre, build, test, deploy, .post: none of ours.
    have = {str(s) for s in stages} if isinstance(stages, list) else set()
    missing = [s for s in GITLAB_STAGES if s not in have]
    lines = []
    if "ci/gitops-push.gitlab-ci.yml" not in text:
        lines.append(GITLAB_INCLUDE.rstrip())
    if missing:
        if isinstance(stages, list):
            lines.append(f"and add {', '.join(missing)} to your stages: list")
        else:
            lines.append("stages: [build, test, deploy, " + ", ".join(GITLAB_STAGES) + "]"
                         "   # GitLab's defaults, plus gitops-push's")
    if not lines:
        return None
    return "add to your .gitlab-ci.yml (the included jobs need their stages):\n" + "\n".join(lines)


def init(repo: Repo, *, ci: str, force: bool, pip_spec: str | None = None) -> InitResult:
    """Write a starter config unless one exists, and the CI files of ``ci``.

    An existing config is never rewritten, not even with ``force``: it holds the user's
    edits and comments, and adding CI files (or another platform's) must not touch it.
    ``force`` overwrites the CI files only.
    """
    if pip_spec is not None and (not pip_spec.strip() or "${{" in pip_spec
                                 or not pip_spec.isprintable()):
        raise UserError(f"--pip-spec {pip_spec!r}: expected pip requirement(s) on one line, "
                        "e.g. git+https://github.com/ORG/gitops-push@COMMIT")
    result = InitResult()
    files: list[tuple[Path, str]] = []
    existing_config = config_mod.find_config(repo.root, None)
    if existing_config is not None:
        cfg = config_mod.load(repo.root)  # a broken config is reported, file:line
        result.kept.append(str(existing_config.relative_to(repo.root)))
        stacks = [{"name": s.name, "path": s.path, "type": s.type}
                  for s in _stack_rows(repo, cfg)]
    else:
        text, stacks = starter_config(repo)
        config_mod.parse(text, config_mod.CONFIG_FILE)  # never write a config we cannot read
        files.append((repo.root / config_mod.CONFIG_FILE, text))
    result.stacks.extend(stacks)
    if pip_spec is None:
        pip_spec = installed_pip_spec()
    branch = default_branch(repo)
    for template, dest in CI_FILES[ci]:
        files.append((repo.root / dest, render_template(template, branch=branch,
                                                        pip_spec=pip_spec)))
    if ci == "gitlab":
        gl = repo.root / ".gitlab-ci.yml"
        if not gl.exists():
            files.append((gl, GITLAB_ENTRY))
        else:
            advice = _gitlab_entry_advice(gl.read_text(encoding="utf-8", errors="replace"))
            if advice:
                result.next_steps.append(advice)
    existing = [p for p, _ in files if p.exists()]
    if existing and not force:
        names = ", ".join(str(p.relative_to(repo.root)) for p in existing)
        raise UserError(f"refusing to overwrite existing file(s): {names} (use --force to "
                        f"overwrite CI files; {config_mod.CONFIG_FILE} is never overwritten)")
    for path, content in files:
        atomic_write(path, content, what="file")
        result.written.append(str(path.relative_to(repo.root)))
    result.next_steps[:0] = [
        "review gitops-push.yaml (names, depends_on, credentials per stack)",
        "run `gitops-push changed --all` and `gitops-push plan --all` locally",
    ]
    if ci != "none" and not pip_spec:
        result.next_steps.append(
            "set GITOPS_PUSH_PIP_SPEC in the CI files to what CI should pip install: a git "
            "URL pinned to a commit (git+https://github.com/ORG/gitops-push@<commit>) or a "
            "wheel committed to this repository (docs/ci.md, \"Installing gitops-push\")")
    if ci == "github":
        result.next_steps.append("create GitHub environments (e.g. production) with required "
                                 "reviewers, and OIDC roles for plan (read-only) and apply")
        result.next_steps.append(f"the workflows deploy from branch {branch!r} "
                                 "(the repository's default branch)")
    elif ci == "gitlab":
        result.next_steps.append("create protected CI/CD variables for apply credentials and "
                                 "a project access token for audit pushes (see docs/ci.md)")
    result.next_steps.append("commit the files and open a merge request")
    return result
