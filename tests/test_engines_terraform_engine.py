"""The Terraform engine, against real terraform (``terraform_data`` + local backend only)."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fixtures_terraform import (
    BACKEND,
    TERRAFORM,
    TfRepo,
    apply_in_new_process,
    engine,
    fmt,
    resources,
    script,
    variable,
)

from gitops_push import config
from gitops_push.engines.base import Change, DriftItem, OutputChange
from gitops_push.engines.terraform.cli import installs_providers
from gitops_push.engines.terraform.plan import PLAN_FILE, SUMMARY_FILE, changed_paths, drift_items
from gitops_push.engines.terraform.settings import BIN_ENV, TerraformSettings, resolve_binary
from gitops_push.engines.terraform.spec import ENGINE
from gitops_push.errors import ConfigError, ToolError, UserError

pytestmark = pytest.mark.skipif(shutil.which("terraform") is None, reason="needs terraform")


@pytest.fixture
def tf(tmp_path: Path) -> TfRepo:
    repo = TfRepo(root=tmp_path / "repo", state=tmp_path / "state", scratch=tmp_path / "scratch")
    repo.root.mkdir()
    repo.state.mkdir()
    return repo


def by_address(changes: tuple[Change, ...]) -> dict[str, str]:
    return {c.address: c.action for c in changes}


# -- settings -------------------------------------------------------------------------------


def test_settings_are_read_with_their_types_and_defaults() -> None:
    cfg = config.parse(
        "version: 1\n"
        "defaults:\n"
        "  terraform:\n"
        "    lock_timeout: 90s\n"
        "stacks:\n"
        "  - name: app\n"
        "    path: stacks/app\n"
        "    type: terraform\n"
        "    terraform:\n"
        "      binary: tofu\n"
        "      workspace: prod\n"
        "      var_files: [prod.tfvars, env/common.tfvars]\n"
        "      vars: {region: eu-west-1, replicas: 3}\n"
        "      backend_config: [backend/prod.hcl, key=app.tfstate]\n"
        "      env: [TF_VAR_db_password]\n"
        "      timeout: 1h\n"
        "      parallelism: 4\n"
        "  - name: net\n"
        "    path: stacks/net\n"
        "    type: terraform\n"
        "    terraform:\n"
        "      backend_config: {bucket: state, key: net.tfstate}\n"
    )
    app, net = (s.stack.settings for s in cfg.stacks)
    assert app == TerraformSettings(
        binary="tofu", workspace="prod", var_files=("prod.tfvars", "env/common.tfvars"),
        vars=(("region", "eu-west-1"), ("replicas", "3")),
        backend_config=("backend/prod.hcl", "key=app.tfstate"), env=("TF_VAR_db_password",),
        timeout=3600.0, parallelism=4, lock_timeout=90.0,
    )
    assert net.backend_config == ("bucket=state", "key=net.tfstate")
    assert net.binary is None and net.workspace is None and net.lock_timeout == 90.0
    assert ENGINE.env_names(app) == ("TF_VAR_db_password", BIN_ENV)


@pytest.mark.parametrize(
    ("settings", "line", "message"),
    [
        ("      workspce: prod\n", 7, "unknown key 'workspce' (did you mean 'workspace'?)"),
        ("      var_files:\n        - ok.tfvars\n        - ../secrets.tfvars\n", 9,
         "escapes the stack directory"),
        ("      var_files: [/etc/passwd]\n", 7, "must be a path relative to the stack"),
        ("      backend_config: [../../shared/backend.hcl]\n", 7, "escapes the stack"),
        ("      backend_config: key=value\n", 7, "must be a list (files or key=value) or a"),
        ("      timeout: soon\n", 7, "must be a duration like 90s, 5m, 1h"),
        ("      timeout: 0s\n", 7, "must be greater than 0"),
        ("      binary: bin/terraform\n", 7, "relative path; use an absolute path"),
        ("      vars:\n        tags: [a, b]\n", 8, "values must be strings"),
        ("      env: [TF-VAR]\n", 7, "does not match"),
        ("      parallelism: 0\n", 7, "must be at least 1"),
        ("      workspace: team/prod\n", 7, "does not match"),
    ],
)
def test_invalid_settings_name_the_file_and_line(settings: str, line: int, message: str) -> None:
    text = ("version: 1\nstacks:\n  - name: app\n    path: stacks/app\n    type: terraform\n"
            "    terraform:\n" + settings)
    with pytest.raises(ConfigError) as err:
        config.parse(text)
    assert err.value.path == f"gitops-push.yaml:{line}"
    assert message in err.value.message


def test_invalid_defaults_are_reported_even_when_no_stack_uses_them() -> None:
    with pytest.raises(ConfigError) as err:
        config.parse("version: 1\ndefaults:\n  terraform:\n    lock_timeout: forever\n")
    assert err.value.path == "gitops-push.yaml:4"
    assert "lock_timeout" in err.value.message


# -- lint -----------------------------------------------------------------------------------


def test_lint_passes_a_formatted_valid_stack(tf: TfRepo) -> None:
    tf.write({"main.tf": fmt(BACKEND + resources(a='"x"'))})
    result = engine().lint(tf.stack(), tf.ctx())
    assert result.ok
    assert result.diagnostics == ()


def test_lint_reports_each_unformatted_file_at_its_first_unformatted_line(tf: TfRepo) -> None:
    tf.write({
        "main.tf": fmt(BACKEND + resources(a='"x"')),
        "modules/net/net.tf": 'locals {\n  a = 1\n}\n\nlocals {\n  b= 2\n}\n',
    })
    result = engine().lint(tf.stack(), tf.ctx())
    assert not result.ok
    assert [str(d) for d in result.diagnostics] == [
        "stacks/app/modules/net/net.tf:6: not formatted (run `terraform fmt -recursive`)",
    ]


def test_one_fmt_serves_every_stack_of_the_run_and_each_gets_its_own_files(
        tmp_path: Path) -> None:
    wrapper, log = logging_wrapper(tmp_path)
    repos = [TfRepo(root=tmp_path / "repo", state=tmp_path / f"state-{n}",
                    scratch=tmp_path / "scratch", name=n, path=f"stacks/{n}") for n in "abc"]
    repos[0].write({"main.tf": fmt(BACKEND + resources(x='"a"'))})
    repos[1].write({"main.tf": fmt(BACKEND) + 'resource "terraform_data" "x" {\n  input= 1\n}\n'})
    repos[2].write({"main.tf": fmt(BACKEND + resources(x='"c"')),
                    "nested/more.tf": "locals {\n  a = 1\n  b= 2\n}\n"})
    eng = engine()
    stacks = [r.stack(binary=str(wrapper)) for r in repos]
    eng.check(stacks, repos[0].env())

    results = [eng.lint(st, r.ctx()) for st, r in zip(stacks, repos, strict=True)]

    assert subcommands(log).count("fmt") == 1
    assert [[str(d) for d in res.diagnostics] for res in results] == [
        [],
        ["stacks/b/main.tf:5: not formatted (run `tf-logged fmt -recursive`)"],
        ["stacks/c/nested/more.tf:3: not formatted (run `tf-logged fmt -recursive`)"],
    ]


def test_nested_stacks_each_get_their_fmt_findings_once(tmp_path: Path) -> None:
    repos = [TfRepo(root=tmp_path / "repo", state=tmp_path / f"state-{i}",
                    scratch=tmp_path / "scratch", name=f"s{i}", path=path)
             for i, path in enumerate((".", "infra", "infra/sub"))]
    unformatted = 'resource "terraform_data" "x" {\n  input= 1\n}\n'
    repos[0].write({"root.tf": fmt(BACKEND)})
    repos[1].write({"main.tf": fmt(BACKEND)})
    repos[2].write({"main.tf": fmt(BACKEND) + unformatted})
    eng = engine()
    stacks = [r.stack() for r in repos]
    eng.check(stacks, repos[0].env())

    found = [[str(d) for d in eng.lint(st, r.ctx()).diagnostics if "not formatted" in d.message]
             for st, r in zip(stacks, repos, strict=True)]

    # as fmt -recursive in each directory would say: the file once, in every enclosing stack
    assert found == [["infra/sub/main.tf:5: not formatted (run `terraform fmt -recursive`)"]] * 3


def test_a_syntax_error_in_one_stack_does_not_hide_the_others_fmt_findings(
        tmp_path: Path) -> None:
    repos = [TfRepo(root=tmp_path / "repo", state=tmp_path / f"state-{n}",
                    scratch=tmp_path / "scratch", name=n, path=f"stacks/{n}") for n in "ab"]
    repos[0].write({"main.tf": 'resource "terraform_data" "x" {\n  input =\n}\n'})
    repos[1].write({"main.tf": fmt(BACKEND) + 'resource "terraform_data" "x" {\n  input= 1\n}\n'})
    eng = engine()
    stacks = [r.stack() for r in repos]
    eng.check(stacks, repos[0].env())

    broken, unformatted = (eng.lint(st, r.ctx()) for st, r in zip(stacks, repos, strict=True))

    assert any(d.file == "stacks/a/main.tf" and d.line == 2 for d in broken.diagnostics)
    assert [str(d) for d in unformatted.diagnostics] == [
        "stacks/b/main.tf:5: not formatted (run `terraform fmt -recursive`)"]


def test_lint_reports_validation_errors_as_repo_file_line_message(tf: TfRepo) -> None:
    tf.write({"main.tf": fmt(BACKEND + resources(a="var.missing"))})
    (d,) = engine().lint(tf.stack(), tf.ctx()).diagnostics
    assert (d.severity, d.file, d.line) == ("error", "stacks/app/main.tf", 5)
    assert str(d).startswith("stacks/app/main.tf:5: Reference to undeclared input variable: ")


def test_lint_reports_syntax_errors_located(tf: TfRepo) -> None:
    tf.write({"main.tf": fmt(BACKEND),
              "broken.tf": 'resource "terraform_data" "b" {\n  input =\n}\n'})
    result = engine().lint(tf.stack(), tf.ctx())
    assert not result.ok
    assert any(d.file == "stacks/app/broken.tf" and d.line == 2 for d in result.diagnostics)


# -- plan and apply -------------------------------------------------------------------------


def test_plan_counts_creates_updates_replaces_and_noops(tf: TfRepo) -> None:
    eng = engine()
    main = BACKEND + variable("x") + variable("rev")
    tf.write({"main.tf": main + resources(a="var.x", keep='"same"') +
              'resource "terraform_data" "b" {\n  triggers_replace = var.rev\n}\n'})
    stack = tf.stack(vars={"x": "one", "rev": "1"})
    first = eng.plan(stack, tf.ctx("run1"))
    assert first.counts.add == 3 and first.has_changes
    eng.apply(stack, tf.ctx("run1", phase="apply"), first)

    tf.write({"main.tf": main + resources(a="var.x", keep='"same"', c='"new"') +
              'resource "terraform_data" "b" {\n  triggers_replace = var.rev\n}\n'})
    second = eng.plan(tf.stack(vars={"x": "two", "rev": "2"}), tf.ctx("run2"))
    assert by_address(second.changes) == {
        "terraform_data.a": "update", "terraform_data.b": "replace",
        "terraform_data.c": "create", "terraform_data.keep": "no-op",
    }
    assert (second.counts.add, second.counts.change, second.counts.replace) == (1, 1, 1)
    assert next(c for c in second.changes if c.action == "update").fields == ("input", "output")
    assert second.tool_version.startswith("terraform 1.")
    # Nothing was written into the repository: data dir, plans and state live elsewhere.
    assert sorted(p.name for p in tf.root.rglob("*")) == ["app", "main.tf", "stacks"]


def test_unchanged_stack_plans_no_changes(tf: TfRepo) -> None:
    eng = engine()
    tf.write({"main.tf": BACKEND + resources(a='"x"')})
    eng.apply(tf.stack(), tf.ctx(phase="apply"), eng.plan(tf.stack(), tf.ctx()))
    again = eng.plan(tf.stack(), tf.ctx("run2"))
    assert not again.has_changes
    assert by_address(again.changes) == {"terraform_data.a": "no-op"}


def test_saved_plan_is_applied_by_another_process_in_its_workspace(tf: TfRepo) -> None:
    tf.write({"main.tf": BACKEND + resources(a='"x"', b='"y"')})
    plan = engine().plan(tf.stack(workspace="prod"), tf.ctx("plan-job"))
    assert plan.artifact is not None
    assert {p.name for p in plan.artifact.iterdir()} >= {PLAN_FILE, SUMMARY_FILE}

    applied = apply_in_new_process(tf, plan.artifact, "apply-job", workspace="prod")

    assert applied["add"] == 2
    assert any("Apply complete! Resources: 2 added" in line for line in applied["lines"])
    prod_state = tf.state / "workspaces" / "prod" / "terraform.tfstate"
    assert set(tf.state_resources(prod_state)) == {"terraform_data.a", "terraform_data.b"}
    assert not (tf.state / "terraform.tfstate").exists()  # the default workspace is untouched


def test_load_plan_rebuilds_the_summary_and_refuses_another_stacks_plan(tf: TfRepo) -> None:
    eng = engine()
    tf.write({"main.tf": BACKEND + resources(a='"x"')})
    plan = eng.plan(tf.stack(), tf.ctx())
    assert plan.artifact is not None
    assert eng.load_plan(tf.stack(), tf.ctx(phase="apply"), plan.artifact) == plan
    tf.name = "other"
    with pytest.raises(UserError, match="it is the plan of stack 'app'"):
        eng.load_plan(tf.stack(), tf.ctx(phase="apply"), plan.artifact)


def test_stale_saved_plan_is_refused_and_must_be_replanned(tf: TfRepo) -> None:
    eng = engine()
    tf.write({"main.tf": BACKEND + variable("x") + resources(a="var.x")})
    older = eng.plan(tf.stack(vars={"x": "first"}), tf.ctx("mr-1"))
    newer = eng.plan(tf.stack(vars={"x": "second"}), tf.ctx("mr-2"))
    eng.apply(tf.stack(), tf.ctx("mr-2", phase="apply"), newer)

    with pytest.raises(ToolError) as err:
        eng.apply(tf.stack(), tf.ctx("mr-1", phase="apply"), older)
    assert "is stale" in err.value.message and "re-plan" in err.value.message
    assert "Saved plan is stale" in err.value.output_tail
    assert tf.state_resources()["terraform_data.a"]["input"]["value"] == "second"


def test_failed_apply_carries_command_exit_code_and_output_tail(tf: TfRepo) -> None:
    eng = engine()
    tf.write({"main.tf": BACKEND + 'resource "terraform_data" "bad" {\n'
              '  provisioner "local-exec" {\n    command = "echo about to fail; exit 1"\n  }\n}\n'})
    plan = eng.plan(tf.stack(), tf.ctx())
    with pytest.raises(ToolError) as err:
        eng.apply(tf.stack(), tf.ctx(phase="apply"), plan)
    assert err.value.message == "terraform apply failed"
    assert err.value.command[1] == "apply" and err.value.command[-1].endswith(PLAN_FILE)
    assert err.value.returncode == 1
    assert "local-exec provisioner error" in err.value.output_tail
    assert any("about to fail" in line for line in tf.lines)  # streamed as it happened


def test_timeout_stops_apply_gracefully_and_releases_the_state_lock(tf: TfRepo) -> None:
    eng = engine()
    tf.write({"main.tf": BACKEND + 'resource "terraform_data" "slow" {\n'
              '  provisioner "local-exec" {\n    command = "sleep 60"\n  }\n}\n'})
    stack = tf.stack(timeout="2s")
    plan = eng.plan(stack, tf.ctx())
    with pytest.raises(ToolError) as err:
        eng.apply(stack, tf.ctx(phase="apply"), plan)
    assert "timed out after 2s" in err.value.message
    assert "Interrupt received" in err.value.output_tail  # SIGINT: Terraform shut down itself
    assert not list(tf.state.glob("*.lock.info"))
    # lock_timeout is 0s: a lock still held would fail this plan at once.
    after = eng.plan(stack, tf.ctx("run2"))
    assert by_address(after.changes) == {"terraform_data.slow": "replace"}  # tainted


def test_destroy_plan_of_a_removed_stack_deletes_its_resources(tf: TfRepo) -> None:
    eng = engine()
    tf.write({"main.tf": BACKEND + resources(a='"x"', b='"y"')})
    eng.apply(tf.stack(), tf.ctx(phase="apply"), eng.plan(tf.stack(), tf.ctx()))
    # The runner checks the base commit out elsewhere and points stack_dir there.
    base = tf.scratch / "base-worktree" / tf.path
    shutil.copytree(tf.stack_dir, base)
    shutil.rmtree(tf.stack_dir)

    plan = eng.plan(tf.stack(), tf.ctx("destroy", stack_dir=base), destroy=True)
    assert plan.destroy and plan.counts.destroy == 2
    assert set(by_address(plan.changes).values()) == {"delete"}
    eng.apply(tf.stack(), tf.ctx("destroy", phase="apply", stack_dir=base), plan)
    assert tf.state_resources() == {}


def test_stacks_plan_and_apply_in_parallel_sharing_one_plugin_cache(tmp_path: Path) -> None:
    eng = engine()  # one engine per run, called from the runner's worker threads
    repos = [TfRepo(root=tmp_path / "repo", state=tmp_path / f"state-{n}",
                    scratch=tmp_path / "scratch", name=n, path=f"stacks/{n}") for n in "abc"]
    for repo in repos:
        repo.write({"main.tf": BACKEND + resources(x=f'"{repo.name}"')})

    def deploy(repo: TfRepo) -> int:
        plan = eng.plan(repo.stack(), repo.ctx())
        return eng.apply(repo.stack(), repo.ctx(phase="apply"), plan).counts.add

    with ThreadPoolExecutor(max_workers=3) as pool:
        assert list(pool.map(deploy, repos)) == [1, 1, 1]
    assert [r.state_resources()["terraform_data.x"]["input"]["value"] for r in repos] == [
        "a", "b", "c"]


# -- secrets --------------------------------------------------------------------------------

SECRET = "s3cr3t-Value-42"
NEW_SECRET = "n3w-s3cr3t-Value-43"


def test_sensitive_values_never_leave_terraform(tf: TfRepo) -> None:
    """Not in results, files or streamed lines, with ctx.secrets left empty on purpose.

    Terraform's human plan text would show terraform_data's ``output`` (a provider-
    computed copy of the sensitive input, so unmarked) in clear, old value included;
    the engine streams Terraform's JSON messages, which carry no attribute values.
    """
    eng = engine()
    tf.write({"main.tf": BACKEND + variable("pw", sensitive=True) + resources(
        secret="var.pw", nested='{ user = "app", password = var.pw }') +
        'output "token" {\n  value     = var.pw\n  sensitive = true\n}\n'})
    stack = tf.stack(env=["TF_VAR_pw"])
    seen: list[object] = []
    plans = []
    for run, value in (("first", SECRET), ("second", NEW_SECRET)):
        env = tf.env(TF_VAR_pw=value)
        plans.append(eng.plan(stack, tf.ctx(run, env=env)))
        seen += [plans[-1], eng.apply(stack, tf.ctx(run, phase="apply", env=env), plans[-1])]
    drift = eng.drift(stack, tf.ctx("drift", phase="drift", env=tf.env(TF_VAR_pw=SECRET)))
    seen.append(drift)

    update = plans[1]
    assert by_address(update.changes) == {
        "terraform_data.nested": "update", "terraform_data.secret": "update"}
    assert {c.fields for c in update.changes} == {("input.password", "output"), ("input", "output")}
    assert OutputChange("token", "update", sensitive=True) in update.outputs
    assert drift.items == (
        DriftItem("terraform_data.nested", "config", ("input.password", "output")),
        DriftItem("terraform_data.secret", "config", ("input", "output")),
    )
    assert "terraform_data.secret: Plan to update" in tf.lines
    for value in (SECRET, NEW_SECRET):
        assert value not in repr(seen)
        assert not [line for line in tf.lines if value in line]
        # Every file gitops-push wrote, except Terraform's binary plan: like state, it
        # legitimately holds values (Terraform needs them to apply exactly that plan).
        written = [p for p in tf.scratch.rglob("*") if p.is_file() and p.name != PLAN_FILE]
        assert any(p.name == SUMMARY_FILE for p in written)
        assert not [p for p in written if value.encode() in p.read_bytes()]


def test_changed_paths_name_sensitive_attributes_without_looking_inside() -> None:
    change = {
        "before": {"tags": {"a": "1", "b": "2"}, "creds": {"user": "u", "key": "old"},
                   "list": [1, 2], "same": "x"},
        "after": {"tags": {"a": "1", "b": "3", "c d": "4"}, "creds": {"user": "u", "key": "new"},
                  "list": [1, 5], "same": "x"},
        "after_unknown": {"id": True},
        "before_sensitive": {"creds": True},
        "after_sensitive": {"creds": True},
    }
    assert changed_paths(change) == ("tags.b", 'tags["c d"]', "creds", "list[1]", "id")


# -- drift ----------------------------------------------------------------------------------


def test_out_of_band_change_is_reported_as_drift_without_changing_anything(tf: TfRepo) -> None:
    eng = engine()
    tf.write({"main.tf": BACKEND + variable("x") + resources(a="var.x", b='"fixed"')})
    stack = tf.stack(vars={"x": "blue"})
    eng.apply(stack, tf.ctx(phase="apply"), eng.plan(stack, tf.ctx()))
    assert not eng.drift(stack, tf.ctx("clean", phase="drift")).drifted

    tf.terraform("apply", "-auto-approve", "-input=false", "-var", "x=red")

    drift = eng.drift(stack, tf.ctx("drifted", phase="drift"))
    assert drift.items == (DriftItem("terraform_data.a", "config", ("input", "output")),)
    assert tf.state_resources()["terraform_data.a"]["input"]["value"] == "red"
    assert not list(tf.work_dir("drifted").glob("*.tfplan"))  # drift plans are not kept


def test_refresh_only_drift_reports_changed_and_deleted_objects() -> None:
    # terraform_data never changes on refresh, so this is the resource_drift a cloud
    # provider produces (shape from Terraform's internal/command/testdata/show-json/drift).
    drift = [
        {"address": "aws_instance.web", "mode": "managed", "change": {
            "actions": ["update"], "before": {"ami": "a", "tags": {"env": "prod"}},
            "after": {"ami": "b", "tags": {"env": "prod"}}, "after_unknown": {},
            "before_sensitive": {}, "after_sensitive": {}}},
        {"address": "aws_s3_bucket.logs", "mode": "managed",
         "change": {"actions": ["delete"], "before": {"bucket": "logs"}, "after": None}},
        {"address": "aws_iam_role.r", "change": {"actions": ["no-op"]}},
    ]
    assert drift_items(drift, ()) == [
        DriftItem("aws_instance.web", "changed", ("ami",)),
        DriftItem("aws_s3_bucket.logs", "deleted"),
    ]


def logging_wrapper(tmp_path: Path) -> tuple[Path, Path]:
    """A ``binary:`` that logs each terraform command line, then runs the real terraform."""
    log = tmp_path / "calls.log"
    wrapper = script(tmp_path / "bin" / "tf-logged", f'echo "$@" >> {log}\nexec {TERRAFORM} "$@"\n')
    return wrapper, log


def subcommands(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()]


def init_line(log: Path) -> str:
    return next(line for line in log.read_text().splitlines() if line.startswith("init "))


def test_post_apply_verification_is_one_plan_and_drift_detection_two(tf: TfRepo,
                                                                      tmp_path: Path) -> None:
    wrapper, log = logging_wrapper(tmp_path)
    tf.write({"main.tf": BACKEND + resources(a='"x"')})
    eng = engine()
    stack = tf.stack(binary=str(wrapper))
    eng.apply(stack, tf.ctx(phase="apply"), eng.plan(stack, tf.ctx()))
    log.write_text("")

    assert not eng.drift(stack, tf.ctx(phase="drift"), after_apply=True).drifted
    assert subcommands(log) == ["plan"]  # same run: init is not repeated
    assert "-refresh-only" not in log.read_text()

    log.write_text("")
    assert not eng.drift(stack, tf.ctx("scheduled", phase="drift")).drifted
    assert subcommands(log) == ["init", "plan", "plan"]
    assert "-refresh-only" in log.read_text().splitlines()[1]


def test_post_apply_verification_reports_what_still_differs(tf: TfRepo) -> None:
    eng = engine()
    tf.write({"main.tf": BACKEND + variable("x") + resources(a="var.x")})
    stack = tf.stack(vars={"x": "blue"})
    eng.apply(stack, tf.ctx(phase="apply"), eng.plan(stack, tf.ctx()))
    tf.terraform("apply", "-auto-approve", "-input=false", "-var", "x=red")  # raced by hand

    verify = eng.drift(stack, tf.ctx(phase="drift"), after_apply=True)
    assert verify.items == (DriftItem("terraform_data.a", "config", ("input", "output")),)


def test_lint_before_a_plan_shares_one_backend_init(tf: TfRepo, tmp_path: Path) -> None:
    wrapper, log = logging_wrapper(tmp_path)
    tf.write({"main.tf": BACKEND + resources(a='"x"')})
    eng = engine()
    stack = tf.stack(binary=str(wrapper))
    assert eng.lint(stack, tf.ctx()).ok
    eng.plan(stack, tf.ctx())
    calls = subcommands(log)
    assert sorted(calls[:2]) == ["fmt", "init"]  # fmt runs while init does
    assert calls[2:] == ["validate", "plan", "show"]
    init = init_line(log)
    assert "-backend=false" not in init and "-backend-config=path=" in init


MIRROR = Path("/opt/tf-plugins")  # a provider mirror some machines carry (no network here)


@pytest.mark.skipif(not (MIRROR / "registry.terraform.io/hashicorp/aws").is_dir(),
                    reason="needs the local aws provider mirror in /opt/tf-plugins")
def test_an_unreachable_backend_fails_the_stack_instead_of_blaming_its_configuration(
        tf: TfRepo, tmp_path: Path) -> None:
    rc = tmp_path / "terraformrc"
    rc.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{MIRROR}"\n'
                  "  }\n}\n")
    version = next((MIRROR / "registry.terraform.io/hashicorp/aws").iterdir()).name
    tf.write({"main.tf": fmt(
        'terraform {\n  required_providers {\n    aws = {\n      source = "hashicorp/aws"\n'
        f'      version = "{version}"\n    }}\n  }}\n  backend "pg" {{\n'
        '    conn_str = "postgres://127.0.0.1:1/state?sslmode=disable"\n  }\n}\n'
        + resources(a='"x"'))})
    env = tf.env(TF_CLI_CONFIG_FILE=str(rc))
    stack = tf.stack(backend_config={}, env=["TF_CLI_CONFIG_FILE"])
    lint_only = tf.ctx("lint", env=env)
    lint_only.lint_only = True
    assert engine().lint(stack, lint_only).ok  # the configuration itself is fine

    with pytest.raises(ToolError) as err:
        engine().lint(stack, tf.ctx("apply", env=env))
    assert err.value.message == "terraform init failed"
    assert "connection refused" in err.value.output_tail


def test_lint_only_never_initialises_the_backend(tf: TfRepo, tmp_path: Path) -> None:
    # `gitops-push lint` may run where the backend's credentials are not available.
    wrapper, log = logging_wrapper(tmp_path)
    tf.write({"main.tf": BACKEND + resources(a='"x"')})
    ctx = tf.ctx()
    ctx.lint_only = True
    assert engine().lint(tf.stack(binary=str(wrapper)), ctx).ok
    assert sorted(subcommands(log)) == ["fmt", "init", "validate"]
    assert "-backend=false" in init_line(log)


@pytest.mark.parametrize(("files", "expected"), [
    ({"main.tf": 'resource "terraform_data" "a" {}\ndata "terraform_remote_state" "n" {}\n'},
     False),
    ({"main.tf": '# resource "aws_instance" "commented" {}\nlocals {\n  a = 1\n}\n'}, False),
    ({"main.tf": 'resource "aws_instance" "web" {}\n'}, True),
    ({"main.tf": '  data "http" "x" {}\n'}, True),
    ({"main.tf": 'provider "google" {}\n'}, True),
    ({"main.tf": 'module "m" {\n  source = "./m"\n}\n'}, True),
    ({"versions.tf": 'terraform {\n  required_providers {}\n}\n'}, True),
    ({"main.tf": "", ".terraform.lock.hcl": ""}, True),
    ({"main.tf.json": "{}"}, True),
    ({"main.tofu": 'ephemeral "random_password" "p" {}\n'}, True),
    ({"main.tf": "resource null_resource x {}\n"}, True),  # unquoted labels are valid HCL
    ({"main.tf": "provider aws {}\n"}, True),
    ({"main.tf": 'terraform {\n  backend "s3" {}\n}\n'}, True),  # its state may need some
    ({"main.tf": 'terraform {\n  cloud {\n  }\n}\n'}, True),
    ({"main.tf": 'resource "terraform_data" "a" {}\n', "terraform.tfstate": "{}"}, True),
])
def test_only_stacks_of_built_in_resources_skip_the_plugin_cache_lock(
        tmp_path: Path, files: dict[str, str], expected: bool) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert installs_providers(tmp_path) is expected


# -- binaries -------------------------------------------------------------------------------


def test_binary_setting_can_name_a_wrapper_script(tf: TfRepo, tmp_path: Path) -> None:
    log = tmp_path / "wrapper.log"
    wrapper = script(tmp_path / "bin" / "tf-wrapper",
                     f'echo "$1 data=$TF_DATA_DIR cache=$TF_PLUGIN_CACHE_DIR '
                     f'bin=${{{BIN_ENV}-unset}}" >> {log}\nexec {TERRAFORM} "$@"\n')
    tf.write({"main.tf": BACKEND + resources(a='"x"')})
    eng = engine()
    stack = tf.stack(binary=str(wrapper))
    eng.check([stack], tf.env())
    plan = eng.plan(stack, tf.ctx())
    assert plan.tool_version.startswith("tf-wrapper 1.")
    calls = log.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["version", "init", "plan", "show"]
    data_dir = calls[1].split()[1].removeprefix("data=")
    assert not Path(data_dir).is_relative_to(tf.root)  # the working tree stays clean
    assert calls[1].split()[2] == f"cache={tf.scratch / 'plugin-cache'}"


def test_a_prefetched_version_probe_is_reused_until_the_binary_changes(
        tf: TfRepo, tmp_path: Path) -> None:
    wrapper, log = logging_wrapper(tmp_path)
    stack = tf.stack(binary=str(wrapper))
    ENGINE.prefetch([stack], tf.env())  # what runs in a thread while git is read
    engine().check([stack], tf.env())
    engine().check([stack], tf.env())
    assert subcommands(log) == ["version"]

    time.sleep(0.01)  # a new mtime, as after an upgrade in place
    wrapper.write_text(wrapper.read_text() + "# upgraded\n")
    engine().check([stack], tf.env())
    assert subcommands(log) == ["version", "version"]


def test_binary_can_come_from_the_environment(tf: TfRepo, tmp_path: Path) -> None:
    log = tmp_path / "wrapper.log"
    wrapper = script(tmp_path / "bin" / "tofu",
                     f'echo "$1 bin=${{{BIN_ENV}-unset}}" >> {log}\nexec {TERRAFORM} "$@"\n')
    tf.write({"main.tf": BACKEND + resources(a='"x"')})
    env = tf.env(**{BIN_ENV: str(wrapper)})
    eng = engine()
    eng.check([tf.stack()], env)
    eng.plan(tf.stack(), tf.ctx(env=env))
    calls = log.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["version", "init", "plan", "show"]
    assert all(c.endswith("bin=unset") for c in calls)  # the override is not passed on
    with pytest.raises(UserError, match="relative path"):
        resolve_binary(TerraformSettings(), {BIN_ENV: "bin/terraform"})


def test_missing_binary_is_one_clear_error(tf: TfRepo) -> None:
    with pytest.raises(ToolError) as err:
        engine().check([tf.stack(binary="/opt/nowhere/terraform")], tf.env())
    message = err.value.message
    assert "'/opt/nowhere/terraform' (used by stack app) cannot be run" in message
    assert "Install Terraform >= 1.5" in message and "OpenTofu" in message


def test_too_old_terraform_is_one_clear_error(tf: TfRepo, tmp_path: Path) -> None:
    # Emulates Terraform 1.4: prints what its `version -json` prints, nothing else.
    old = script(tmp_path / "bin" / "terraform-1.4",
                 'echo \'{"terraform_version":"1.4.0","platform":"linux_amd64"}\'\n')
    with pytest.raises(ToolError) as err:
        engine().check([tf.stack(binary=str(old))], tf.env())
    assert "is version 1.4.0; gitops-push needs Terraform or OpenTofu 1.5 or newer" in (
        err.value.message)
    assert "https://developer.hashicorp.com/terraform/install" in err.value.message


def test_a_program_that_is_not_terraform_is_one_clear_error(tf: TfRepo) -> None:
    with pytest.raises(ToolError, match="did not report its version"):
        engine().check([tf.stack(binary=shutil.which("true") or "/bin/true")], tf.env())
