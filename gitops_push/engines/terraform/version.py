"""Which terraform (or tofu) binary runs, and whether it is new enough: probed once per
binary and process, in a thread while git is read (``prefetch``).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from gitops_push import proc
from gitops_push.engines.terraform.settings import (
    BIN_ENV,
    TerraformSettings,
    resolve_binary,
)

# re-exported: the keys the docs must name (tests/test_cli.py reads engine.SETTINGS_KEYS)
from gitops_push.engines.terraform.settings import SETTINGS_KEYS as SETTINGS_KEYS
from gitops_push.errors import ToolError

if TYPE_CHECKING:
    from gitops_push.config import Stack


MIN_VERSION = (1, 5, 0)  # `workspace select -or-create`, stable plan JSON; OpenTofu is >= 1.6


VERSION_TIMEOUT = 60.0


INSTALL_HINT = (
    "Install Terraform >= 1.5 (https://developer.hashicorp.com/terraform/install) or "
    "OpenTofu (https://opentofu.org/docs/intro/install/) on PATH, or point the stack's "
    f"`terraform: binary:` setting or {BIN_ENV} at it."
)


_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> tuple[int, int, int] | None:
    m = _VERSION_RE.match(text.strip())
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def _version_from_json(stdout: str) -> str | None:
    """``version -json`` prints ``terraform_version`` (OpenTofu keeps the key)."""
    try:
        doc = json.loads(stdout)
    except ValueError:
        return None
    value = doc.get("terraform_version") if isinstance(doc, dict) else None
    return value if isinstance(value, str) and parse_version(value) else None


_PROBED_LOCK = threading.Lock()
_PROBED: dict[tuple[str, ...], str] = {}


def probe_version(binary: str, env: Mapping[str, str], who: str = "") -> str:
    """``binary version -json``: its version, or a ToolError saying why it is unusable."""
    found = shutil.which(binary, path=env.get("PATH"))
    try:
        st = Path(found).stat() if found else None
    except OSError:
        st = None
    probe_key = (binary, env.get("PATH", ""), found or "", str(st.st_mtime_ns if st else ""),
                 str(st.st_size if st else ""))
    with _PROBED_LOCK:
        if st is not None and probe_key in _PROBED:
            return _PROBED[probe_key]
    where = f" ({who})" if who else ""
    run_env = {**proc.filtered_env(env), "CHECKPOINT_DISABLE": "1"}
    try:
        result = proc.run([binary, "version", "-json"], env=run_env,
                          timeout=VERSION_TIMEOUT, check=False)
    except ToolError as exc:
        if exc.returncode is not None:
            raise
        raise ToolError(f"{binary!r}{where} cannot be run: {exc.message}. {INSTALL_HINT}",
                        command=exc.command) from exc
    version = _version_from_json(result.stdout)
    if result.returncode != 0 or version is None:
        raise ToolError(
            f"{binary!r}{where} did not report its version (`version -json` printed no "
            f"terraform_version): is it Terraform or OpenTofu? {INSTALL_HINT}",
            command=result.command, returncode=result.returncode, output_tail=result.tail)
    if (parse_version(version) or (0, 0, 0)) < MIN_VERSION:
        raise ToolError(f"{binary!r}{where} is version {version}; gitops-push needs "
                        f"Terraform or OpenTofu 1.5 or newer. {INSTALL_HINT}")
    with _PROBED_LOCK:
        _PROBED[probe_key] = version
    return version


def prefetch(stacks: list[Stack], env: Mapping[str, str]) -> None:
    """Probe every binary these stacks use (the default one for discovered stacks)."""
    binaries = {resolve_binary(s.settings, env) for s in stacks
                if isinstance(s.settings, TerraformSettings)} or {
        resolve_binary(TerraformSettings(), env)}
    for binary in sorted(binaries):
        with contextlib.suppress(ToolError):
            probe_version(binary, env)
