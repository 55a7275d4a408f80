"""The package layout the code relies on (issue 13): each kind of outside contact has one
home, change detection and orchestration never name an engine, modules stay readable.
These read the source, so a change that breaks a rule fails here, naming the file."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "gitops_push"
MODULES = sorted(PKG.rglob("*.py"))
ENGINE_NAMES = re.compile(r"terraform|kubernetes|kustomize", re.IGNORECASE)



def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def code_without_docstrings(path: Path) -> str:
    """The module as code only: comments are gone once parsed, docstrings removed here."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            body[0] = ast.Pass()
    return ast.unparse(tree)


def test_only_proc_starts_processes() -> None:
    users = [rel(p) for p in MODULES if "subprocess" in p.read_text()]
    assert users == ["gitops_push/proc.py"]


def test_only_the_git_package_runs_git() -> None:
    found = []
    for path in MODULES:
        if path.parent.name == "git" and path.parent.parent == PKG:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            # a command line starting with "git", or the git package's private runner
            if (isinstance(node, ast.List) and node.elts
                    and isinstance(node.elts[0], ast.Constant) and node.elts[0].value == "git"):
                found.append(f"{rel(path)}:{node.lineno}: a git command line")
            if isinstance(node, ast.Attribute) and node.attr in ("_run", "_out", "run", "out") \
                    and isinstance(node.value, ast.Attribute | ast.Name) \
                    and (getattr(node.value, "attr", None) or getattr(node.value, "id", None)
                         ) == "repo":
                found.append(f"{rel(path)}:{node.lineno}: repo.{node.attr}")
    assert found == []


def test_change_detection_and_runs_never_name_an_engine() -> None:
    found = [f"{rel(p)}: {m.group()!r}" for sub in ("detect", "run")
             for p in sorted((PKG / sub).glob("*.py"))
             for m in ENGINE_NAMES.finditer(code_without_docstrings(p))]
    assert found == []


def test_the_engine_name_check_sees_code_and_not_prose(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('"""Terraform in a docstring."""\n# kubernetes in a comment\n'
                      'def f() -> str:\n    """kustomize too."""\n    return "helm"\n')
    assert not ENGINE_NAMES.search(code_without_docstrings(module))
    module.write_text('def f(kind: str) -> bool:\n    return kind == "terraform"\n')
    assert ENGINE_NAMES.search(code_without_docstrings(module))


def test_no_module_is_over_400_lines() -> None:
    long = {rel(p): n for p in MODULES if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_no_run_module_imports_a_private_name_of_a_sibling() -> None:
    found = []
    for path in sorted((PKG / "run").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "gitops_push.run."):
                found += [f"{rel(path)}: {a.name}" for a in node.names
                          if a.name.startswith("_")]
    assert found == []


def test_every_package_is_in_the_distribution() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(gitops_push(?:\.[a-z_]+)*)"',
                            text[text.index("[tool.setuptools]"):]))
    packages = {p.parent.relative_to(ROOT).as_posix().replace("/", ".")
                for p in PKG.rglob("__init__.py")}
    assert packages - listed == set()
    assert "gitops_push.templates" in listed  # mapped to ci-templates/
