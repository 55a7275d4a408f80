"""The blob-keyed cache of ``hcl.scan`` results that keeps repeated ``changed`` runs fast
(issue 14): the same answers as a fresh scan, never a stale or broken one."""

from __future__ import annotations

import json
from collections.abc import Callable

from conftest import EXAMPLE_FILES, GitRepo
from test_detect_changes import detect, summary

from gitops_push.engines.terraform import inputs as tf_inputs
from gitops_push.engines.terraform.scan_cache import ScanCache
from gitops_push.git import Repo


def cache_file(r: GitRepo) -> dict:
    return json.loads((r.path / ".git" / "gitops-push" / "cache" / "tf-refs.json").read_text())


def fresh_process() -> None:
    tf_inputs._SCAN_CACHES.clear()  # what a new gitops-push process starts with


def test_a_second_run_answers_from_the_cache_with_the_same_chain(repo: GitRepo) -> None:
    base = repo.head()
    repo.commit("policy", {"shared/policy.json": '{"v": 2}\n'})
    first = detect(repo, base)
    blob = repo.git("rev-parse", "HEAD:infra/app/main.tf")
    assert blob in cache_file(repo)["blobs"]
    fresh_process()
    second = detect(repo, base)
    assert summary(second) == summary(first) == {"app": "changed"}
    assert second.stacks[0].reasons == first.stacks[0].reasons
    assert "file() in infra/app/main.tf:6" in second.stacks[0].reasons[0].chain[0]


def test_the_cache_is_what_answers(repo: GitRepo) -> None:
    """A (forged) cached answer is used as is: proof the file was not scanned again."""
    base = repo.head()
    repo.commit("policy", {"shared/policy.json": '{"v": 2}\n'})
    detect(repo, base)
    data = cache_file(repo)
    blob = repo.git("rev-parse", "HEAD:infra/app/main.tf")
    data["blobs"][blob] = [[], []]  # "references nothing"
    (repo.path / ".git/gitops-push/cache/tf-refs.json").write_text(json.dumps(data))
    fresh_process()
    assert summary(detect(repo, base)) == {}


def test_a_cache_from_another_scanner_or_unreadable_is_ignored(repo: GitRepo) -> None:
    base = repo.head()
    repo.commit("policy", {"shared/policy.json": '{"v": 2}\n'})
    detect(repo, base)
    path = repo.path / ".git/gitops-push/cache/tf-refs.json"
    data = cache_file(repo)
    blob = repo.git("rev-parse", "HEAD:infra/app/main.tf")
    data["blobs"][blob] = [[], []]
    data["version"] = "an-older-scanner"
    path.write_text(json.dumps(data))
    fresh_process()
    assert summary(detect(repo, base)) == {"app": "changed"}
    path.write_text("{not json")
    fresh_process()
    assert summary(detect(repo, base)) == {"app": "changed"}


def test_a_file_that_does_not_parse_is_never_cached(
        make_repo: Callable[..., GitRepo]) -> None:
    bad = 'module "x" {\n  source = "../m\n}\n'  # unterminated string
    r = make_repo(EXAMPLE_FILES)
    base = r.head()
    r.commit("broken", {"infra/network/main.tf": bad, "shared/policy.json": "[]\n"})
    for _ in range(2):
        fresh_process()
        cs = detect(r, base)  # the stack that reads it counts as changed (issue 12)
        assert "network" in summary(cs)
        assert any("infra/network/main.tf:2" in w and "network" in w
                   for w in cs.range.warnings)
    blob = r.git("rev-parse", "HEAD:infra/network/main.tf")
    cache = ScanCache(Repo(r.path).git_dir)
    assert cache.get(blob, "infra/network/main.tf") is None
