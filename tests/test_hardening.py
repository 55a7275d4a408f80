"""Hostile input and faults: every case ends in a clear error or a safe result, with a
documented exit code, nothing applied that should not be, and nothing lost.

Faults in terraform itself (killed, hanging, invalid JSON) are produced by small wrapper
scripts in front of the real binary; each says what it emulates.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import GitRepo, git
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitops_push import output
from gitops_push.cli.app import run
from gitops_push.errors import DOCUMENTED_EXIT_CODES, ExitCode
from gitops_push.run.model import StackOutcome

TF = 'resource "terraform_data" "r" {\n  input = "1"\n}\n'


def gp(r: GitRepo, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(["-C", str(r.path), *args])
    return code, out.getvalue(), err.getvalue()


def wrapper(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def two_stacks(make_repo: Callable[..., GitRepo], binary: Path | None = None) -> GitRepo:
    tf_settings = f"    terraform:\n      binary: {binary}\n" if binary else ""
    return make_repo({
        ".gitignore": "*.tfstate*\n.terraform*\n",
        "gitops-push.yaml": ("version: 1\nstacks:\n  - name: base\n    path: base\n"
                             f"    type: terraform\n{tf_settings}"
                             "  - name: top\n    path: top\n    type: terraform\n"
                             "    depends_on: [base]\n"),
        "base/main.tf": TF,
        "top/main.tf": TF,
    })


def finished_record(r: GitRepo) -> dict:
    r.git("fetch", "-q", "origin", "+refs/heads/gitops-push/audit:refs/remotes/origin/a")
    files = [f for f in r.git("ls-tree", "-r", "--name-only", "origin/a").split("\n")
             if "finished" in f]
    # the newest by trail order: file names sort by run id, which is per second only
    return max((json.loads(r.git("show", f"origin/a:{f}")) for f in files),
               key=lambda rec: rec["seq"])


def no_lock_left(r: GitRepo) -> bool:
    return "refs/gitops-push/locks" not in git(r.origin, "for-each-ref")


# -- faults: the tool ------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "body", "expected"), [
    ("killed by a signal during apply",  # emulates an OOM kill of terraform mid-apply
     'case "$1" in apply) kill -9 $$;; esac\nexec terraform "$@"\n', "killed by signal SIGKILL"),
    ("printing invalid JSON from show",  # emulates a broken or incompatible terraform
     'case "$1" in show) echo "{not json"; exit 0;; esac\nexec terraform "$@"\n', "JSON"),
    ("exiting non-zero mid-apply",
     'case "$1" in apply) echo "Error: quota exceeded" >&2; exit 1;; esac\n'
     'exec terraform "$@"\n', "quota exceeded"),
])
def test_a_failing_tool_fails_its_stack_skips_dependents_records_and_unlocks(
        make_repo: Callable[..., GitRepo], tmp_path: Path, name: str, body: str,
        expected: str) -> None:
    tool = wrapper(tmp_path / "tf-wrapper", body)
    r = two_stacks(make_repo, tool)
    code, out, err = gp(r, "apply", "--output", "json")
    assert code == ExitCode.FAILED, err
    env = json.loads(out)
    by_name = {s["name"]: s for s in env["data"]["stacks"]}
    assert by_name["base"]["result"] == "failed"
    assert expected in by_name["base"]["error"]
    assert by_name["top"]["result"] == "skipped"
    rec = finished_record(r)
    assert {s["name"]: s["result"] for s in rec["stacks"]} == {"base": "failed",
                                                               "top": "skipped"}
    assert no_lock_left(r)
    assert "Traceback" not in err


def test_a_missing_terraform_is_one_clear_error_before_any_stack(
        make_repo: Callable[..., GitRepo], tmp_path: Path) -> None:
    r = two_stacks(make_repo, tmp_path / "no-such-terraform")
    code, _, err = gp(r, "apply")
    assert code == ExitCode.FAILED
    assert "no-such-terraform" in err and "Traceback" not in err
    assert "refs/heads/gitops-push/audit" not in git(r.origin, "for-each-ref")


def test_a_hanging_tool_is_stopped_at_the_timeout(make_repo: Callable[..., GitRepo]) -> None:
    hang = ('resource "terraform_data" "r" {\n  provisioner "local-exec" {\n'
            '    command = "sleep 60"\n  }\n}\n')
    r = make_repo({
        ".gitignore": "*.tfstate*\n.terraform*\n",
        "gitops-push.yaml": ("version: 1\nstacks:\n  - name: slow\n    path: slow\n"
                             "    type: terraform\n    terraform:\n      timeout: 3s\n"),
        "slow/main.tf": hang,
    })
    code, out, _ = gp(r, "apply", "--output", "json")
    assert code == ExitCode.FAILED
    stack = json.loads(out)["data"]["stacks"][0]
    assert "timed out after 3s" in stack["error"]
    assert no_lock_left(r)


# -- faults: the file system -------------------------------------------------------------------


def test_an_unwritable_summary_file_is_a_clear_error(make_repo: Callable[..., GitRepo],
                                                     tmp_path: Path) -> None:
    r = two_stacks(make_repo)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = gp(r, "plan", "--all", "--summary-md", str(blocker / "sub" / "plan.md"))
    assert code == ExitCode.FAILED
    assert "cannot write Markdown summary" in err and "Traceback" not in err


def test_a_full_disk_leaves_no_partial_plan_metadata(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from gitops_push import fsutil
    from gitops_push.errors import GitopsPushError

    target = tmp_path / "plans" / "s" / "gitops-push-plan.json"
    real_fdopen = os.fdopen

    class FullDisk(io.RawIOBase):
        def __init__(self, fd: int) -> None:
            self.inner = real_fdopen(fd, "wb")

        def write(self, data: object) -> int:  # emulates ENOSPC from the kernel
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            self.inner.close()

    monkeypatch.setattr(fsutil.os, "fdopen", lambda fd, mode: FullDisk(fd))
    with pytest.raises(GitopsPushError) as info:
        fsutil.atomic_write(target, "{}", what="plan metadata")
    assert "No space left on device" in str(info.value)
    assert list(target.parent.iterdir()) == []


# -- hostile text in output ------------------------------------------------------------------------
HOSTILE = "web|`x`<img src=x onerror=alert(1)>[link](http://evil)**b**\n# h1"


def test_markdown_summaries_escape_hostile_names() -> None:
    from gitops_push.run.model import RunReport

    report = RunReport("plan", "run-1", "a" * 40, None, "all", outcomes=[
        StackOutcome(name=HOSTILE, type="terraform", path=HOSTILE, wave=1, status="changed",
                     result="failed", message=HOSTILE, error=HOSTILE + "\n```\n"),
    ], warnings=[HOSTILE])
    md = output.report_markdown(report)
    prose = strip_code(md)  # code spans and fenced blocks render their content literally
    assert "<img" not in prose and "](http" not in prose and "**b**" not in prose
    assert "\n# h1" not in prose
    table_rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert all(line.count(" | ") == 6 for line in table_rows[2:])  # no injected cells


def strip_code(md: str) -> str:
    """Markdown with fenced blocks and inline code spans removed (CommonMark rules)."""
    import re

    md = re.sub(r"^(`{3,})[^\n]*\n.*?^\1\s*$", "", md, flags=re.S | re.M)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", md, flags=re.S)


def test_markdown_is_truncated_within_the_comment_limit() -> None:
    text = "x\n" * 100_000
    cut = output.truncate_markdown("<details>\n```\n" + text, 60_000)
    assert len(cut) <= 60_100 and "truncated" in cut
    assert cut.count("```") % 2 == 0 and cut.count("<details>") == cut.count("</details>")


# -- property-based: arbitrary names and fragments ----------------------------------------
names = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00/"),
                min_size=1, max_size=40).filter(lambda s: s not in (".", "..") and
                                               len(s.encode()) < 200)
fragments = st.text(max_size=300)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=names, tf_text=fragments, yaml_text=fragments)
def test_any_file_name_and_fragment_gives_a_documented_outcome(
        make_repo: Callable[..., GitRepo], name: str, tf_text: str, yaml_text: str) -> None:
    r = make_repo({"infra/a/main.tf": TF})
    base = r.head()
    r.write({f"infra/a/{name}.tf": tf_text, f"k8s/{name}/x.yaml": yaml_text,
             "gitops-push.yaml": "version: 1\ndiscover:\n  terraform: ['infra/*']\n"
                                 "  kubernetes: ['k8s/*']\n"})
    r.commit("fuzz")
    code, out, err = gp(r, "changed", "--base", base, "--output", "json")
    assert code in DOCUMENTED_EXIT_CODES
    assert code in (ExitCode.OK, ExitCode.USAGE), err
    assert "Traceback" not in err and "internal error" not in err
    envelope = json.loads(out)
    assert envelope["exit_code"] == code
    if code == 0:
        files = {f for s in envelope["data"]["stacks"] for f in s["files"]}
        assert f"infra/a/{name}.tf" in files


@settings(max_examples=80, deadline=None)
@given(text=st.text(max_size=400))
def test_any_config_text_is_parsed_or_refused_with_a_location(text: str) -> None:
    from gitops_push import config
    from gitops_push.errors import ConfigError

    try:
        config.parse(text, "gitops-push.yaml")
    except ConfigError as exc:
        assert exc.exit_code == ExitCode.USAGE
        # every refusal is located: the file, and its line when the YAML has one
        assert exc.path is not None
        assert exc.path == "gitops-push.yaml" or exc.path.startswith("gitops-push.yaml:")


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list('module"{}()=#/*<-EOF\n $abc.')),
                    max_size=200))
def test_any_hcl_fragment_is_scanned_or_refused_naming_the_file(text: str) -> None:
    from gitops_push.engines.terraform import hcl
    from gitops_push.errors import ParseError

    try:
        hcl.scan(text, "f.tf")
    except ParseError as exc:
        assert exc.path is not None and exc.path.startswith("f.tf")


# -- hostile Kubernetes manifests (offline lint; no cluster) -----------------------------------
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n"
    for i in range(8))


def k8s_lint(tmp_path: Path, files: dict[str, bytes]) -> list[str]:
    stack_dir = tmp_path / "repo" / "k8s"
    stack_dir.mkdir(parents=True)
    for name, data in files.items():
        (stack_dir / name).write_bytes(data)
    return _lint_existing(tmp_path, stack_dir)


@pytest.mark.parametrize(("data", "fragment", "line"), [
    (b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n", "duplicate key", 5),
    (b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n\tname: a\n", "tab", 4),
    (b"apiVersion: v1\nkind: ConfigMap\n# caf\xe9\nmetadata: {name: a}\n", "UTF-8", 3),
    (b"apiVersion: v1\nkind: [\n", "invalid YAML", None),
    (LAUGHS.encode(), "alias expansion", None),
])
def test_hostile_manifests_are_lint_errors_with_file_and_line(
        tmp_path: Path, data: bytes, fragment: str, line: int | None) -> None:
    errors = k8s_lint(tmp_path, {"bad.yaml": data})
    assert errors and any(fragment in e for e in errors), errors
    assert all(e.startswith("k8s/bad.yaml") for e in errors)
    if line is not None:
        assert any(e.startswith(f"k8s/bad.yaml:{line}:") for e in errors), errors


def test_a_manifest_symlinked_outside_the_repository_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "outside.yaml"
    secret.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: leak}\n")
    stack_dir = tmp_path / "repo" / "k8s"
    stack_dir.mkdir(parents=True)
    (stack_dir / "link.yaml").symlink_to(secret)
    (stack_dir / "loop").symlink_to(stack_dir)  # a directory loop must not hang the walk
    errors = _lint_existing(tmp_path, stack_dir)
    assert any("symlink points outside the repository" in e for e in errors)


def _lint_existing(tmp_path: Path, stack_dir: Path) -> list[str]:
    from gitops_push import config
    from gitops_push.engines import spec
    from gitops_push.engines.base import EngineContext

    stack = config.parse("version: 1\nstacks:\n  - {name: web, path: k8s, type: kubernetes}\n"
                         ).stacks[0].stack
    ctx = EngineContext(repo_root=tmp_path / "repo", stack_dir=stack_dir,
                        env={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"]},
                        phase="plan", work_dir=tmp_path / "work")
    result = spec("kubernetes").factory().lint(stack, ctx)
    return [str(d) for d in result.diagnostics if d.severity == "error"]


def test_a_missing_kubectl_is_one_clear_error(tmp_path: Path) -> None:
    from gitops_push import config
    from gitops_push.engines import spec
    from gitops_push.errors import GitopsPushError

    stack = config.parse("version: 1\nstacks:\n  - {name: web, path: k8s, type: kubernetes}\n"
                         ).stacks[0].stack
    with pytest.raises(GitopsPushError) as info:
        spec("kubernetes").factory().check([stack], {"PATH": str(tmp_path)})
    assert "kubectl" in str(info.value)
