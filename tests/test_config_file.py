"""gitops-push.yaml: what is accepted, and how every mistake is reported (file:line, exit 2)."""

from __future__ import annotations

import pytest

from gitops_push import config
from gitops_push.errors import ConfigError, ExitCode

VALID = """\
version: 1
stacks:
  - name: network
    path: infra/network
    type: terraform
  - name: web
    path: ./k8s/web/
    type: kubernetes
    depends_on: [network]
    watch: ["shared/web/*.env"]
discover:
  terraform: ["infra/*"]
audit:
  mode: notes
"""


def parse_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config.parse(text, "gitops-push.yaml")
    assert info.value.exit_code == ExitCode.USAGE
    return info.value


def test_a_valid_config_gives_stacks_discovery_and_audit_settings() -> None:
    cfg = config.parse(VALID)
    names = [s.stack.name for s in cfg.stacks]
    assert names == ["network", "web"]
    web = cfg.stacks[1].stack
    assert web.path == "k8s/web"
    assert web.depends_on == ("network",)
    assert web.watch == ("shared/web/*.env",)
    assert cfg.discover == {"terraform": ("infra/*",)}
    assert cfg.audit.mode == "notes"


def test_a_config_without_discover_lists_its_stacks_only() -> None:
    cfg = config.parse("version: 1\n")
    assert cfg.discover == {}
    assert cfg.stacks == ()


def test_without_a_config_file_everything_is_discovered() -> None:
    assert set(config.Config(file=None).discover) == {"terraform", "kubernetes"}


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("version: 1\nstackz: []\n", 2, "unknown key 'stackz' (did you mean 'stacks'?)"),
        ("version: 2\n", 1, "unsupported version 2"),
        ("stacks: []\n", 1, "missing required key 'version'"),
        ("version: 1\nstacks: {}\n", 2, "must be a list"),
        ("version: 1\nstacks:\n  - name: a\n    path: x\n    type: terraform\n    oops: 1\n",
         6, "unknown key 'oops'"),
        ("version: 1\nstacks:\n  - name: A b\n    path: x\n    type: terraform\n",
         3, "does not match"),
        ("version: 1\nstacks:\n  - name: a\n    path: x\n    type: helmfile\n",
         5, "must be one of"),
        ("version: 1\nstacks:\n  - name: a\n    path: [x]\n    type: terraform\n",
         4, "must be a string, got a list"),
        ("version: 1\nstacks:\n  - name: a\n    path: x\n    type: terraform\n"
         "  - name: a\n    path: y\n    type: terraform\n", 6, "duplicate stack name 'a'"),
        ("version: 1\nstacks:\n  - name: a\n    path: x\n    type: terraform\n"
         "  - name: b\n    path: ./x/\n    type: terraform\n", 7, "already used by stack 'a'"),
        ("version: 1\nstacks:\n  - name: a\n    path: /etc\n    type: terraform\n",
         4, "must be relative"),
        ("version: 1\nstacks:\n  - name: a\n    path: ../x\n    type: terraform\n",
         4, "escapes the repository"),
        ("version: 1\nstacks:\n  - name: a\n    path: x\n    type: terraform\n"
         "    depends_on: [ghost]\n", 6, "depends on unknown stack 'ghost'"),
        ("version: 1\nversion: 1\n", 2, "duplicate key 'version'"),
        ("version: 1\nstacks:\n\t- name: a\n", 3, "tabs"),
        ("version: 1\naudit:\n  mode: s3\n", 3, "must be one of branch, notes, commit"),
        ("version: 1\nstacks:\n  - name: a\n    path: x\n    type: terraform\n"
         "    kubernetes: {}\n", 6, "settings for kubernetes on a terraform stack"),
        ("version: 1\nstacks:\n  - name: a\n    path: x\n    type: terraform\n"
         "    credentials:\n      apply:\n        env: {AWS_ROLE: 'not a name'}\n",
         8, "is not an environment variable name"),
    ],
)
def test_every_schema_error_names_the_file_and_line(text: str, line: int, fragment: str) -> None:
    err = parse_error(text)
    assert err.path == f"gitops-push.yaml:{line}"
    assert fragment in err.message


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [  # issue 12: the line to fix, not the line where the parser noticed
        ("version: 1\nstacks\n  - name: a\n", 2, "could not find expected ':'"),
        ("version: 1\nstacks:\n  - name: a\n    path\n    type: terraform\n", 4,
         "could not find expected ':'"),
        ('version: 1\nstacks:\n  - name: "a\n    path: x\n', 3, "end of stream"),
        ("version: 1\ndefault_branch: 'main\naudit: {}\n", 2, "end of stream"),
        ("version: 1\nstacks: [a, b\naudit: {}\n", 2, "expected ',' or ']'"),
        ("version: 1\nstacks:\n  - name: a\n   path: b\n", 4, "expected '-' indicator"),
        ("version: 1\nstacks: a: b\n", 2, "mapping values are not allowed"),
        ("version: 1\n- a\n", 2, "did not find expected key"),
    ],
)
def test_yaml_syntax_errors_name_the_line_to_fix(text: str, line: int, fragment: str) -> None:
    err = parse_error(text)
    assert err.path == f"gitops-push.yaml:{line}", err
    assert fragment in err.message


def test_a_manifest_syntax_error_names_the_line_to_fix() -> None:
    from gitops_push.config import yamlsafe
    from gitops_push.errors import ParseError

    with pytest.raises(ParseError) as info:
        yamlsafe.load_all("apiVersion: v1\nkind ConfigMap\nmetadata: {}\n", "k/cm.yaml")
    assert info.value.path == "k/cm.yaml:2"


def test_a_dependency_cycle_is_named() -> None:
    text = (
        "version: 1\nstacks:\n"
        "  - {name: a, path: a, type: terraform, depends_on: [b]}\n"
        "  - {name: b, path: b, type: terraform, depends_on: [c]}\n"
        "  - {name: c, path: c, type: terraform, depends_on: [a]}\n"
    )
    err = parse_error(text)
    assert "dependency cycle: a -> b -> c -> a" in err.message
    assert err.path == "gitops-push.yaml:5"  # the depends_on that closes the cycle


def test_a_self_dependency_is_a_cycle() -> None:
    err = parse_error("version: 1\nstacks:\n  - {name: a, path: a, type: terraform, "
                      "depends_on: [a]}\n")
    assert "a -> a" in err.message


def test_empty_and_multi_document_files_are_refused() -> None:
    assert "empty" in parse_error("").message
    assert "exactly one" in parse_error("version: 1\n---\nversion: 1\n").message


def test_alias_expansion_is_bounded() -> None:
    lol = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lol += f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
    text = "version: 1\ndefaults:\n  terraform:\n    vars:\n" + "".join(
        "      " + line + "\n" for line in lol.splitlines())
    err = parse_error(text)
    assert err.path is not None and err.path.startswith("gitops-push.yaml")


def test_very_deep_nesting_is_a_clear_error() -> None:
    text = "version: 1\naudit: " + "[" * 5000 + "]" * 5000 + "\n"
    err = parse_error(text)
    assert err.path is not None


def test_a_huge_stack_list_is_refused_cleanly() -> None:
    deps = ", ".join(f"s{i}" for i in range(20_000))
    err = parse_error(f"version: 1\nstacks:\n  - {{name: a, path: a, type: terraform, "
                      f"depends_on: [{deps}]}}\n")
    assert "limit" in err.message


def test_non_utf8_bytes_name_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        config.parse(b"version: 1\n# caf\xe9\n", "gitops-push.yaml")
    assert info.value.path == "gitops-push.yaml:2"
    assert "UTF-8" in info.value.message


def test_durations() -> None:
    from gitops_push.config.schema import parse_duration

    assert parse_duration("90s") == 90
    assert parse_duration("5m") == 300
    assert parse_duration("1h") == 3600
    assert parse_duration(12) == 12
    assert parse_duration("soon") is None
    assert parse_duration(-1) is None
    assert parse_duration(True) is None


def test_credentials_per_phase_map_tool_names_to_source_variables() -> None:
    cfg = config.parse(
        "version: 1\nstacks:\n  - name: a\n    path: a\n    type: terraform\n"
        "    credentials:\n      plan:\n        env: {AWS_ROLE_ARN: PLAN_ROLE}\n"
        "      apply:\n        env: [AWS_ROLE_ARN]\n"
    )
    creds = cfg.stacks[0].stack.credentials
    assert dict(creds["plan"].env) == {"AWS_ROLE_ARN": "PLAN_ROLE"}
    assert dict(creds["apply"].env) == {"AWS_ROLE_ARN": "AWS_ROLE_ARN"}
    assert creds["drift"] == creds["plan"]
