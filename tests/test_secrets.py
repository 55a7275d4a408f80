"""No secret value ever appears in anything gitops-push writes.

One repository holds a Terraform stack with a sensitive variable and output fed from a
``TF_VAR_`` secret in the environment, and a Kubernetes stack with a Secret manifest,
deployed with a kubeconfig that carries a bearer token and a client key. Every command
runs; then every byte gitops-push wrote — stdout, stderr, JSON, Markdown, plan metadata,
audit records, the spool — is searched for each secret string.

Excluded, because they are not gitops-push's output: Terraform's own binary plan file and
data directory (which legitimately hold the values), the Terraform state in the stack
directory, and the kubeconfig itself.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import GitRepo
from fixtures_kube import KubeCluster

from gitops_push.audit.record import RUNNER_REDACTION

TF_SECRET = "tf-Sup3r-Secret-Passw0rd"
K8S_SECRET = "k8s-Very-Secret-Api-Key"
SECRET_TF = """variable "password" {
  type      = string
  sensitive = true
}

resource "terraform_data" "db" {
  input = var.password
}

output "password" {
  value     = var.password
  sensitive = true
}
"""


def client_key_pair() -> tuple[str, str]:
    """A throwaway client certificate and key (PEM), for the kubeconfig's user."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deployer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def service_account_token(kube: KubeCluster) -> str:
    """A credential the cluster accepts: on a real cluster a ServiceAccount token
    (``kubectl create token``) with admin rights in the test namespace; on the emulator
    its bearer token."""
    if kube.emulated:
        token = yaml.safe_load(kube.kubeconfig.read_text())["users"][0]["user"]["token"]
        return str(token)
    ns = kube.namespace
    kube.kubectl("create", "serviceaccount", "deployer", "-n", ns, check=True)
    kube.kubectl("create", "rolebinding", "deployer-admin", "--clusterrole=admin",
                 f"--serviceaccount={ns}:deployer", "-n", ns, check=True)
    return kube.kubectl("create", "token", "deployer", "-n", ns, "--duration=1h",
                        check=True).stdout.strip()


def secret_kubeconfig(kube: KubeCluster, dest: Path) -> tuple[str, list[str]]:
    """The fixture's kubeconfig with credentials to grep for: (path, secret strings).

    On the emulator, a client certificate and key added next to its token; on a real
    cluster, whose CA never signed such a certificate, a ServiceAccount token it accepts.
    """
    cfg = yaml.safe_load(kube.kubeconfig.read_text())
    if not kube.emulated:
        cfg["users"][0]["user"] = {"token": service_account_token(kube)}
        dest.write_text(yaml.safe_dump(cfg))
        dest.chmod(0o600)
        return str(dest), [cfg["users"][0]["user"]["token"]]
    cert, key = client_key_pair()
    user = cfg["users"][0]["user"]
    user["client-certificate-data"] = base64.b64encode(cert.encode()).decode()
    user["client-key-data"] = base64.b64encode(key.encode()).decode()
    dest.write_text(yaml.safe_dump(cfg))
    dest.chmod(0o600)
    key_body = "".join(key.strip().splitlines()[1:-1])
    secrets = [user["client-key-data"], key_body[:40]]
    if user.get("token"):
        secrets.append(user["token"])
    return str(dest), secrets


@pytest.mark.slow
def test_no_secret_reaches_any_output_file_or_record(
        make_repo: Callable[..., GitRepo], kube: KubeCluster, tmp_path: Path) -> None:
    manifest = (f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\n  namespace: "
                f"{kube.namespace}\ntype: Opaque\nstringData:\n  key: {K8S_SECRET}\n---\n"
                f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: api-b64\n  namespace: "
                f"{kube.namespace}\ndata:\n  key: "
                f"{base64.b64encode(K8S_SECRET.encode()).decode()}\n")
    config = ("version: 1\nstacks:\n"
              "  - name: db\n    path: db\n    type: terraform\n"
              "    terraform:\n      env: [TF_VAR_password]\n"
              "  - name: app\n    path: app\n    type: kubernetes\n    depends_on: [db]\n"
              f"    kubernetes:\n      kubeconfig_env: APP_KUBECONFIG\n"
              f"      namespace: {kube.namespace}\n")
    r = make_repo({".gitignore": "*.tfstate*\n.terraform*\n", "gitops-push.yaml": config,
                   "db/main.tf": SECRET_TF, "app/secret.yaml": manifest})
    kubeconfig, kube_secrets = secret_kubeconfig(kube, tmp_path / "deployer.kubeconfig")
    plans, spool = tmp_path / "plans", tmp_path / "spool"
    summaries = tmp_path / "md"
    summaries.mkdir()
    env = {**os.environ, "TF_VAR_password": TF_SECRET, "APP_KUBECONFIG": kubeconfig,
           "GITOPS_PUSH_SPOOL_DIR": str(spool),
           "GITHUB_STEP_SUMMARY": str(summaries / "step-summary.md")}
    outputs: list[str] = []

    def gp(*args: str, ok: tuple[int, ...] = (0,)) -> None:
        # -vv logs every command run: the most verbose output must be clean too
        res = subprocess.run([sys.executable, "-m", "gitops_push", "-vv", "-C", str(r.path),
                              *args],
                             capture_output=True, text=True, env=env, timeout=300)
        outputs.extend([res.stdout, res.stderr])
        assert res.returncode in ok, res.stderr[-3000:]

    gp("lint", "--all")
    gp("plan", "--all", "--plan-dir", str(plans), "--output", "json",
       "--summary-md", str(summaries / "plan.md"))
    gp("apply", "--plan-dir", str(plans), "--summary-md", str(summaries / "apply.md"))
    gp("apply", "--output", "json")
    gp("drift", "--output", "json", "--summary-md", str(summaries / "drift.md"), ok=(0, 4))
    gp("audit", "log", "--output", "json")
    gp("status", "--output", "json")

    r.git("fetch", "-q", "origin", "+refs/heads/gitops-push/audit:refs/remotes/origin/audit")
    records = r.git("log", "-p", "--format=%B", "origin/audit")
    written: list[tuple[str, bytes]] = [(f"output {i}", o.encode())
                                        for i, o in enumerate(outputs)]
    written.append(("audit branch history", records.encode()))
    for root in (plans, summaries, spool):
        for f in root.rglob("*") if root.exists() else []:
            if f.is_file() and ".terraform" not in f.parts and f.name != "terraform.tfplan":
                written.append((str(f.relative_to(tmp_path)), f.read_bytes()))
    assert len(written) > 10 and any("audit" in w for w, _ in written)

    secrets = [TF_SECRET, K8S_SECRET, base64.b64encode(K8S_SECRET.encode()).decode(),
               *kube_secrets]
    leaks = [(where, s[:8] + "…") for where, data in written for s in secrets
             if s.encode() in data]
    assert not leaks, f"secret values found in gitops-push output: {leaks}"
    # positive controls: the secrets really flowed through the tools, so their absence
    # from gitops-push's output means something
    assert TF_SECRET in (r.path / "db" / "terraform.tfstate").read_text()
    assert all(k.encode() in Path(kubeconfig).read_bytes() for k in kube_secrets[:1])
    assert kube.get("Secret", "api", kube.namespace) is not None
    assert "db" in records and "applied" in records


QUOTER_TF = """variable "token" {
  type = string
}

resource "terraform_data" "x" {
  input = file(var.token)
}
"""


@pytest.mark.slow
def test_a_failure_quoting_a_real_credential_is_recorded_redacted(
        make_repo: Callable[..., GitRepo], kube: KubeCluster, tmp_path: Path) -> None:
    """Terraform's error quotes the credential (``no file exists at "<token>"``): the run's
    record is stored anyway, says it was redacted, and no byte written holds the token."""
    token = service_account_token(kube)
    cfg = yaml.safe_load(kube.kubeconfig.read_text())
    cfg["users"][0]["user"] = {"token": token}
    kubeconfig = tmp_path / "deployer.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(cfg))
    config = ("version: 1\nstacks:\n"
              "  - name: quoter\n    path: quoter\n    type: terraform\n"
              "    credentials:\n      plan:\n        env: {TF_VAR_token: DEPLOY_TOKEN}\n"
              "      apply:\n        env: {TF_VAR_token: DEPLOY_TOKEN}\n"
              "  - name: app\n    path: app\n    type: kubernetes\n"
              "    kubernetes:\n      kubeconfig_env: APP_KUBECONFIG\n"
              f"      namespace: {kube.namespace}\n      wait: false\n")
    r = make_repo({".gitignore": "*.tfstate*\n.terraform*\n", "gitops-push.yaml": config,
                   "quoter/main.tf": QUOTER_TF,
                   "app/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
                                  "data:\n  a: '1'\n"})
    spool = tmp_path / "spool"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KUBE")},
           "DEPLOY_TOKEN": token, "APP_KUBECONFIG": str(kubeconfig),
           "KUBECACHEDIR": str(kube.cache_dir), "GITOPS_PUSH_SPOOL_DIR": str(spool)}
    res = subprocess.run([sys.executable, "-m", "gitops_push", "-vv", "-C", str(r.path),
                          "apply", "--all", "--output", "json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 1, res.stderr[-2000:]
    stacks = {s["name"]: s for s in json.loads(res.stdout)["data"]["stacks"]}
    assert stacks["app"]["result"] == "applied"  # the token is a credential the cluster takes
    # terraform quotes the value: `no file exists at "<it>"` or, for a long token,
    # `open <it>: file name too long`; either way it arrives as the runner's marker
    error = stacks["quoter"]["error"]
    assert 'Invalid value for "path" parameter' in error and "(sensitive)" in error
    r.git("fetch", "-q", "origin", "+refs/heads/gitops-push/audit:refs/remotes/origin/audit")
    files = r.git("ls-tree", "-r", "--name-only", "origin/audit").split()
    records = [json.loads(line) for f in files
               for line in r.git("show", f"origin/audit:{f}").splitlines() if line.strip()]
    finished = [rec for rec in records if rec.get("phase") == "finished"]
    assert len(finished) == 1
    index, quoter = next((i, s) for i, s in enumerate(finished[0]["stacks"])
                         if s["name"] == "quoter")
    assert "(sensitive)" in quoter["error"]
    assert {"field": f"stacks[{index}].error",
            "secret": RUNNER_REDACTION} in finished[0]["redactions"]
    written = [res.stdout.encode(), res.stderr.encode(),
               r.git("log", "-p", "--all", "--format=%B").encode()]
    written += [f.read_bytes() for f in spool.rglob("*") if f.is_file()] if spool.exists() else []
    assert not any(token.encode() in w for w in written)
