"""engines/kubernetes/kustomize.py: the local paths a kustomization references (what
change detection follows), never remote ones."""

from __future__ import annotations

import pytest

from gitops_push.engines.kubernetes.kustomize import KustomizeRef, is_remote, references
from gitops_push.errors import ParseError


def test_every_field_that_names_a_local_path_is_followed() -> None:
    text = b"""
resources: [../../base, deploy.yaml, https://example.com/x.yaml]
components: [../components/tls]
patches:
  - path: patch.yaml
  - patch: inline
configMapGenerator:
  - name: web
    files: [app.env, key=conf/app.conf]
    envs: [more.env]
"""
    refs = references(text, "k/kustomization.yaml")
    assert KustomizeRef("resources", "../../base") in refs
    assert KustomizeRef("components", "../components/tls") in refs
    assert KustomizeRef("patches", "patch.yaml") in refs
    assert {r.path for r in refs if r.field == "configMapGenerator"} >= {"app.env", "more.env"}
    assert not any("example.com" in r.path for r in refs)


@pytest.mark.parametrize("ref", ["https://github.com/acme/x//base?ref=v1",
                                 "github.com/acme/x/base", "git@github.com:acme/x.git",
                                 "ssh://git@host/x"])
def test_remote_references_are_recognised(ref: str) -> None:
    assert is_remote(ref)


def test_local_references_are_not_remote() -> None:
    assert not is_remote("../base") and not is_remote("deploy.yaml")


def test_a_kustomization_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ParseError, match="must be a mapping"):
        references(b"- a\n", "k/kustomization.yaml")
