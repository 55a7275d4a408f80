"""kubectl, as the kubernetes engine uses it: one place for flags, errors and redaction.

Every call goes through ``proc.run``. Failures are turned into one message naming the
stack, the object (when one is to blame) and the cause: unreachable server, rejected
credentials, missing context, RBAC, unknown kind, invalid object, field-manager conflict.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shlex
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gitops_push import proc
from gitops_push.config.yamlsafe import load_all
from gitops_push.engines.base import EngineContext
from gitops_push.engines.kubernetes.objects import (
    INVENTORY_LABEL,
    PROJECT_LABEL,
    ObjRef,
    dump_yaml,
    masked_pair,
    ref_of_body,
)
from gitops_push.errors import ParseError, ToolError, UserError

KUBECTL = "kubectl"
INSTALL_HINT = ("install kubectl 1.26 or newer (it includes kustomize): "
                "https://kubernetes.io/docs/tasks/tools/")
REQUEST_TIMEOUT = "60s"
CALL_TIMEOUT = 1800.0  # one kubectl call; the CI job's own timeout is the real bound
_KLOG = re.compile(r"^[EWIF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+\] ")
_SECRET_USER_KEYS = ("token", "password", "client-key-data")
_STRUCTURED = re.compile(r'^"[^"]*"\s+err="((?:[^"\\]|\\.)*)"')


# -- credentials ---------------------------------------------------------------------

@dataclass(frozen=True)
class Access:
    """How to reach the cluster: kubeconfig (explicit or kubectl's default) and context."""

    kubeconfig: str | None  # passed as --kubeconfig when the stack names one
    config_paths: tuple[Path, ...]  # files kubectl will read (for redaction and the client)
    context: str | None
    secrets: tuple[str, ...]

    def client_config_file(self) -> str | None:
        """What the kubernetes client should load (KUBECONFIG-style list)."""
        existing = [str(p) for p in self.config_paths if p.is_file()]
        return os.pathsep.join(existing) if existing else None


def resolve_access(*, kubeconfig: str | None, kubeconfig_env: str | None,
                   context: str | None, ctx: EngineContext, stack: str) -> Access:
    """Find the kubeconfig the way kubectl would, reading tokens and keys to redact."""
    explicit: str | None = None
    if kubeconfig is not None:
        path = Path(kubeconfig)
        explicit = str(path if path.is_absolute() else ctx.repo_root / path)
    elif kubeconfig_env is not None:
        value = ctx.env.get(kubeconfig_env)
        if not value:
            raise UserError(f"stack {stack!r}: kubeconfig_env names {kubeconfig_env}, which is "
                            f"not set for the {ctx.phase} phase")
        explicit = value
    if explicit is not None:
        if not Path(explicit).is_file():
            raise UserError(f"stack {stack!r}: kubeconfig file {explicit} does not exist")
        paths: tuple[Path, ...] = (Path(explicit),)
    elif ctx.env.get("KUBECONFIG"):
        paths = tuple(Path(p) for p in ctx.env["KUBECONFIG"].split(os.pathsep) if p)
    elif ctx.env.get("HOME"):
        paths = (Path(ctx.env["HOME"]) / ".kube" / "config",)
    else:
        paths = ()
    if explicit is None and not any(p.is_file() for p in paths) and \
            not ctx.env.get("KUBERNETES_SERVICE_HOST"):
        looked = (f"KUBECONFIG ({ctx.env['KUBECONFIG']})" if ctx.env.get("KUBECONFIG")
                  else f"{paths[0]}" if paths else "$HOME/.kube/config (HOME is not set)")
        raise UserError(f"stack {stack!r}: no cluster configured: the stack sets neither "
                        f"kubeconfig_env nor kubeconfig, and {looked} does not exist; set "
                        "kubeconfig_env: <VARIABLE> in the stack's kubernetes: settings and "
                        "put the kubeconfig's path in that variable for the job")
    secrets = [*ctx.secrets]
    for p in paths:
        secrets.extend(kubeconfig_secrets(p))
    return Access(explicit, paths, context, tuple(dict.fromkeys(s for s in secrets if s)))


def kubeconfig_secrets(path: Path) -> list[str]:
    """Bearer tokens, passwords and client keys in a kubeconfig: never shown anywhere."""
    return list(kubeconfig_secret_labels(path))


def kubeconfig_secret_labels(path: Path) -> dict[str, str]:
    """The credentials in a kubeconfig, each with what it is (never the value):
    tokens, passwords, client keys and certificates, auth-provider tokens and secrets."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    out: dict[str, str] = {}
    users = data.get("users") if isinstance(data, dict) else None
    for entry in users if isinstance(users, list) else []:
        user = entry.get("user") if isinstance(entry, dict) else None
        if not isinstance(user, dict):
            continue
        who = f"kubeconfig user {entry.get('name', '?')}"
        for k in (*_SECRET_USER_KEYS, "client-certificate-data"):
            if user.get(k):
                out[str(user[k])] = f"{k} of {who}"
        if user.get("client-key-data"):
            out.update(dict.fromkeys(_pem_parts(str(user["client-key-data"]), encoded=True),
                                     f"client-key-data of {who}"))
        for key in ("client-key", "tokenFile"):
            if isinstance(user.get(key), str):
                out.update(dict.fromkeys(_file_secret(path.parent / user[key]),
                                         f"{key} file of {who}"))
        provider = user.get("auth-provider")
        config = provider.get("config") if isinstance(provider, dict) else None
        if isinstance(config, dict):
            out.update({str(v): f"auth-provider {k} of {who}" for k, v in config.items()
                        if v and re.search(r"token|secret|key", str(k), re.I)})
    return {v: label for v, label in out.items() if v}


def kubeconfig_paths(kubeconfig: str | None, kubeconfig_env: str | None,
                     env: Mapping[str, str], repo_root: Path) -> tuple[Path, ...]:
    """The kubeconfig files kubectl would read, as ``resolve_access`` finds them."""
    if kubeconfig is not None:
        path = Path(kubeconfig)
        return (path if path.is_absolute() else repo_root / path,)
    if kubeconfig_env is not None:
        return (Path(env[kubeconfig_env]),) if env.get(kubeconfig_env) else ()
    if env.get("KUBECONFIG"):
        return tuple(Path(p) for p in env["KUBECONFIG"].split(os.pathsep) if p)
    if env.get("HOME"):
        return (Path(env["HOME"]) / ".kube" / "config",)
    return ()


def _file_secret(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return []
    return [text.strip(), *_pem_parts(text, encoded=False)]


def _pem_parts(value: str, *, encoded: bool) -> list[str]:
    """A PEM key and each of its base64 lines (output may wrap it differently)."""
    text = value
    if encoded:
        try:
            text = base64.b64decode(value).decode()
        except (binascii.Error, UnicodeDecodeError):
            return []
    lines = [ln.strip() for ln in text.splitlines()]
    return [text.strip(), *(ln for ln in lines if len(ln) >= 16 and not ln.startswith("-----"))]


# -- errors --------------------------------------------------------------------------

def error_lines(text: str) -> list[str]:
    """kubectl's error lines without klog prefixes, duplicates or its apply-conflict help.

    Newer kubectl logs structured lines (``"Unhandled Error" err="... \\"https://...\\"
    ..."``): the quoted ``err`` is unwrapped, so no stray quote ends a message."""
    out: list[str] = []
    for raw in text.splitlines():
        line = _KLOG.sub("", raw).strip()
        structured = _STRUCTURED.match(line)
        if structured:
            line = structured.group(1).replace('\\"', '"').strip()
        if line.startswith("Please review the fields above"):
            break
        if line and line not in out:
            out.append(line)
    return out


_CONFLICT = re.compile(
    r'conflicts? with "(?P<manager>[^"]+)"(?: using (?P<api>\S+?))?:\s*(?P<field>\S.*)?$')
_MANAGER_ONLY = re.compile(r'^"(?P<manager>[^"]+)"(?: using \S+?)?:$')


def conflicts(text: str) -> list[tuple[str, str]]:
    """(manager, field) pairs from a server-side apply conflict message."""
    out: list[tuple[str, str]] = []
    manager: str | None = None
    for line in error_lines(text):
        m = _CONFLICT.search(line)
        if m:
            manager = m.group("manager")
            if m.group("field"):
                out.append((manager, m.group("field").strip()))
            continue
        m2 = _MANAGER_ONLY.match(line)
        if m2:
            manager = m2.group("manager")
        elif line.startswith("- ") and manager is not None:
            out.append((manager, line[2:].strip()))
    return out


# Causes about the cluster or credentials rather than one object (see explain()).
GLOBAL_CAUSES = ("cannot reach", "the API server rejected", "the kubeconfig", "no kubeconfig",
                 "no cluster configured")

# (what identifies the failure, what to quote from it, the message) - first match wins.
_CAUSES: tuple[tuple[str, str, str], ...] = (
    (r"context was not found|context \S+ does not exist|cannot locate context",
     r'(?:context "|specified context: |cannot locate context )([^"\s]+)',
     "the kubeconfig has no such context ({detail})"),
    (r"no configuration has been provided|stat .*: no such file or directory", "",
     "no kubeconfig found: set kubeconfig_env (or kubeconfig) for the stack, or pass "
     "KUBECONFIG"),
    (r"current-context must exist|current-context is not set", "",
     "no cluster configured: the kubeconfig has no current context; set kubeconfig_env "
     "(a variable holding the kubeconfig path) or kubeconfig, and context if needed, in "
     "the stack's kubernetes: settings"),
    (r"was refused|Unable to connect to the server|dial tcp|no such host|i/o timeout|"
     r"connection reset|TLS handshake timeout|context deadline exceeded",
     r"((?:dial tcp|connect:|lookup|net/http|read tcp|was refused)[^\n]*)",
     "cannot reach the Kubernetes API server{server}: {detail}"),
    (r"must be logged in|\(Unauthorized\)|Unauthorized", "",
     "the API server rejected the credentials (401 Unauthorized): the token or client "
     "certificate is missing, invalid or expired"),
    (r"\(Forbidden\)|is forbidden",
     r"(?:\(Forbidden\): (?:[^\n]*? is forbidden: )?|is forbidden: )([^\n]+)",
     "forbidden (403, RBAC): {detail}"),
    (r"no matches for kind|resource mapping not found|the server doesn't have a resource",
     r"(no matches for kind [^\n]+?|the server doesn't have a resource type [^\n]+?)"
     r"(?:$|\n| - | ensure)",
     "unknown kind: {detail} - the cluster has no such resource (is its "
     "CustomResourceDefinition installed?)"),
    (r'namespaces "[^"]+" not found', r'namespaces ("[^"]+") not found',
     "namespace {detail} does not exist (add a Namespace object to the stack or create it "
     "first)"),
    (r" is invalid: |\(Invalid\)", r" is invalid: ([^\n]+)", "invalid object: {detail}"),
    (r"\(BadRequest\)|strict decoding error|unknown field",
     r"(?:\(BadRequest\):|error:) ([^\n]+)", "rejected by the API server: {detail}"),
)


def explain(text: str) -> str:
    """The cause of a kubectl failure in one sentence, from its output."""
    lines = error_lines(text)
    joined = "\n".join(lines)
    pairs = conflicts(text)
    if "Apply failed with" in joined and pairs:
        owned = "; ".join(f'{field} (owned by field manager "{mgr}")' for mgr, field in pairs)
        return (f"conflict with another field manager: {owned}. The stack's setting "
                "conflicts: fail stops here; run with --force-conflicts (or set conflicts: "
                "force) to take these fields back, or list them in ignore_differences if that "
                "manager should keep them")
    for pattern, grab, template in _CAUSES:
        if re.search(pattern, joined):
            detail = _grab(joined, grab) if grab else ""
            return template.format(detail=detail, server=_server(joined))
    first = next((ln for ln in lines if re.match(r"(?i)^(error|Error from server)", ln)),
                 lines[-1] if lines else "kubectl failed without output")
    return re.sub(r"^(?:error: |Error from server(?: \(\w+\))?: )", "", first)


def _grab(text: str, pattern: str) -> str:
    m = re.search(pattern, text, re.M)
    if m is None:
        return text.splitlines()[-1].strip() if text else ""
    return next((g for g in m.groups() if g), m.group(0)).strip()


def _server(text: str) -> str:
    m = re.search(r"to the server (\S+)", text) or re.search(r'Get "(https?://[^/"]+)', text)
    return f" at {m.group(1)}" if m else ""


# -- the kubectl wrapper -------------------------------------------------------------

@dataclass(frozen=True)
class ApiResource:
    name: str  # plural, e.g. deployments
    group: str
    version: str  # the server's preferred version
    namespaced: bool
    kind: str

    @property
    def arg(self) -> str:
        """``deployments.v1.apps``: unambiguous for kubectl get/delete."""
        return f"{self.name}.{self.version}.{self.group}" if self.group else self.name


@dataclass(frozen=True)
class Inventory:
    """What a stack applied, kept in the cluster (ConfigMap) so any runner can prune."""

    refs: frozenset[ObjRef]
    resource_version: str | None  # None: the stack has no inventory yet
    project: str | None = None  # None: written before projects existed
    name: str = ""


@dataclass(frozen=True)
class Labelled:
    """A live object found by the stack label."""

    child: bool  # a controller's child (owner reference)
    project: str | None  # its project label (None: labelled before projects existed)


class Kubectl:
    """kubectl bound to one stack's kubeconfig, context, field manager and redaction."""

    def __init__(self, access: Access, ctx: EngineContext, stack: str, *,
                 field_manager: str, server_side: bool) -> None:
        self.access = access
        self.ctx = ctx
        self.stack = stack
        self.field_manager = field_manager
        self.server_side = server_side
        self.secrets = list(access.secrets)

    def add_secrets(self, values: Iterable[str]) -> None:
        """Values to redact from now on (the Secrets being applied)."""
        self.secrets.extend(v for v in values if v not in self.secrets)

    # -- running --------------------------------------------------------------------
    def command(self, *args: str) -> list[str]:
        cmd = [KUBECTL]
        if self.access.kubeconfig:
            cmd.append(f"--kubeconfig={self.access.kubeconfig}")
        if self.access.context:
            cmd.append(f"--context={self.access.context}")
        return [*cmd, *args]

    def run(self, *args: str, input: bytes | None = None, stream: bool = False,
            env: Mapping[str, str] | None = None, what: ObjRef | str | None = None,
            ok: Iterable[int] = (0,), raw: bool = False) -> proc.Result:
        """``raw`` keeps stdout unredacted in ``stdout_bytes``, for reading object identities
        (a name is never a secret; masking part of one would name another object)."""
        result = proc.run(
            self.command(*args), env=env or self.ctx.env,
            input=input, check=False, timeout=CALL_TIMEOUT, cancel=self.ctx.cancel,
            on_line=self.ctx.on_line if stream else None, secrets=self.secrets, keep_bytes=raw)
        if result.returncode not in tuple(ok):
            raise self.failure(result, what)
        return result

    def failure(self, result: proc.Result, what: ObjRef | str | None = None) -> ToolError:
        subject = what.address if isinstance(what, ObjRef) else what
        prefix = f"stack {self.stack!r}: " + (f"{subject}: " if subject else "")
        return ToolError(prefix + explain(result.stdout + "\n" + result.stderr),
                         command=result.command, returncode=result.returncode,
                         output_tail="\n".join(error_lines(result.stderr)[-15:]))

    # -- discovery ------------------------------------------------------------------
    def version(self) -> str:
        result = self.run("version", "--client", "-o", "json")
        try:
            data = json.loads(result.stdout)
            return str(data["clientVersion"]["gitVersion"])
        except (ValueError, KeyError, TypeError):
            return ""

    def context_namespace(self) -> str | None:
        """The namespace of the kubeconfig context (kubectl's default for unnamespaced objects)."""
        result = self.run("config", "view", "--minify", "-o", "jsonpath={..namespace}")
        return result.stdout.strip() or None

    def api_resources(self) -> dict[tuple[str, str], ApiResource]:
        """(group, kind) -> resource, from discovery (a partly unavailable API is tolerated)."""
        result = self.run(f"--request-timeout={REQUEST_TIMEOUT}", "api-resources",
                          "--no-headers", ok=(0, 1))
        rows = parse_api_resources(result.stdout)
        if result.returncode != 0 and (
                not rows or "unable to retrieve the complete list" not in result.stderr):
            raise self.failure(result)
        return rows

    # -- diff -----------------------------------------------------------------------
    def diff(self, bodies: Sequence[dict[str, Any]], *, force: bool,
             what: ObjRef | None = None, stream: bool = True
             ) -> dict[ObjRef, tuple[dict[str, Any] | None, dict[str, Any]]]:
        """``kubectl diff`` (server-side dry-run apply against live): ref -> (live, merged).

        kubectl writes the LIVE and MERGED objects (Secret values masked) to two
        directories and runs $KUBECTL_EXTERNAL_DIFF on them; ours copies them out so the
        per-object, per-field summary is computed from structure, not from text diffs.
        """
        if not bodies:
            return {}
        # managed fields (dropped again before comparing) say which fields apply takes over
        args = ["diff", f"--field-manager={self.field_manager}", "--show-managed-fields",
                "-f", "-"]
        if self.server_side:
            args.insert(1, "--server-side")
            if force:
                args.insert(2, "--force-conflicts")
        with tempfile.TemporaryDirectory(prefix="gitops-push-diff-") as tmp:
            script, out = _capture_script(Path(tmp))
            env = {**self.ctx.env, "KUBECTL_EXTERNAL_DIFF": str(script)}
            self.run(f"--request-timeout={REQUEST_TIMEOUT}", *args, env=env, what=what,
                     input=dump_yaml(bodies).encode(), stream=stream)
            return read_diff_dirs(out / "live", out / "merged")

    # -- apply ----------------------------------------------------------------------
    def apply(self, bodies: Sequence[dict[str, Any]], *, force: bool, dry_run: bool,
              what: ObjRef | None = None, stream: bool = True) -> proc.Result:
        args = ["apply", f"--field-manager={self.field_manager}", "-f", "-"]
        if self.server_side:
            args.insert(1, "--server-side")
            if force:
                args.append("--force-conflicts")
        if dry_run:
            args.append("--dry-run=server")
        return self.run(f"--request-timeout={REQUEST_TIMEOUT}", *args, what=what,
                        input=dump_yaml(bodies).encode(), stream=stream and not dry_run)

    def first_failing(self, items: Sequence[tuple[ObjRef, dict[str, Any]]], *,
                      force: bool) -> ToolError | None:
        """Dry-run one object at a time to name the one a batch failed on."""
        for ref, body in items:
            try:
                self.apply([body], force=force, dry_run=True, what=ref)
            except ToolError as exc:
                return exc
        return None

    # -- reading and deleting live objects -----------------------------------------
    def labelled(self, resources: Iterable[ApiResource], namespaces: Iterable[str],
                 label: str, value: str) -> dict[ObjRef, Labelled]:
        """Live objects of these types carrying ``label=value``, in these namespaces, with
        their project label and whether an owner reference makes them a controller's child
        (a controller copying labels must not make its children look like strays)."""
        project = PROJECT_LABEL.replace(".", "\\.")
        template = ('{range .items[*]}{.apiVersion}{"\\t"}{.kind}{"\\t"}'
                    '{.metadata.namespace}{"\\t"}{.metadata.name}{"\\t"}'
                    '{.metadata.ownerReferences[0].kind}{"\\t"}'
                    f'{{.metadata.labels.{project}}}{{"\\n"}}{{end}}')
        resources = sorted(set(resources), key=lambda r: r.arg)
        found: dict[ObjRef, Labelled] = {}
        calls: list[tuple[list[ApiResource], str | None]] = [
            ([r for r in resources if not r.namespaced], None)]
        calls += [([r for r in resources if r.namespaced], ns) for ns in sorted(set(namespaces))]
        for types, ns in calls:
            if not types:
                continue
            args = ["get", ",".join(r.arg for r in types), "-l", f"{label}={value}",
                    "-o", f"jsonpath={template}"]
            if ns:
                args += ["-n", ns]
            result = self.run(f"--request-timeout={REQUEST_TIMEOUT}", *args, raw=True)
            for line in result.stdout_bytes.decode("utf-8", "replace").splitlines():
                parts = line.split("\t")
                if len(parts) == 6 and parts[1]:
                    group = parts[0].rpartition("/")[0]
                    found[ObjRef(group, parts[1], parts[2], parts[3])] = Labelled(
                        bool(parts[4]), parts[5] or None)
        return found

    def delete(self, ref: ObjRef, resource: ApiResource) -> None:
        args = ["delete", f"{resource.arg}/{ref.name}", "--ignore-not-found", "--wait=false"]
        if ref.namespace:
            args += ["-n", ref.namespace]
        self.run(f"--request-timeout={REQUEST_TIMEOUT}", *args, what=ref, stream=True)

    # -- inventory ------------------------------------------------------------------
    def read_inventory(self, name: str, namespace: str) -> Inventory:
        result = self.run(f"--request-timeout={REQUEST_TIMEOUT}", "get", "configmap", name,
                          "-n", namespace, "--ignore-not-found", "-o", "json",
                          what=f"inventory ConfigMap {namespace}/{name}", raw=True)
        text = result.stdout_bytes.decode("utf-8", "replace")
        if not text.strip():
            return Inventory(frozenset(), None, name=name)
        try:
            data = json.loads(text)
            entries = json.loads(data.get("data", {}).get("objects", "[]"))
            refs = frozenset(ObjRef.from_json(e) for e in entries)
            project = (data.get("metadata", {}).get("labels") or {}).get(PROJECT_LABEL)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ToolError(f"stack {self.stack!r}: inventory ConfigMap {namespace}/{name} is "
                            f"not readable ({exc}); fix or delete it") from exc
        return Inventory(refs, str(data.get("metadata", {}).get("resourceVersion", "")),
                         str(project) if project else None, name)

    def write_inventory(self, name: str, namespace: str, refs: Iterable[ObjRef],
                        project: str) -> None:
        entries = [r.to_json() for r in sorted(set(refs))]
        body = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {INVENTORY_LABEL: self.stack, PROJECT_LABEL: project}},
            "data": {"objects": json.dumps(entries, indent=1, sort_keys=True)},
        }
        args = ["apply", "--server-side", f"--field-manager={self.field_manager}",
                "--force-conflicts", "-f", "-"]
        self.run(f"--request-timeout={REQUEST_TIMEOUT}", *args, input=dump_yaml([body]).encode(),
                 what=f"inventory ConfigMap {namespace}/{name}")


def parse_api_resources(text: str) -> dict[tuple[str, str], ApiResource]:
    """``kubectl api-resources --no-headers`` rows: NAME [SHORTNAMES] APIVERSION NAMESPACED KIND."""
    out: dict[tuple[str, str], ApiResource] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) not in (4, 5) or parts[-2] not in ("true", "false"):
            continue
        group, _, version = parts[-3].rpartition("/")
        res = ApiResource(parts[0], group, version, parts[-2] == "true", parts[-1])
        out.setdefault((group, res.kind), res)
    return out


def _capture_script(tmp: Path) -> tuple[Path, Path]:
    """An executable that copies kubectl diff's two directories to ``tmp/out``.

    kubectl splits $KUBECTL_EXTERNAL_DIFF on spaces and drops arguments with '/', so the
    destination is baked into the script and the script's own path must have no spaces.
    """
    if re.search(r"\s", str(tmp)):
        raise ToolError(f"the temporary directory {tmp} contains spaces, which kubectl's "
                        "KUBECTL_EXTERNAL_DIFF cannot handle; set TMPDIR to a path without")
    out = tmp / "out"
    out.mkdir()
    script = tmp / "capture-diff"
    script.write_text(
        "#!/bin/sh\n# Called by kubectl diff with its LIVE and MERGED directories.\n"
        f'cp -R "$1" {shlex.quote(str(out / "live"))} && '
        f'cp -R "$2" {shlex.quote(str(out / "merged"))}\n')
    script.chmod(0o700)
    return script, out


def read_diff_dirs(live_dir: Path, merged_dir: Path
                   ) -> dict[ObjRef, tuple[dict[str, Any] | None, dict[str, Any]]]:
    """Pair kubectl diff's LIVE and MERGED files; Secret values masked again, to be sure."""
    out: dict[ObjRef, tuple[dict[str, Any] | None, dict[str, Any]]] = {}
    if not merged_dir.is_dir():
        return out
    for path in sorted(merged_dir.iterdir()):
        merged = _one_doc(path)
        if merged is None:
            continue
        live = _one_doc(live_dir / path.name)
        out[ref_of_body(merged)] = masked_pair(live, merged)
    return out


def _one_doc(path: Path) -> dict[str, Any] | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.strip():
        return None
    try:
        docs = load_all(data, path.name)
    except ParseError as exc:
        raise ToolError(f"could not read kubectl diff output {path.name}: {exc}") from exc
    body = docs[0][0] if docs else None
    return body if isinstance(body, dict) else None
