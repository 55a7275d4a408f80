#!/usr/bin/env python3
"""Benchmark ``gitops-push changed`` on a synthetic Terraform monorepo.

Run from the repository root:

    .venv/bin/python bench/changed.py

It builds (with ``git fast-import``, in a few seconds) a monorepo of 2,000 Terraform
stacks and 20,000+ files with 500 commits; the last 40 commits change 40 distinct
files, one of them in ``modules/shared``, which 200 stacks use as a local module. It then
times, as subprocesses (median of 7 runs after 1 warm-up):

- ``gitops-push changed --base BASE --head HEAD --output json``;
- the floor: ``git diff --name-only BASE HEAD`` plus ``git grep -n source HEAD -- '*.tf'``;
- their ratio;
- ``gitops-push --help``.

Every ``changed`` run's JSON is checked against the stacks the generator knows changed
(a fast wrong answer is worthless). Missed targets print FAIL but exit 0; the exit code
is non-zero only when a command fails or its answer is wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import find_gitops_push, isolated_env, load1, load_note, wait_quiet

SHARED = "modules/shared"
NETWORK = "modules/network"
# per-stack files, in order; the first ``files_per_stack`` are generated
STACK_FILES = (
    "main.tf",
    "variables.tf",
    "outputs.tf",
    "versions.tf",
    "locals.tf",
    "terraform.tfvars",
    "README.md",
    "files/policy.json",
    "files/user_data.sh",
    ".terraform.lock.hcl",
    "data.tf",
    "iam.tf",
)
FORMAT_VERSION = 1  # bump when the generated repository changes shape (cache key)

TARGET_CHANGED_S = 1.0
TARGET_RATIO = 4.0
TARGET_HELP_S = 0.250


# -- parameters and the generated repository --------------------------------------------
@dataclass(frozen=True)
class Params:
    stacks: int = 2000
    files_per_stack: int = 10
    commits: int = 500
    changed_files: int = 40
    module_users: int = 200
    seed: int = 42

    def check(self) -> None:
        if not 5 <= self.files_per_stack <= len(STACK_FILES):
            raise SystemExit(f"--files-per-stack must be 5..{len(STACK_FILES)}")
        if self.module_users > self.stacks:
            raise SystemExit("--module-users must not exceed --stacks")
        if self.changed_files < 5 or self.changed_files > self.stacks:
            raise SystemExit("--changed-files must be 5..--stacks")
        if self.commits < self.changed_files + 1:
            raise SystemExit("--commits must exceed --changed-files (one commit per change)")

    def key(self) -> str:
        raw = json.dumps({"v": FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


@dataclass
class Built:
    """What the generator knows about the repository it wrote."""

    path: Path
    base: str
    head: str
    files: int
    commits: int
    stacks: int
    changed_paths: list[str]
    expected_stacks: list[str]  # stack paths ``changed`` must report
    module_users: list[str]
    seconds: float = 0.0
    cached: bool = False
    notes: list[str] = field(default_factory=list)


def stack_path(i: int) -> str:
    return f"stacks/s{i:04d}"


def stack_files(i: int, p: Params, users: set[int], net_users: set[int]) -> dict[str, bytes]:
    """The files of stack ``i`` (contents differ per stack, as in a real repository)."""
    name = f"s{i:04d}"
    main = [
        'resource "terraform_data" "app" {',
        "  input = {",
        f'    name   = "{name}"',
        "    size   = var.size",
        '    policy = file("${path.module}/files/policy.json")',
        "  }",
        "}",
        "",
    ]
    if i in users:
        main += [
            'module "shared" {',
            '  source = "../../modules/shared"',
            f'  name   = "{name}"',
            "}",
            "",
        ]
    if i in net_users:
        main += [
            'module "network" {',
            '  source = "../../modules/network"',
            f'  cidr   = "10.{i % 250}.0.0/16"',
            "}",
            "",
        ]
    if i % 7 == 3:  # a registry module: not local, must not widen anything
        main += [
            'module "labels" {',
            '  source  = "cloudposse/label/null"',
            '  version = "0.25.0"',
            f'  name    = "{name}"',
            "}",
            "",
        ]
    contents = {
        "main.tf": "\n".join(main),
        "variables.tf": (
            f'variable "size" {{\n  type    = number\n  default = {i % 9 + 1}\n}}\n\n'
            'variable "env" {\n  type    = string\n  default = "prod"\n}\n'
        ),
        "outputs.tf": f'output "id" {{\n  value = terraform_data.app.id  # {name}\n}}\n',
        "versions.tf": f'terraform {{\n  required_version = ">= 1.5"  # {name}\n}}\n',
        "locals.tf": f'locals {{\n  owner = "team-{i % 37}"\n  stack = "{name}"\n}}\n',
        "terraform.tfvars": f"size = {i % 5 + 1}\n",
        "README.md": f"# Stack {name}\n\nOwned by team-{i % 37}.\n",
        "files/policy.json": json.dumps({"Version": "2012-10-17", "Sid": name}) + "\n",
        "files/user_data.sh": f"#!/bin/sh\necho {name}\n",
        ".terraform.lock.hcl": f"# This file is maintained automatically ({name}).\n",
        "data.tf": f'locals {{\n  data_{i} = "{name}"\n}}\n',
        "iam.tf": f'locals {{\n  iam_{i} = "role-{name}"\n}}\n',
    }
    return {f"{stack_path(i)}/{f}": contents[f].encode() for f in STACK_FILES[: p.files_per_stack]}


def module_files() -> dict[str, bytes]:
    return {
        f"{SHARED}/main.tf": (
            b'variable "name" {\n  type = string\n}\n\n'
            b'resource "terraform_data" "shared" {\n  input = var.name\n}\n'
        ),
        f"{SHARED}/outputs.tf": b'output "id" {\n  value = terraform_data.shared.id\n}\n',
        f"{SHARED}/README.md": b"# Shared module\n",
        f"{NETWORK}/main.tf": (
            b'variable "cidr" {\n  type = string\n}\n\n'
            b'resource "terraform_data" "net" {\n  input = var.cidr\n}\n'
        ),
        f"{NETWORK}/README.md": b"# Network module\n",
        "docs/runbook.md": b"# Runbook\n",
        "docs/architecture.md": b"# Architecture\n",
        "README.md": b"# Synthetic monorepo for bench/changed.py\n",
        ".gitignore": b".terraform/\n*.tfstate\n*.tfstate.backup\n",
    }


class FastImport:
    """Writes a ``git fast-import`` stream: one linear branch, inline blobs."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.marks = 0
        self.clock = 1_700_000_000

    def commit(
        self, message: str, changes: Mapping[str, bytes | None], *, first: bool = False
    ) -> None:
        self.marks += 1
        self.clock += 3600
        w = self.out.write
        msg = message.encode()
        who = f"Bench <bench@example.com> {self.clock} +0000".encode()
        w(b"commit refs/heads/main\nmark :%d\n" % self.marks)
        w(b"author " + who + b"\ncommitter " + who + b"\n")
        w(b"data %d\n%s\n" % (len(msg), msg))
        if not first:
            w(b"from :%d\n" % (self.marks - 1))
        for path, data in changes.items():
            if data is None:
                w(b"D " + path.encode() + b"\n")
            else:
                w(b"M 100644 inline " + path.encode() + b"\n")
                w(b"data %d\n" % len(data) + data + b"\n")
        w(b"\n")


def build(p: Params, dest: Path, env: Mapping[str, str]) -> Built:
    """Generate the repository at ``dest`` (a fresh directory)."""
    start = time.perf_counter()
    rng = random.Random(p.seed)
    users = set(rng.sample(range(p.stacks), p.module_users))
    others = [i for i in range(p.stacks) if i not in users]
    net_users = set(rng.sample(others, min(len(others), p.module_users // 2)))

    tree: dict[str, bytes] = {}
    for i in range(p.stacks):
        tree.update(stack_files(i, p, users, net_users))
    tree.update(module_files())

    # the changes between base and head: one file per commit, all distinct paths
    n = p.changed_files
    stack_ids = rng.sample(range(p.stacks), n)
    plan: list[tuple[str, bytes | None]] = [
        (f"{SHARED}/main.tf", tree[f"{SHARED}/main.tf"] + b"# changed after base\n"),
        ("docs/runbook.md", tree["docs/runbook.md"] + b"\nA change outside every stack.\n"),
        (f"{stack_path(stack_ids[0])}/files/user_data.sh", None),  # a deleted file
        (f"{stack_path(stack_ids[1])}/extra.tf", b'locals {\n  extra = "added"\n}\n'),
    ]
    editable = [f for f in STACK_FILES[: p.files_per_stack] if f != "files/user_data.sh"]
    for i in stack_ids[2 : n - 2]:
        f = f"{stack_path(i)}/{rng.choice(editable)}"
        plan.append((f, tree[f] + b"# changed after base\n"))
    assert len(plan) == n and len({f for f, _ in plan}) == n

    noise_commits = p.commits - 1 - n
    noise_pool = [f for f in tree if f.startswith("stacks/") and f.endswith((".md", ".tfvars"))]
    git_dir = dest
    subprocess.run(["git", "init", "-q", "-b", "main", str(git_dir)], check=True, env=env)
    with subprocess.Popen(
        ["git", "fast-import", "--quiet", "--done"],
        cwd=git_dir,
        stdin=subprocess.PIPE,
        env=env,
    ) as fi:
        assert fi.stdin is not None
        stream = FastImport(fi.stdin)
        stream.commit("Initial import", tree, first=True)
        for c in range(noise_commits):
            edits: dict[str, bytes | None] = {}
            for f in rng.sample(noise_pool, rng.randint(1, 3)):
                tree[f] = tree[f] + f"<!-- rev {c} -->\n".encode()
                edits[f] = tree[f]
            stream.commit(f"Routine change {c}", edits)
        for k, (f, data) in enumerate(plan):
            stream.commit(f"Change {k} after base: {f}", {f: data})
            if data is None:
                tree.pop(f)
            else:
                tree[f] = data
        fi.stdin.write(b"done\n")
        fi.stdin.close()
        if fi.wait() != 0:
            raise SystemExit("git fast-import failed")

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=git_dir, env=env, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("reset", "-q", "--hard", "main")  # a CI checkout has a working tree
    head = git("rev-parse", "main")
    base = git("rev-parse", f"main~{n}")

    changed_paths = sorted(f for f, _ in plan)
    owners: set[str] = set()
    for f in changed_paths:
        if f.startswith("stacks/"):
            owners.add("/".join(f.split("/")[:2]))
    module_user_paths = sorted(stack_path(i) for i in users)
    expected = set(owners)
    if any(f.startswith(SHARED + "/") for f in changed_paths):
        expected |= set(module_user_paths)
    return Built(
        path=git_dir,
        base=base,
        head=head,
        files=len(tree),
        commits=p.commits,
        stacks=p.stacks,
        changed_paths=changed_paths,
        expected_stacks=sorted(expected),
        module_users=module_user_paths,
        seconds=time.perf_counter() - start,
    )


def obtain(p: Params, workdir: Path, cache_dir: Path | None, env: Mapping[str, str]) -> Built:
    """Build the repository, or reuse the one cached under ``cache_dir`` for these params."""
    if cache_dir is None:
        return build(p, workdir / "monorepo", env)
    target = cache_dir / f"gitops-push-bench-changed-{p.key()}"
    meta = target / ".git" / "bench-meta.json"
    if meta.is_file():
        data = json.loads(meta.read_text())
        data["path"] = target
        built = Built(**data)
        built.cached, built.seconds = True, 0.0
        return built
    if target.exists():
        shutil.rmtree(target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    built = build(p, target, env)
    data = asdict(built)
    data["path"] = str(target)
    meta.write_text(json.dumps(data))
    return built


# -- measuring ---------------------------------------------------------------------------
class CommandFailed(Exception):
    pass


@dataclass(frozen=True)
class Timed:
    wall: float  # seconds, perf_counter around the subprocess
    cpu: float  # user + system seconds of the child and everything it waited for
    stdout: str


def run(cmd: Sequence[str], cwd: Path, env: Mapping[str, str]) -> Timed:
    """Wall and CPU time of one subprocess; CommandFailed on a non-zero exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise CommandFailed(
            f"{' '.join(cmd)} exited {res.returncode}\n{res.stderr[-2000:]}{res.stdout[-500:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(elapsed, cpu, res.stdout)


def check_changed(stdout: str, built: Built) -> str | None:
    """None when ``changed --output json`` reports exactly the expected stacks."""
    try:
        data = json.loads(stdout)["data"]
    except (ValueError, KeyError, TypeError) as exc:
        return f"output is not the JSON envelope: {exc}"
    if data.get("base") != built.base or data.get("head") != built.head:
        return f"range {data.get('base')}..{data.get('head')} is not {built.base}..{built.head}"
    got = {s["path"] for s in data["stacks"] if s["status"] == "changed"}
    other = [s["path"] for s in data["stacks"] if s["status"] != "changed"]
    want = set(built.expected_stacks)
    problems = []
    if got != want:
        missing, extra = sorted(want - got), sorted(got - want)
        problems.append(
            f"expected {len(want)} changed stacks, got {len(got)}; "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}"
        )
    if other:
        problems.append(f"stacks with another status: {other[:5]}")
    by_path = {s["path"]: s for s in data["stacks"]}
    if any(f.startswith(SHARED + "/") for f in built.changed_paths):
        for user in built.module_users:
            entry = by_path.get(user)
            if entry is None:
                continue  # already reported as missing
            if not any(r["file"].startswith(SHARED + "/") and r["chain"] for r in entry["reasons"]):
                problems.append(f"{user}: no reason through {SHARED} in {entry['reasons']}")
                break
    return "; ".join(problems) or None


def hyperfine(
    commands: Mapping[str, Sequence[str]], cwd: Path, env: Mapping[str, str], runs: int,
    warmup: int, workdir: Path,
) -> dict[str, float]:
    """Medians from hyperfine (no shell: -N), as a cross-check of the Python timings."""
    exe = shutil.which("hyperfine")
    if exe is None:
        return {}
    export = workdir / "hyperfine.json"
    cmd = [exe, "-N", "--style", "none", "--runs", str(runs), "--warmup", str(warmup),
           "--export-json", str(export)]
    names = list(commands)
    for name in names:
        cmd += ["-n", name, " ".join(commands[name])]  # hyperfine -N splits on spaces
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"hyperfine failed (ignored): {res.stderr.strip()[-500:]}", file=sys.stderr)
        return {}
    results = json.loads(export.read_text())["results"]
    return {name: float(r["median"]) for name, r in zip(names, results, strict=True)}










def bench_env(workdir: Path) -> dict[str, str]:
    """Isolated git and a fixed locale, so timings compare across machines."""
    env = isolated_env(workdir)
    env["LC_ALL"] = "C"
    return env


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stacks", type=int, default=Params.stacks)
    ap.add_argument("--files-per-stack", type=int, default=Params.files_per_stack)
    ap.add_argument("--commits", type=int, default=Params.commits)
    ap.add_argument("--changed-files", type=int, default=Params.changed_files)
    ap.add_argument("--module-users", type=int, default=Params.module_users)
    ap.add_argument("--seed", type=int, default=Params.seed)
    ap.add_argument("--runs", type=int, default=7, help="timed runs per command (default 7)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    ap.add_argument("--gitops-push", help="the executable (default: beside this python)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="first wait up to this long for the load average to drop (default 0)")
    ap.add_argument("--cache-dir", type=Path,
                    help="keep the generated repo here, keyed by parameters, and reuse it "
                         "(default: build in a temp dir and delete it)")
    ap.add_argument("--keep", action="store_true", help="do not delete the temp dir; print it")
    ap.add_argument("--no-hyperfine", action="store_true",
                    help="skip the hyperfine cross-check even when hyperfine is installed")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        ap.error("--runs must be >= 1 and --warmup >= 0")
    p = Params(args.stacks, args.files_per_stack, args.commits, args.changed_files,
               args.module_users, args.seed)
    p.check()
    gp = find_gitops_push(args.gitops_push)

    workdir = Path(tempfile.mkdtemp(prefix="gitops-push-bench-changed-"))
    try:
        return _main(args, p, gp, workdir)
    finally:
        if args.keep:
            print(f"kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _main(args: argparse.Namespace, p: Params, gp: str, workdir: Path) -> int:
    env = bench_env(workdir)
    built = obtain(p, workdir, args.cache_dir, env)
    repo = built.path
    print(f"gitops-push changed benchmark  ({time.strftime('%Y-%m-%d %H:%M')}, "
          f"{platform.node() or 'host'}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}, {run(['git', '--version'], repo, env).stdout.strip()})")
    print(f"repository: {built.stacks} stacks, {built.files} files, {built.commits} commits, "
          f"{len(built.changed_paths)} files changed base..head "
          f"({'cached' if built.cached else f'built in {built.seconds:.1f} s'})")
    print(f"            {len(built.module_users)} stacks use {SHARED} (changed: "
          f"{any(f.startswith(SHARED + '/') for f in built.changed_paths)}); "
          f"expected changed stacks: {len(built.expected_stacks)}")
    print(f"            base {built.base[:12]}  head {built.head[:12]}")

    changed_cmd = [gp, "changed", "--base", built.base, "--head", built.head, "--output", "json"]
    diff_cmd = ["git", "diff", "--name-only", built.base, built.head]
    grep_cmd = ["git", "grep", "-n", "source", built.head, "--", "*.tf"]
    help_cmd = [gp, "--help"]

    # sanity: the floor sees the 40 files, and discovery finds every stack
    diff_out = run(diff_cmd, repo, env).stdout
    if sorted(diff_out.split()) != built.changed_paths:
        print(f"ERROR: git diff lists {len(diff_out.split())} files, expected "
              f"{len(built.changed_paths)}", file=sys.stderr)
        return 2
    try:
        all_out = run([gp, "changed", "--all", "--output", "json"], repo, env).stdout
    except CommandFailed as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    found = {s["path"] for s in json.loads(all_out)["data"]["stacks"]}
    want_all = {stack_path(i) for i in range(p.stacks)}
    if found != want_all:
        print(f"ERROR: changed --all found {len(found)} stacks, expected {len(want_all)} "
              f"(extra: {sorted(found - want_all)[:5]}, missing: {sorted(want_all - found)[:5]})",
              file=sys.stderr)
        return 2

    wait_quiet(args.wait_quiet)
    load_start = load1()
    # one run with no scan cache (a fresh clone, or the first run after a gitops-push
    # upgrade); the timed runs below reuse what it cached, as repeated CI runs would
    shutil.rmtree(repo / ".git" / "gitops-push" / "cache", ignore_errors=True)
    try:
        cold = run(changed_cmd, repo, env)
    except CommandFailed as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    commands = {"changed": changed_cmd, "diff": diff_cmd, "grep": grep_cmd, "help": help_cmd}
    wall: dict[str, list[float]] = {k: [] for k in (*commands, "floor")}
    cpu: dict[str, list[float]] = {k: [] for k in (*commands, "floor")}
    wrong: str | None = None
    try:
        for k in range(args.warmup + args.runs):
            timed = {name: run(cmd, repo, env) for name, cmd in commands.items()}
            wrong = wrong or check_changed(timed["changed"].stdout, built)
            if k < args.warmup:
                continue
            for name, t in timed.items():
                wall[name].append(t.wall)
                cpu[name].append(t.cpu)
            wall["floor"].append(timed["diff"].wall + timed["grep"].wall)
            cpu["floor"].append(timed["diff"].cpu + timed["grep"].cpu)
    except CommandFailed as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    load_end = load1()

    hf: dict[str, float] = {}
    if not args.no_hyperfine:
        hf = hyperfine(commands, repo, env, args.runs, args.warmup, workdir)
        if hf:
            hf["floor"] = hf["diff"] + hf["grep"]

    def ms(x: float) -> str:
        return f"{x * 1000:.0f} ms"

    def timing(name: str) -> tuple[str, str, str, str]:
        w = wall[name]
        return (ms(statistics.median(w)), f"{min(w) * 1000:.0f}-{max(w) * 1000:.0f} ms",
                ms(statistics.median(cpu[name])), ms(hf[name]) if name in hf else "-")

    def ratio(values: dict[str, list[float]]) -> float:
        return statistics.median(values["changed"]) / statistics.median(values["floor"])

    med_changed = statistics.median(wall["changed"])
    med_help = statistics.median(wall["help"])
    wall_ratio = ratio(wall)
    ratios = [c / f for c, f in zip(wall["changed"], wall["floor"], strict=True)]
    rows: list[tuple[str, ...]] = [
        ("measure", "median", "min-max", "cpu (median)", "hyperfine", "target", "result"),
        ("changed --output json", *timing("changed"), "< 1000 ms",
         verdict(med_changed < TARGET_CHANGED_S)),
        ("  cold scan cache (1 run)", ms(cold.wall), "", ms(cold.cpu), "-", "", ""),
        ("  floor: git diff --name-only", *timing("diff"), "", ""),
        ("  floor: git grep -n source", *timing("grep"), "", ""),
        ("floor (diff + grep)", *timing("floor"), "", ""),
        ("ratio changed / floor", f"{wall_ratio:.2f}x", f"{min(ratios):.2f}-{max(ratios):.2f}x",
         f"{ratio(cpu):.2f}x", f"{hf['changed'] / hf['floor']:.2f}x" if hf else "-", "<= 4x",
         verdict(wall_ratio <= TARGET_RATIO)),
        ("gitops-push --help", *timing("help"), "< 250 ms", verdict(med_help < TARGET_HELP_S)),
        ("changed output correct", f"{len(built.expected_stacks)} stacks",
         f"{args.warmup + args.runs} runs", "", "", "exact", verdict(wrong is None)),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"\nmedians of {args.runs} runs after {args.warmup} warm-up (wall time of each "
          "subprocess; cpu = user+sys of it and its children; PASS/FAIL on the wall median)\n")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"\n{load_note(load_start, load_end)}")
    if wrong is not None:
        print(f"\nERROR: wrong answer from gitops-push changed: {wrong}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
