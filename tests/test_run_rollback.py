"""rollback --to: the dry run shows what the real run will do, and --stack means only those
stacks (issue 12). Real git with a bare origin, real terraform (terraform_data, local
backend: the state is untracked in each stack directory)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import GitRepo
from test_run_apply import audit_records, gp, results

from gitops_push.errors import ExitCode

pytestmark = pytest.mark.slow


def stack_tf(name: str, value: str) -> str:
    return (f'module "shared" {{\n  source = "../../modules/shared"\n}}\n'
            f'resource "terraform_data" "{name}" {{\n  input = "{value}"\n}}\n')


def module_tf(value: str) -> str:
    return f'resource "terraform_data" "s" {{\n  input = "{value}"\n}}\n'


@pytest.fixture
def shared_repo(make_repo: Callable[..., GitRepo]) -> GitRepo:
    """app and db both use modules/shared; net stands alone."""
    return make_repo({
        ".gitignore": "*.tfstate\n*.tfstate.*\n.terraform*\n",
        "gitops-push.yaml": "version: 1\nstacks:\n"
                            "  - {name: net, path: infra/net, type: terraform}\n"
                            "  - {name: app, path: infra/app, type: terraform, "
                            "depends_on: [net]}\n"
                            "  - {name: db, path: infra/db, type: terraform}\n",
        "infra/net/main.tf": module_tf("n1").replace('"s"', '"n"'),
        "infra/app/main.tf": stack_tf("app", "a1"),
        "infra/db/main.tf": stack_tf("db", "d1"),
        "modules/shared/main.tf": module_tf("s1"),
    })


def counts(envelope: dict) -> dict[str, dict[str, int]]:
    return {s["name"]: s["counts"] for s in envelope["data"]["stacks"]}


def test_a_stack_rollback_that_drags_others_along_is_refused(shared_repo: GitRepo) -> None:
    r = shared_repo
    assert gp(r, "apply")[0] == 0
    good = r.head()
    r.commit("bad", {"infra/app/main.tf": stack_tf("app", "a2"),
                     "modules/shared/main.tf": module_tf("s2")}, push=True)
    assert gp(r, "apply")[0] == 0
    head = r.head()
    for dry in (["--dry-run"], []):
        code, env = gp(r, "rollback", "--to", good, "--stack", "app", *dry)
        assert code == ExitCode.USAGE, env
        message = env["errors"][0]["message"]
        assert "would also change db" in message and "modules/shared" in message
        assert "--stack app --stack db" in message
        assert r.head() == head and r.git("rev-parse", "origin/main") == head
    assert r.git("status", "--porcelain") == ""


def test_the_dry_run_plans_every_stack_the_rollback_applies(shared_repo: GitRepo) -> None:
    r = shared_repo
    assert gp(r, "apply")[0] == 0
    good = r.head()
    r.commit("bad", {"infra/app/main.tf": stack_tf("app", "a2"),
                     "modules/shared/main.tf": module_tf("s2")}, push=True)
    assert gp(r, "apply")[0] == 0
    head = r.head()

    code, dry = gp(r, "rollback", "--to", good, "--stack", "app", "--stack", "db",
                   "--dry-run")
    assert code == 0, dry
    assert results(dry) == {"app": "planned", "db": "planned"}
    rows = {s["name"]: s for s in dry["data"]["stacks"]}
    assert {n: (s["type"], s["wave"]) for n, s in rows.items()} == {
        "app": ("terraform", 1), "db": ("terraform", 1)}
    # real plans against the real (untracked, local) state: changes, not creations
    assert counts(dry)["app"] == {"add": 0, "change": 2, "destroy": 0, "replace": 0}
    assert counts(dry)["db"] == {"add": 0, "change": 1, "destroy": 0, "replace": 0}
    assert "Roll back app, db to" in dry["data"]["notes"][0]
    assert r.head() == head and r.git("status", "--porcelain") == ""
    assert len(r.git("worktree", "list").splitlines()) == 1  # the preview worktree is gone

    code, real = gp(r, "rollback", "--to", good, "--stack", "app", "--stack", "db")
    assert code == 0, real
    assert results(real) == {"app": "applied", "db": "applied"}
    assert counts(real) == counts(dry)
    body = r.git("log", "-1", "--format=%B")
    assert body.startswith(f"Roll back app, db to {good[:12]}")
    assert "1: app (terraform)" in body and "1: db (terraform)" in body
    assert (r.path / "modules/shared/main.tf").read_text() == module_tf("s1")


def test_a_rollback_to_a_run_id_records_that_run(shared_repo: GitRepo) -> None:
    r = shared_repo
    code, env = gp(r, "apply")
    assert code == 0
    run_id = env["data"]["run_id"]
    r.commit("net v2", {"infra/net/main.tf": module_tf("n2").replace('"s"', '"n"')}, push=True)
    assert gp(r, "apply")[0] == 0
    code, dry = gp(r, "rollback", "--to", run_id, "--dry-run")
    assert code == 0 and results(dry) == {"net": "planned"}  # only what the commit changes
    code, env = gp(r, "rollback", "--to", run_id)
    assert code == 0 and results(env) == {"net": "applied"}
    last = [rec for rec in audit_records(r) if rec["phase"] == "finished"][-1]
    # docs/audit.md: the run rolled back TO (its commit is rollback_to), not a run undone
    assert last["rollback_of_run"] == run_id
    assert last["rollback_to"] == audit_records(r)[1]["head"]
    assert f"Rollback-To-Run: {run_id}" in r.git("log", "-1", "--format=%B")


def test_a_rollback_past_a_listed_stack_s_creation_is_refused_naming_it(
        shared_repo: GitRepo) -> None:
    r = shared_repo
    assert gp(r, "apply")[0] == 0
    good = r.head()
    config = (r.path / "gitops-push.yaml").read_text()
    r.commit("new stack", {"gitops-push.yaml": config + "  - {name: extra, path: infra/extra, "
                                                        "type: terraform}\n",
                           "infra/extra/main.tf": module_tf("e1")}, push=True)
    assert gp(r, "apply")[0] == 0
    head = r.head()
    for dry in (["--dry-run"], []):
        code, env = gp(r, "rollback", "--to", good, *dry)
        assert code == ExitCode.USAGE
        message = env["errors"][0]["message"]
        assert "stack 'extra' (infra/extra, listed at gitops-push.yaml:" in message
        assert r.head() == head  # nothing committed


def test_a_rollback_that_removes_a_discovered_stack_needs_allow_destroy(
        make_repo: Callable[..., GitRepo]) -> None:
    r = make_repo({".gitignore": "*.tfstate\n*.tfstate.*\n.terraform*\n",
                   "infra/a/main.tf": module_tf("a1")})
    assert gp(r, "apply")[0] == 0
    good = r.head()
    r.commit("new stack", {"infra/b/main.tf": module_tf("b1")}, push=True)
    assert gp(r, "apply")[0] == 0
    head = r.head()
    code, env = gp(r, "rollback", "--to", good)
    assert code == ExitCode.USAGE and "removes infra-b" in env["errors"][0]["message"]
    assert r.head() == head  # refused before committing, not after pushing

    code, dry = gp(r, "rollback", "--to", good, "--dry-run", "--allow-destroy")
    assert code == 0, dry
    (row,) = dry["data"]["stacks"]
    assert (row["name"], row["status"], row["counts"]["destroy"]) == ("infra-b", "removed", 1)
    code, real = gp(r, "rollback", "--to", good, "--allow-destroy")
    assert code == 0 and results(real) == {"infra-b": "destroyed"}
