"""A stack's saved plan: the objects planned (secrets only as salted digests) and the
rendered manifests, re-read and checked before apply.
"""

from __future__ import annotations

import hashlib
import json
import secrets as secrets_mod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitops_push.engines.kubernetes.settings import (
    KubernetesSettings,
)
from gitops_push.errors import UserError

if TYPE_CHECKING:
    from gitops_push.config import Stack


PLAN_FILE = "kubernetes-plan.json"


MANIFESTS_FILE = "manifests.yaml"


PLAN_FORMAT = 2  # 2: the project and the fields taken over


_SCRYPT_N = 2**14


def secret_digest(fields: Mapping[str, Any], salt: bytes | None = None) -> str:
    """A slow salted hash (scrypt) of a Secret's values: checkable, not guessable."""
    salt = salt or secrets_mod.token_bytes(16)
    canonical = json.dumps(fields, sort_keys=True).encode()
    digest = hashlib.scrypt(canonical, salt=salt, n=_SCRYPT_N, r=8, p=1, dklen=32)
    return f"scrypt${_SCRYPT_N}${salt.hex()}${digest.hex()}"


def digest_matches(fields: Mapping[str, Any], recorded: str) -> bool:
    try:
        _, _, salt, _ = recorded.split("$")
        return secrets_mod.compare_digest(secret_digest(fields, bytes.fromhex(salt)), recorded)
    except ValueError:
        return False


def read_plan(artifact: Path, stack: Stack, s: KubernetesSettings) -> dict[str, Any]:
    path = artifact / PLAN_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"stack {stack.name!r}: no Kubernetes plan at {path}") from exc
    except (OSError, ValueError) as exc:
        raise UserError(f"stack {stack.name!r}: cannot read the plan {path}: {exc}") from exc
    if data.get("format") != PLAN_FORMAT or data.get("stack") != stack.name:
        raise UserError(f"stack {stack.name!r}: {path} is not a plan for this stack "
                        f"(format {data.get('format')}, stack {data.get('stack')!r})")
    if data.get("settings") != s.fingerprint():
        raise UserError(f"stack {stack.name!r}: the plan is stale: the stack's kubernetes "
                        "settings changed since it was made; plan again")
    return data
