"""The HCL scanner finds module sources and file() paths, and never hangs on bad input."""

from __future__ import annotations

import pytest

from gitops_push.engines.terraform import hcl
from gitops_push.errors import ParseError

SAMPLE = '''
# module "commented" { source = "./no" }
// module "also" { source = "./no" }
/* module "block" {
  source = "./no"
} */
module "net" {
  source  = "../modules/net"
  version = "1.0"
  tags = { source = "./not-a-module-source" }
  doc = <<-EOT
    source = "./inside-heredoc"
  EOT
  name = "${var.env}-${lookup(local.m, "k", "}")}"
}
module "registry" { source = "hashicorp/consul/aws" }
locals {
  a = file("${path.module}/../shared/policy.json")
  b = templatefile("${path.root}/tpl/x.tpl", {})
  c = file("plain.txt")
  d = file("${path.module}/${var.env}.json")
  e = filebase64("${path.cwd}/bin.dat")
}
'''


def test_module_sources_outside_comments_heredocs_and_nested_blocks() -> None:
    refs = hcl.scan(SAMPLE, "main.tf")
    assert [(m.name, m.source, m.line) for m in refs.modules] == [
        ("net", "../modules/net", 8), ("registry", "hashicorp/consul/aws", 16)]


def test_literal_file_paths_with_their_anchor() -> None:
    refs = hcl.scan(SAMPLE, "main.tf")
    assert [(f.function, f.path, f.anchor) for f in refs.files] == [
        ("file", "../shared/policy.json", "module"),
        ("templatefile", "tpl/x.tpl", "root"),
        ("file", "plain.txt", ""),
        ("filebase64", "bin.dat", "cwd"),
    ]


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ('x = "abc', 1, "unterminated string"),
    ("a = 1\nx = <<EOF\nnever ends\n", 2, "unterminated heredoc"),
    ("a = 1\n/* open", 2, "unterminated /* comment"),
    ('x = "${abc', 1, "unterminated"),
    ("a {\n b = 1\n", None, "unclosed block"),
    ("a }\n", 1, "unbalanced"),
])
def test_malformed_input_is_a_parse_error_naming_file_and_line(
        text: str, line: int | None, fragment: str) -> None:
    with pytest.raises(ParseError) as info:
        hcl.scan(text + "\n# module\n", "bad.tf")
    assert info.value.path == (f"bad.tf:{line}" if line else "bad.tf")
    assert fragment in info.value.message


def test_files_that_cannot_reference_a_path_are_not_tokenized() -> None:
    # no `module` and no file() call: nothing to find, so even broken text is skipped
    # (terraform validate reports it in lint)
    assert hcl.scan('x = "unterminated', "plain.tf") == hcl.References((), ())


def test_huge_files_are_scanned_in_linear_time_or_refused() -> None:
    big = 'resource "terraform_data" "x" {\n  input = "y"\n}\n' * 50_000
    assert hcl.scan(big, "big.tf").modules == ()
    with pytest.raises(ParseError):
        hcl.scan("#" * (hcl.MAX_BYTES + 1), "huge.tf")


def test_local_sources() -> None:
    assert hcl.is_local_source("./x") and hcl.is_local_source("../x")
    assert not hcl.is_local_source("git::https://x") and not hcl.is_local_source("x/y/z")
