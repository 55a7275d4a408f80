"""kubectl, as the kubernetes engine uses it: one place for flags, errors and redaction.

Every call goes through ``proc.run``. Failures are turned into one message naming the
stack, the object (when one is to blame) and the cause: unreachable server, rejected
credentials, missing context, RBAC, unknown kind, invalid object, field-manager conflict.
"""

from __future__ import annotations

import json
import re
import shlex
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitops_push import proc
from gitops_push.config.yamlsafe import load_all
from gitops_push.engines.base import EngineContext
from gitops_push.engines.kubernetes.access import Access, error_lines, explain
from gitops_push.engines.kubernetes.diff import masked_pair
from gitops_push.engines.kubernetes.objects import (
    INVENTORY_LABEL,
    PROJECT_LABEL,
    ObjRef,
    dump_yaml,
    ref_of_body,
)
from gitops_push.errors import ParseError, ToolError

KUBECTL = "kubectl"
INSTALL_HINT = ("install kubectl 1.26 or newer (it includes kustomize): "
                "https://kubernetes.io/docs/tasks/tools/")
REQUEST_TIMEOUT = "60s"
CALL_TIMEOUT = 1800.0  # one kubectl call; the CI job's own timeout is the real bound


# -- credentials ---------------------------------------------------------------------


# -- errors --------------------------------------------------------------------------


# -- the kubectl wrapper -------------------------------------------------------------

@dataclass(frozen=True)
class ApiResource:
    """One resource type the server serves (``kubectl api-resources``)."""

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


MIN_KUBECTL = (1, 26)


def kubectl_version(text: str) -> tuple[int, int] | None:
    try:
        git_version = json.loads(text)["clientVersion"]["gitVersion"]
    except (ValueError, KeyError, TypeError):
        return None
    m = re.match(r"v?(\d+)\.(\d+)", str(git_version))
    return (int(m.group(1)), int(m.group(2))) if m else None
