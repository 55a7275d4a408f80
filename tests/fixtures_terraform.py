"""Terraform stacks for engine tests: real terraform, only ``terraform_data``, local backend.

No provider is downloaded (``terraform_data`` and ``local-exec`` are built in), state
lives under ``tmp_path/state`` (outside the repository), and every terraform call gets
the isolated HOME from conftest, so nothing touches the network or the real home.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gitops_push import config
from gitops_push.config import Stack
from gitops_push.engines.base import EngineContext
from gitops_push.engines.terraform.engine import TerraformEngine
from gitops_push.engines.terraform.spec import ENGINE

TERRAFORM = shutil.which("terraform") or "terraform"
BACKEND = 'terraform {\n  backend "local" {}\n}\n'


def resources(**inputs: str) -> str:
    """``terraform_data`` resources named by keyword, each with ``input = <expr>``."""
    return "".join(
        f'resource "terraform_data" "{name}" {{\n  input = {expr}\n}}\n\n'
        for name, expr in inputs.items()
    )


def variable(name: str, *, sensitive: bool = False, default: str | None = None) -> str:
    body = '  type = string\n'
    if default is not None:
        body += f'  default = "{default}"\n'
    if sensitive:
        body += "  sensitive = true\n"
    return f'variable "{name}" {{\n{body}}}\n\n'


def fmt(text: str) -> str:
    """HCL as ``terraform fmt`` would write it, so only deliberate mistakes fail lint."""
    proc = subprocess.run([TERRAFORM, "fmt", "-"], input=text, capture_output=True, text=True,
                          check=True, env={**os.environ, "CHECKPOINT_DISABLE": "1"})
    return proc.stdout


def script(path: Path, body: str) -> Path:
    """An executable shell script (fake or wrapper binaries)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@dataclass
class TfRepo:
    """A repository with one Terraform stack (``stacks/app``) and its state outside it."""

    root: Path
    state: Path
    scratch: Path
    lines: list[str] = field(default_factory=list)
    name: str = "app"
    path: str = "stacks/app"

    @property
    def stack_dir(self) -> Path:
        return self.root / self.path

    def write(self, files: Mapping[str, str]) -> None:
        """Files of the stack, relative to its directory."""
        for rel, text in files.items():
            target = self.stack_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)

    def settings(self, **overrides: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "backend_config": {
                "path": str(self.state / "terraform.tfstate"),
                "workspace_dir": str(self.state / "workspaces"),
            },
            "lock_timeout": "0s",  # a lock left behind fails the next command at once
        }
        base.update(overrides)
        return base

    def config_yaml(self, **overrides: Any) -> str:
        doc = {"version": 1, "stacks": [{"name": self.name, "path": self.path,
                                         "type": "terraform",
                                         "terraform": self.settings(**overrides)}]}
        return yaml.safe_dump(doc, sort_keys=False)

    def stack(self, **overrides: Any) -> Stack:
        """The stack as gitops-push.yaml would declare it (parsed by the real config code)."""
        return config.parse(self.config_yaml(**overrides)).stacks[0].stack

    def env(self, **extra: str) -> dict[str, str]:
        """What the runner would pass: base variables plus those the stack names."""
        return {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], "LANG": "C.UTF-8",
                **extra}

    def work_dir(self, run: str) -> Path:
        return self.scratch / run / self.name

    def ctx(self, run: str = "run1", *, phase: str = "plan", env: Mapping[str, str] | None = None,
            secrets: tuple[str, ...] = (), stack_dir: Path | None = None) -> EngineContext:
        return EngineContext(
            repo_root=self.root,
            stack_dir=stack_dir or self.stack_dir,
            env=dict(env) if env is not None else self.env(),
            phase=phase,
            work_dir=self.work_dir(run),
            secrets=secrets,
            on_line=self.lines.append,
            extra={"plugin_cache_dir": self.scratch / "plugin-cache"},
        )

    def terraform(self, *args: str, data_dir: str = "oob") -> subprocess.CompletedProcess[str]:
        """Terraform run by hand, outside gitops-push (someone changing things out of band)."""
        env = {**self.env(), "TF_DATA_DIR": str(self.scratch / data_dir),
               "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
        backend = [f"-backend-config={k}={v}" for k, v in self.settings()["backend_config"].items()]
        subprocess.run([TERRAFORM, "init", "-input=false", "-reconfigure", *backend],
                       cwd=self.stack_dir, env=env, check=True, capture_output=True)
        return subprocess.run([TERRAFORM, *args], cwd=self.stack_dir, env=env,
                              capture_output=True, text=True, check=True)

    def state_resources(self, state_file: Path | None = None) -> dict[str, Any]:
        """``{address: attributes}`` from a local state file."""
        doc = json.loads((state_file or self.state / "terraform.tfstate").read_text())
        return {f"{r['type']}.{r['name']}": r["instances"][0]["attributes"]
                for r in doc["resources"] if r["mode"] == "managed"}


def engine() -> TerraformEngine:
    made = ENGINE.factory()
    assert isinstance(made, TerraformEngine)
    return made


# Applying a saved plan in another process, as ``apply --plan-dir`` does in a later CI job.
CHILD = """
import json, sys
from pathlib import Path
from gitops_push import config
from gitops_push.engines.base import EngineContext
from gitops_push.engines.terraform.spec import ENGINE

a = json.load(sys.stdin)
stack = config.parse(a["config"]).stacks[0].stack
lines = []
ctx = EngineContext(repo_root=Path(a["repo_root"]), stack_dir=Path(a["stack_dir"]),
                    env=a["env"], phase="apply", work_dir=Path(a["work_dir"]),
                    on_line=lines.append)
engine = ENGINE.factory()
plan = engine.load_plan(stack, ctx, Path(a["artifact"]))
result = engine.apply(stack, ctx, plan)
json.dump({"changes": [[c.address, c.action] for c in result.changes],
           "add": result.counts.add, "lines": lines}, sys.stdout)
"""


def apply_in_new_process(repo: TfRepo, artifact: Path, run: str, **overrides: Any
                         ) -> dict[str, Any]:
    args = {"config": repo.config_yaml(**overrides), "repo_root": str(repo.root),
            "stack_dir": str(repo.stack_dir), "env": repo.env(),
            "work_dir": str(repo.work_dir(run)), "artifact": str(artifact)}
    proc = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(args),
                          capture_output=True, text=True, cwd=repo.scratch)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result
