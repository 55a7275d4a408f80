"""Change detection: which stacks a commit range affects, why, and in which waves."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import EXAMPLE_FILES, GitRepo, git

from gitops_push import config
from gitops_push.detect import changes
from gitops_push.errors import GitError, ParseError
from gitops_push.git import Repo

ZERO = "0" * 40


def detect(r: GitRepo, base: str | None = None, head: str | None = None,
           environ: dict[str, str] | None = None, all_stacks: bool = False
           ) -> changes.ChangeSet:
    repo = Repo(r.path, environ or {})
    cfg = config.load(repo.root)
    return changes.changed(repo, cfg, base=base, head=head, environ=environ or {},
                           all_stacks=all_stacks)


def summary(cs: changes.ChangeSet) -> dict[str, str]:
    return {c.stack.name: c.status for c in cs.stacks}


def test_a_file_inside_a_stack_marks_only_that_stack(repo: GitRepo) -> None:
    base = repo.head()
    repo.commit("net", {"infra/network/main.tf": EXAMPLE_FILES["infra/network/main.tf"] + "#\n"})
    cs = detect(repo, base)
    assert summary(cs) == {"network": "changed"}
    assert cs.stacks[0].files == ("infra/network/main.tf",)


def test_a_local_module_change_marks_its_users_with_the_chain(repo: GitRepo) -> None:
    base = repo.head()
    repo.commit("inner", {"modules/svc/inner/main.tf": 'resource "terraform_data" "y" {}\n'})
    cs = detect(repo, base)
    assert summary(cs) == {"app": "changed"}
    reason = cs.stacks[0].reasons[0]
    assert reason.file == "modules/svc/inner/main.tf"
    assert reason.chain == ('module "inner" in modules/svc/main.tf',
                            'module "svc" in infra/app/main.tf')


def test_a_file_read_by_file_function_is_watched(repo: GitRepo) -> None:
    base = repo.head()
    repo.commit("policy", {"shared/policy.json": '{"v": 2}\n'})
    cs = detect(repo, base)
    assert summary(cs) == {"app": "changed"}
    assert "file() in infra/app/main.tf:6" in cs.stacks[0].reasons[0].chain[0]


def test_a_kustomize_base_change_marks_the_overlay(repo: GitRepo) -> None:
    base = repo.head()
    repo.commit("base", {"k8s/base/deploy.yaml": EXAMPLE_FILES["k8s/base/deploy.yaml"] + "\n"})
    cs = detect(repo, base)
    assert summary(cs) == {"web": "changed"}
    assert cs.stacks[0].reasons[0].chain == (
        'resources "deploy.yaml" in k8s/base/kustomization.yaml',
        'resources "../../base" in k8s/overlays/prod/kustomization.yaml',
    )


def test_watch_globs_mark_a_stack(repo: GitRepo) -> None:
    base = repo.head()
    repo.commit("env", {"shared/web/app.env": "A=2\n"})
    assert summary(detect(repo, base)) == {"web": "changed"}


def test_files_of_no_stack_and_audit_records_mark_nothing(repo: GitRepo) -> None:
    base = repo.head()
    repo.commit("docs", {"README.md": "changed\n",
                         ".gitops-push/audit/2026/run.json": "{}\n"})
    cs = detect(repo, base)
    assert cs.stacks == ()


def test_renames_count_on_both_sides(repo: GitRepo) -> None:
    repo.commit("x", {"infra/network/extra.tf": "# a long enough file to be a rename\n" * 5})
    base = repo.head()
    repo.git("mv", "infra/network/extra.tf", "infra/app/extra.tf")
    repo.commit("move")
    cs = detect(repo, base)
    assert summary(cs) == {"network": "changed", "app": "changed"}


def test_a_mode_change_counts(repo: GitRepo) -> None:
    base = repo.head()
    (repo.path / "infra/network/main.tf").chmod(0o755)
    repo.commit("chmod")
    assert summary(detect(repo, base)) == {"network": "changed"}


def test_a_deleted_file_counts(repo: GitRepo) -> None:
    repo.commit("x", {"infra/network/extra.tf": "# x\n"})
    base = repo.head()
    repo.commit("rm", {"infra/network/extra.tf": None})
    assert summary(detect(repo, base)) == {"network": "changed"}


def test_a_removed_stack_is_reported_not_dropped(repo: GitRepo) -> None:
    base = repo.head()
    cfg = EXAMPLE_FILES["gitops-push.yaml"].replace(
        "  - name: network\n    path: infra/network\n    type: terraform\n", "").replace(
        "    depends_on: [network]\n", "")
    repo.commit("drop network", {"infra/network": None, "gitops-push.yaml": cfg})
    cs = detect(repo, base)
    assert summary(cs) == {"network": "removed"}
    assert cs.stacks[0].files == ("infra/network/main.tf",)


def test_a_removed_discovered_stack_is_reported(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({"infra/a/main.tf": "# a\n", "infra/b/main.tf": "# b\n"})
    base = r.head()
    r.commit("rm", {"infra/b": None})
    assert summary(detect(r, base)) == {"infra-b": "removed"}


def test_base_equal_to_head_changes_nothing(repo: GitRepo) -> None:
    assert detect(repo, repo.head()).stacks == ()


def test_the_first_commit_marks_every_stack(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({**EXAMPLE_FILES})
    cs = detect(r, environ={})
    assert cs.range.source in ("first-commit", "merge-base")
    r2 = make_repo({**EXAMPLE_FILES}, commit=False)
    r2.commit("only commit")
    cs = detect(r2)
    assert cs.range.source == "first-commit"
    assert set(summary(cs)) == {"network", "app", "web"}


def test_all_marks_every_stack(repo: GitRepo) -> None:
    cs = detect(repo, all_stacks=True)
    assert set(summary(cs)) == {"network", "app", "web"}
    assert all(c.note == "--all" for c in cs.stacks)


def test_waves_follow_dependencies_even_through_unchanged_stacks(repo: GitRepo) -> None:
    base = repo.head()
    repo.commit("both", {
        "infra/network/main.tf": EXAMPLE_FILES["infra/network/main.tf"] + "#\n",
        "k8s/overlays/prod/kustomization.yaml": "resources:\n  - ../../base\n",
    })
    cs = detect(repo, base)
    assert [(c.stack.name, c.wave) for c in cs.stacks] == [("network", 1), ("web", 2)]


def test_all_stacks_run_in_dependency_waves(repo: GitRepo) -> None:
    cs = detect(repo, all_stacks=True)
    assert [(c.stack.name, c.wave) for c in cs.stacks] == [("network", 1), ("app", 2), ("web", 3)]


def test_merge_commits_compare_trees(repo: GitRepo) -> None:
    base = repo.head()
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit("f", {"infra/network/f.tf": "# f\n"})
    repo.git("checkout", "-q", "main")
    repo.commit("m", {"infra/app/m.tf": "# m\n"})
    repo.git("merge", "-q", "--no-ff", "-m", "merge", "feature")
    assert summary(detect(repo, base)) == {"network": "changed", "app": "changed"}


@pytest.mark.parametrize("name", [
    "with space.tf", "quote'\"s.tf", "ünïcødé.tf", "-leading-dash.tf", "$(touch pwned).tf",
    "back`tick`.tf", "semi;colon.tf", "new\nline.tf", "[red]markup[/red].tf",
])
def test_hostile_file_names_are_matched_exactly(repo: GitRepo, name: str) -> None:
    base = repo.head()
    repo.commit("odd", {f"infra/network/{name}": "# x\n"})
    cs = detect(repo, base)
    assert summary(cs) == {"network": "changed"}
    assert cs.stacks[0].files == (f"infra/network/{name}",)
    assert not (repo.path / "pwned").exists()


def test_registry_and_git_module_sources_are_ignored(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({
        "infra/a/main.tf": 'module "r" {\n  source = "hashicorp/consul/aws"\n}\n'
                           'module "g" {\n  source = "git::https://example.com/m.git"\n}\n',
    })
    base = r.head()
    r.commit("x", {"README.md": "x\n"})
    assert detect(r, base).stacks == ()


def test_an_unparseable_tf_file_counts_its_stack_as_changed_and_names_file_line(
        repo: GitRepo) -> None:
    """Issue 12: one stack's syntax error must not stop change detection for the others;
    its references are unknown, so the stack counts as changed (widen, never narrow)."""
    repo.commit("bad", {"infra/app/bad.tf": 'module "m" {\n  source = "../x\n}\n'})
    base = repo.head()
    repo.commit("net", {"infra/network/x.tf": "#\n"})
    cs = detect(repo, base)
    assert summary(cs) == {"network": "changed", "app": "changed"}
    (app,) = [c for c in cs.stacks if c.stack.name == "app"]
    assert [r.file for r in app.reasons] == ["infra/app/bad.tf"]
    assert "infra/app/bad.tf:2: unterminated string" in str(app.reasons[0])
    assert any("infra/app/bad.tf:2" in w and "app" in w for w in cs.range.warnings)


def test_an_unparseable_module_counts_every_stack_using_it_as_changed(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({
        "a/main.tf": 'module "m" {\n  source = "../mod"\n}\n',
        "b/main.tf": 'resource "terraform_data" "b" {}\n',
        "mod/main.tf": 'module "inner" {\n  source = "./inner"\n}\n',
        "mod/inner/main.tf": "#\n",
    })
    r.commit("break the module", {"mod/main.tf": 'module "inner" {\n  source = "./inner\n}\n'})
    base = r.head()
    r.commit("b only", {"b/x.tf": "#\n"})
    cs = detect(r, base)
    # mod/ and mod/inner/ stay modules (salvaged sources), never discovered as stacks
    assert summary(cs) == {"a": "changed", "b": "changed"}
    (a,) = [c for c in cs.stacks if c.stack.name == "a"]
    assert "mod/main.tf:2: unterminated string" in str(a.reasons[0])
    assert 'module "m" in a/main.tf' in str(a.reasons[0])


def test_an_unparseable_kustomization_counts_its_stack_as_changed(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({
        "k8s/base/kustomization.yaml": "resources:\n  - cm.yaml\n",
        "k8s/base/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
        "k8s/a/kustomization.yaml": "resources:\n  - ../base\n",
        "k8s/b/kustomization.yaml": "resources:\n  - ../base\nnamePrefix: b-\n",
    })
    r.commit("typo", {"k8s/b/kustomization.yaml": 'resources:\n  - ../base\nnamePrefix: "b-\n'})
    base = r.head()
    r.commit("a", {"k8s/a/x.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\n"})
    cs = detect(r, base)
    assert summary(cs) == {"k8s-a": "changed", "k8s-b": "changed"}  # base stays a base
    assert any("k8s/b/kustomization.yaml:3" in w for w in cs.range.warnings)


def test_a_missing_module_directory_counts_its_stack_as_changed(repo: GitRepo) -> None:
    repo.commit("typo", {"infra/app/main.tf": 'module "s" {\n  source = "../../modules/svx"\n}\n'})
    base = repo.head()
    repo.commit("net", {"infra/network/x.tf": "#\n"})
    cs = detect(repo, base)
    assert summary(cs) == {"network": "changed", "app": "changed"}
    assert any("infra/app/main.tf:2" in w and "is not a directory" in w
               for w in cs.range.warnings)


def test_a_module_source_escaping_the_repo_is_refused(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({"a/main.tf": 'module "m" {\n  source = "../../../etc"\n}\n'})
    base = r.head()
    r.commit("x", {"a/x.tf": "#\n"})
    with pytest.raises(ParseError) as info:
        detect(r, base)
    assert "outside the repository" in info.value.message
    assert info.value.path == "a/main.tf:2"


def test_a_symlinked_file_target_outside_the_repo_is_refused(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({"a/main.tf": 'locals {\n  p = file("${path.module}/link/passwd")\n}\n'})
    (r.path / "a/link").symlink_to("/etc")
    r.commit("link")
    base = r.head()
    r.commit("x", {"a/x.tf": "#\n"})
    with pytest.raises(ParseError) as info:
        detect(r, base)
    assert "points outside the repository" in info.value.message


def test_a_symlink_loop_does_not_hang(make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({"a/main.tf": 'locals {\n  p = file("${path.module}/loop/x")\n}\n'})
    (r.path / "a/loop").symlink_to("loop2")
    (r.path / "a/loop2").symlink_to("loop")
    r.commit("loop")
    base = r.head()
    r.commit("x", {"a/x.tf": "#\n"})
    with pytest.raises(ParseError) as info:
        detect(r, base)
    assert "symlink loop" in info.value.message


# -- where the base comes from -------------------------------------------------------
def test_the_default_base_is_the_merge_base_with_the_default_branch(repo: GitRepo) -> None:
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit("f", {"infra/network/f.tf": "# f\n"})
    cs = detect(repo)
    assert cs.range.source == "merge-base"
    assert summary(cs) == {"network": "changed"}


def test_a_branch_base_uses_three_dot_semantics(repo: GitRepo) -> None:
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit("f", {"infra/network/f.tf": "# f\n"})
    repo.git("checkout", "-q", "main")
    repo.commit("m", {"infra/app/m.tf": "# m\n"})
    repo.git("checkout", "-q", "feature")
    assert summary(detect(repo, "main")) == {"network": "changed"}


def test_github_push_uses_event_before(repo: GitRepo, tmp_path: Path) -> None:
    before = repo.head()
    repo.commit("n", {"infra/network/n.tf": "# n\n"})
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"before": before}))
    env = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push",
           "GITHUB_EVENT_PATH": str(event)}
    cs = detect(repo, environ=env)
    assert cs.range.source == "ci-push" and cs.range.base == before
    assert summary(cs) == {"network": "changed"}


def test_github_pull_request_uses_the_merge_base_of_the_pr_base(
        repo: GitRepo, tmp_path: Path) -> None:
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit("f", {"infra/network/f.tf": "# f\n"})
    repo.git("checkout", "-q", "main")
    main_tip = repo.commit("m", {"infra/app/m.tf": "# m\n"})
    repo.git("checkout", "-q", "feature")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"base": {"sha": main_tip}}}))
    env = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request",
           "GITHUB_EVENT_PATH": str(event)}
    assert summary(detect(repo, environ=env)) == {"network": "changed"}


def test_gitlab_all_zero_before_sha_falls_back_to_the_merge_base(repo: GitRepo) -> None:
    repo.git("checkout", "-q", "-b", "new-branch")
    repo.commit("n", {"infra/app/n.tf": "# n\n"})
    env = {"GITLAB_CI": "true", "CI_COMMIT_BEFORE_SHA": ZERO, "CI_DEFAULT_BRANCH": "main"}
    cs = detect(repo, environ=env)
    assert cs.range.source == "merge-base"
    assert summary(cs) == {"app": "changed"}
    assert any("all zeros" in w for w in cs.range.warnings)


def test_gitlab_merge_request_diff_base(repo: GitRepo) -> None:
    base = repo.head()
    repo.git("checkout", "-q", "-b", "mr")
    repo.commit("n", {"infra/app/n.tf": "# n\n"})
    env = {"GITLAB_CI": "true", "CI_PIPELINE_SOURCE": "merge_request_event",
           "CI_MERGE_REQUEST_IID": "7", "CI_MERGE_REQUEST_DIFF_BASE_SHA": base}
    cs = detect(repo, environ=env)
    assert cs.range.source == "ci-pr" and cs.range.base == base


@pytest.mark.parametrize("value", ["", "   ", "not-a-sha", "abc\ndef", "x" * 5000])
def test_hostile_ci_variables_are_ignored_with_a_warning(repo: GitRepo, value: str) -> None:
    env = {"GITLAB_CI": "true", "CI_COMMIT_BEFORE_SHA": value}
    cs = detect(repo, environ=env)
    assert cs.range.source in ("merge-base", "first-commit")
    if value.strip():
        assert any("not a commit SHA" in w for w in cs.range.warnings)


def test_a_missing_base_in_a_shallow_clone_is_fetched(repo: GitRepo, tmp_path: Path) -> None:
    first = repo.head()
    for i in range(5):
        repo.commit(f"c{i}", {f"infra/network/c{i}.tf": "#\n"}, push=True)
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo.origin}", str(shallow))
    r = GitRepo(shallow, repo.origin)
    assert r.git("rev-parse", "--is-shallow-repository") == "true"
    cs = detect(r, first)
    assert cs.range.source == "flag" and cs.range.base == first
    assert summary(cs) == {"network": "changed"}


def test_a_base_that_exists_nowhere_means_all_stacks_loudly(repo: GitRepo) -> None:
    ghost = "1234567890abcdef1234567890abcdef12345678"
    env = {"GITLAB_CI": "true", "CI_COMMIT_BEFORE_SHA": ghost}
    cs = detect(repo, environ=env)
    assert cs.range.source == "fallback"
    assert set(summary(cs)) == {"network", "app", "web"}
    assert any("EVERY stack" in w for w in cs.range.warnings)


def test_a_force_pushed_base_falls_back_to_all_stacks(repo: GitRepo, tmp_path: Path) -> None:
    repo.commit("lost", {"infra/network/lost.tf": "#\n"}, push=True)
    lost = repo.head()
    repo.git("reset", "-q", "--hard", "HEAD~1")
    repo.commit("new", {"infra/app/new.tf": "#\n"})
    repo.git("push", "-q", "--force", "origin", "main")
    git(repo.origin, "reflog", "expire", "--expire=now", "--all")
    git(repo.origin, "gc", "-q", "--prune=now")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", f"file://{repo.origin}", str(clone))
    cs = detect(GitRepo(clone, repo.origin), lost)
    assert cs.range.source == "fallback"


@pytest.mark.parametrize("ref", ["--upload-pack=touch /tmp/pwned", "-x", "no-such-ref",
                                 "HEAD\nmain", "a..b", "x" * 2000])
def test_bad_refs_are_clear_errors(repo: GitRepo, ref: str) -> None:
    with pytest.raises(GitError) as info:
        detect(repo, ref)
    assert "--base" in info.value.message


def test_an_ambiguous_ref_is_refused(repo: GitRepo) -> None:
    repo.commit("x", {"infra/app/x.tf": "#\n"})
    repo.git("tag", "dup", "HEAD~1")
    repo.git("branch", "dup", "HEAD")
    with pytest.raises(GitError) as info:
        detect(repo, "dup")
    assert "ambiguous" in info.value.message


def test_a_repository_without_commits_is_a_clear_error(make_repo: Callable[..., GitRepo]
                                                       ) -> None:
    r = make_repo(None, commit=False)
    with pytest.raises(GitError) as info:
        detect(r)
    assert "no commits" in info.value.message


def test_a_detached_head_works(repo: GitRepo) -> None:
    base = repo.head()
    repo.commit("n", {"infra/network/n.tf": "#\n"})
    repo.git("checkout", "-q", "--detach", "HEAD")
    assert summary(detect(repo, base)) == {"network": "changed"}
