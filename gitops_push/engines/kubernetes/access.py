"""Reaching the cluster: the kubeconfig a stack uses, the credentials in it (for redaction
and the audit record), and kubectl's errors explained in one line.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from gitops_push.engines.base import EngineContext
from gitops_push.errors import UserError

_KLOG = re.compile(r"^[EWIF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+\] ")


_SECRET_USER_KEYS = ("token", "password", "client-key-data")


_STRUCTURED = re.compile(r'^"[^"]*"\s+err="((?:[^"\\]|\\.)*)"')


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
