"""Kubernetes stacks through the real CLI, as a team runs them (issues 11 and 12).

The transcripts these tests replay were found on a real kube-apiserver; with
GITOPS_PUSH_TEST_KUBECONFIG they run there again, otherwise on the emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import GitRepo
from fixtures_kube import KubeCluster


def gp(repo: GitRepo, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gitops_push", "-C", str(repo.path), *args],
                          capture_output=True, text=True, env=env, timeout=600, check=False)


def data(res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads(res.stdout)
    return envelope


def stack_of(res: subprocess.CompletedProcess[str], name: str) -> dict[str, Any]:
    stack: dict[str, Any] = next(s for s in data(res)["data"]["stacks"] if s["name"] == name)
    return stack


def kube_env(kube: KubeCluster, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "GITOPS_PUSH"))}
    return {**env, "APP_KUBECONFIG": str(kube.kubeconfig), "KUBECACHEDIR": str(kube.cache_dir),
            "GITOPS_PUSH_SPOOL_DIR": str(tmp_path / "spool"), "NO_COLOR": "1"}


def k8s_config(kube: KubeCluster, stack: str = "app", extra: str = "") -> str:
    return ("version: 1\nstacks:\n"
            f"  - name: {stack}\n    path: {stack}\n    type: kubernetes\n"
            "    kubernetes:\n      kubeconfig_env: APP_KUBECONFIG\n"
            f"      namespace: {kube.namespace}\n      wait: false\n{extra}")


def cm(name: str, data: dict[str, str]) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                           "data": data})


# -- issue 12 item 7: no cluster configured ----------------------------------------------

def test_a_kubernetes_stack_with_no_cluster_fails_alone_naming_kubeconfig_env(
        make_repo: Callable[..., GitRepo], tmp_path: Path) -> None:
    config = ("version: 1\nstacks:\n"
              "  - {name: infra, path: infra, type: terraform}\n"
              "  - {name: kubernetes, path: kubernetes, type: kubernetes}\n"
              "  - {name: after, path: after, type: terraform, depends_on: [kubernetes]}\n")
    tf = 'resource "terraform_data" "r" {\n  input = "1"\n}\n'
    r = make_repo({".gitignore": "*.tfstate*\n.terraform*\n", "gitops-push.yaml": config,
                   "infra/main.tf": tf, "after/main.tf": tf,
                   "kubernetes/cm.yaml": cm("settings", {"a": "1"})})
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "GITOPS_PUSH"))}
    env.update(HOME=str(home), GITOPS_PUSH_SPOOL_DIR=str(tmp_path / "spool"))
    for command in ("plan", "apply"):
        res = gp(r, env, command, "--all", "--output", "json")
        assert res.returncode == 1, res.stderr
        assert stack_of(res, "infra")["result"] in ("planned", "applied")
        failed = stack_of(res, "kubernetes")
        assert failed["result"] == "failed"
        assert failed["error"].startswith(
            "stack 'kubernetes': no cluster configured: the stack sets neither "
            f"kubeconfig_env nor kubeconfig, and {home}/.kube/config does not exist; set "
            "kubeconfig_env: <VARIABLE>")
        assert stack_of(res, "after")["result"] == "skipped"
    assert '"type": "terraform_data"' in (r.path / "infra" / "terraform.tfstate").read_text()


# -- issue 11: git wins; projects; the record ---------------------------------------------

@pytest.mark.slow
def test_hand_edits_are_taken_back_by_drift_fix_and_both_runs_are_recorded(
        make_repo: Callable[..., GitRepo], kube: KubeCluster, tmp_path: Path) -> None:
    ns = kube.namespace
    r = make_repo({"gitops-push.yaml": k8s_config(kube, "config"),
                   "config/cm.yaml": cm("settings", {"greeting": "hello"}) + "---\n"
                   + cm("other", {"a": "1"})})
    env = kube_env(kube, tmp_path)
    assert gp(r, env, "apply", "--all").returncode == 0
    kube.kubectl("patch", "configmap", "settings", "--type=merge", "-p",
                 '{"data":{"greeting":"hacked"}}', check=True)
    kube.kubectl("label", "configmap", "settings", "owner=someone", check=True)
    kube.kubectl("delete", "configmap", "other", check=True)
    drift = gp(r, env, "drift", "--all", "--output", "json")
    assert drift.returncode == 4, drift.stderr
    items = {i["address"]: i["kind"] for i in stack_of(drift, "config")["drift"]["items"]}
    assert items == {f"ConfigMap/{ns}/settings": "changed", f"ConfigMap/{ns}/other": "deleted"}
    fixed = gp(r, env, "drift", "--all", "--fix", "--output", "json")
    assert fixed.returncode == 0, fixed.stderr
    taken = f"ConfigMap/{ns}/settings: takes .data.greeting back from kubectl-patch"
    assert taken in stack_of(fixed, "config")["message"]
    assert "still differ" not in stack_of(fixed, "config")["message"]
    live = kube.get("configmap", "settings")
    assert live["data"] == {"greeting": "hello"}
    assert live["metadata"]["labels"]["owner"] == "someone"  # git does not declare it
    assert kube.get("configmap", "other") is not None
    r.write({"config/cm.yaml": cm("settings", {"greeting": "hi"}) + "---\n"
             + cm("other", {"a": "1"})})
    r.commit("greet shorter", push=True)
    applied = gp(r, env, "apply", "--output", "json")
    assert applied.returncode == 0, applied.stderr
    assert kube.get("configmap", "settings")["data"] == {"greeting": "hi"}
    assert kube.get("configmap", "settings")["metadata"]["labels"]["owner"] == "someone"
    log = gp(r, env, "audit", "log", "--output", "json")
    assert log.returncode == 0, log.stderr
    text = log.stdout
    assert taken in text and '"command": "drift"' in text and '"command": "apply"' in text


@pytest.mark.slow
def test_two_repositories_with_a_stack_app_share_a_namespace(
        make_repo: Callable[..., GitRepo], kube: KubeCluster, tmp_path: Path) -> None:
    ignore = ("      ignore_differences:\n        - kind: Deployment\n"
              "          json_pointers: [/spec/replicas]\n")
    deploy = yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "team-a-web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [
                     {"name": "app", "image": "registry.k8s.io/pause:3.10"}]}}}})
    a = make_repo({"gitops-push.yaml": k8s_config(kube, extra=ignore),
                   "app/cm.yaml": cm("team-a-settings", {"a": "1"}) + "---\n" + deploy},
                  name="team-a")
    b = make_repo({"gitops-push.yaml": k8s_config(kube),
                   "app/cm.yaml": cm("team-b-settings", {"b": "1"})}, name="team-b")
    env = kube_env(kube, tmp_path)
    for repo in (a, b):
        res = gp(repo, env, "apply", "--all", "--output", "json")
        assert res.returncode == 0, res.stderr
        assert "still differ" not in stack_of(res, "app")["message"]
        assert stack_of(res, "app")["counts"]["destroy"] == 0
    kube.kubectl("scale", "deployment", "team-a-web", "--replicas=3", check=True)
    for repo in (a, b):
        drift = gp(repo, env, "drift", "--all", "--output", "json")
        assert drift.returncode == 0, drift.stdout + drift.stderr
        assert gp(repo, env, "drift", "--all", "--fix").returncode == 0
        again = gp(repo, env, "apply", "--all", "--output", "json")
        assert again.returncode == 0, again.stderr
        assert stack_of(again, "app")["message"] == "no changes", stack_of(again, "app")
    assert kube.get("configmap", "team-a-settings") is not None
    assert kube.get("configmap", "team-b-settings") is not None
    assert kube.get("deployment", "team-a-web")["spec"]["replicas"] == 3
    assert "(sensitive)" not in json.dumps(
        stack_of(gp(b, env, "plan", "--all", "--output", "json"), "app"))
