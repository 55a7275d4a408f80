#!/usr/bin/env python3
"""Benchmark ``gitops-push plan --parallel`` and the overhead of ``gitops-push apply``.

Run from the repository root:

    .venv/bin/python bench/parallel.py

Everything happens in one temporary directory (removed at the end): a git repository
with a bare ``origin``, ``N`` independent Terraform stacks made of built-in
``terraform_data`` resources (no providers, no network, local backend) and a
``gitops-push.yaml`` listing them. HOME, XDG_CACHE_HOME, TMPDIR and
GITOPS_PUSH_PLUGIN_CACHE_DIR point inside that directory.

1. ``gitops-push plan --all --parallel 1`` vs ``--parallel 4``: median wall time and
   speed-up (target >= 1.6x on 2 cores). Each run starts from a fresh checkout
   (``git clean -fdx``: no state, no ``.terraform``), as in CI.
2. ``gitops-push apply --all --stack s01`` vs ``terraform init``, ``terraform plan -out``,
   ``terraform apply PLAN`` by hand in the same directory, each from fresh state
   (target overhead < 15%). Then one ``-vv`` run shows which commands ``apply`` spends
   its time in.

Missed targets print FAIL but exit 0; the exit code is non-zero only when a command
fails or does not do what it should (every stack planned, every resource created).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import find_gitops_push, isolated_env, load1, load_note, wait_quiet

TARGET_SPEEDUP = 1.6
TARGET_OVERHEAD = 0.15
APPLY_STACK = "s01"


class BenchError(Exception):
    """A command failed or did the wrong thing: the numbers would be meaningless."""


@dataclass(frozen=True)
class Result:
    seconds: float  # wall time
    cpu: float  # user + system seconds of the child and everything it waited for
    returncode: int
    stdout: str
    stderr: str


def run(cmd: Sequence[str], cwd: Path, env: Mapping[str, str], *, ok: Sequence[int] = (0,)
        ) -> Result:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if res.returncode not in ok:
        raise BenchError(f"{' '.join(cmd)} (in {cwd}) exited {res.returncode}\n"
                         f"{res.stderr[-3000:]}\n{res.stdout[-1500:]}")
    return Result(elapsed, cpu, res.returncode, res.stdout, res.stderr)


# -- the repository ----------------------------------------------------------------------
def stack_name(i: int) -> str:
    return f"s{i:02d}"


def main_tf(name: str, resources: int) -> str:
    """A ``terraform fmt``-clean root module of ``resources`` terraform_data resources."""
    blocks = [
        'variable "prefix" {\n'
        "  type    = string\n"
        f'  default = "{name}"\n'
        "}\n"
    ]
    for r in range(resources):
        blocks.append(
            f'resource "terraform_data" "r{r}" {{\n'
            "  input = {\n"
            f'    name  = "${{var.prefix}}-{r}"\n'
            f"    index = {r}\n"
            "  }\n"
            "}\n"
        )
    ids = ", ".join(f"terraform_data.r{r}.id" for r in range(resources))
    blocks.append(f'output "ids" {{\n  value = [{ids}]\n}}\n')
    return "\n".join(blocks)


def make_env(workdir: Path) -> dict[str, str]:
    """Isolated, and no TF_* settings leak in; one plugin cache inside the work dir."""
    env = isolated_env(workdir, drop_extra=("TF_",))
    env.update(GITOPS_PUSH_PLUGIN_CACHE_DIR=str(workdir / "plugin-cache"),
               TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1")
    return env


def build_repo(workdir: Path, env: Mapping[str, str], stacks: int, resources: int) -> Path:
    origin, repo = workdir / "origin.git", workdir / "repo"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], workdir, env)
    run(["git", "init", "-q", "-b", "main", str(repo)], workdir, env)
    lines = ["version: 1", "stacks:"]
    for i in range(1, stacks + 1):
        name = stack_name(i)
        d = repo / "stacks" / name
        d.mkdir(parents=True)
        (d / "main.tf").write_text(main_tf(name, resources))
        lines += [f"  - name: {name}", f"    path: stacks/{name}", "    type: terraform"]
    (repo / "gitops-push.yaml").write_text("\n".join(lines) + "\n")
    (repo / ".gitignore").write_text("*.tfstate*\n.terraform*\n*.tfplan\ntfplan\n")
    fmt = run(["terraform", "fmt", "-check", "-recursive"], repo, env, ok=(0, 3))
    if fmt.returncode != 0:
        raise BenchError(f"generated Terraform is not fmt-clean: {fmt.stdout}")
    for cmd in (
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "Benchmark stacks"],
        ["git", "remote", "add", "origin", str(origin)],
        ["git", "push", "-q", "-u", "origin", "main"],
        ["git", "remote", "set-head", "origin", "main"],
    ):
        run(cmd, repo, env)
    return repo


def fresh(repo: Path, env: Mapping[str, str]) -> None:
    """A fresh CI checkout: no state, no .terraform, no plan files (ignored files go too)."""
    run(["git", "clean", "-fdxq"], repo, env)


def state_resources(stack_dir: Path) -> int:
    state = stack_dir / "terraform.tfstate"
    if not state.is_file():
        return 0
    return len(json.loads(state.read_text()).get("resources", []))


# -- 1. plan --parallel ------------------------------------------------------------------
def plan_once(gp: str, repo: Path, env: Mapping[str, str], parallel: int, stacks: int,
              resources: int) -> Result:
    fresh(repo, env)
    res = run([gp, "plan", "--all", "--parallel", str(parallel), "--output", "json"], repo, env)
    data = json.loads(res.stdout)["data"]
    rows = data["stacks"]
    planned = [s for s in rows if s.get("result") == "planned"]
    if len(rows) != stacks or len(planned) != stacks:
        got = {s.get("name"): s.get("result") for s in rows}
        raise BenchError(f"plan --parallel {parallel}: expected {stacks} planned stacks, got "
                         f"{got}")
    return res


# -- 2. apply overhead -------------------------------------------------------------------
def apply_gitops_push(gp: str, repo: Path, env: Mapping[str, str], resources: int,
                      verbose: bool = False) -> Result:
    fresh(repo, env)
    cmd = [gp, *(["-vv"] if verbose else []), "apply", "--all", "--stack", APPLY_STACK,
           "--output", "json"]
    res = run(cmd, repo, env)
    rows = json.loads(res.stdout)["data"]["stacks"]
    if [(s.get("name"), s.get("result")) for s in rows] != [(APPLY_STACK, "applied")]:
        raise BenchError(f"gitops-push apply: expected {APPLY_STACK} applied, got {rows}")
    made = state_resources(repo / "stacks" / APPLY_STACK)
    if made != resources:
        raise BenchError(f"gitops-push apply: state has {made} resources, expected {resources}")
    return res


HAND = (
    ["terraform", "init", "-input=false", "-no-color"],
    ["terraform", "plan", "-input=false", "-no-color", "-out=tfplan"],
    ["terraform", "apply", "-input=false", "-no-color", "tfplan"],
)
# The terraform commands `gitops-push apply` runs for one stack, in its order: the version
# check, lint (fmt, validate), plan and its JSON summary, apply, and the post-apply drift
# check the issue asks for (one plan). By hand, one after the other.
SAME_STEPS = (
    ["terraform", "version", "-json"],
    ["terraform", "fmt", "-check", "-recursive", "-diff", "-no-color"],
    ["terraform", "init", "-input=false", "-no-color"],
    ["terraform", "validate", "-json", "-no-color"],
    ["terraform", "plan", "-json", "-input=false", "-no-color", "-out=tfplan"],
    ["terraform", "show", "-json", "-no-color", "tfplan"],
    ["terraform", "apply", "-json", "-input=false", "-no-color", "tfplan"],
    ["terraform", "plan", "-json", "-input=false", "-no-color", "-detailed-exitcode"],
)


def apply_by_hand(repo: Path, env: Mapping[str, str], resources: int,
                  steps: Sequence[Sequence[str]] = HAND) -> tuple[float, float]:
    """Wall and CPU seconds of ``steps`` (default: init, plan -out, apply PLAN), summed."""
    fresh(repo, env)
    d = repo / "stacks" / APPLY_STACK
    total = cpu = 0.0
    for cmd in steps:
        res = run(cmd, d, env, ok=(0, 2) if "-detailed-exitcode" in cmd else (0,))
        total += res.seconds
        cpu += res.cpu
    made = state_resources(d)
    if made != resources:
        raise BenchError(f"terraform apply: state has {made} resources, expected {resources}")
    return total, cpu


_EXIT = re.compile(r"exit (-?\d+) after ([0-9.]+)s: (.+?)\s*$")


def breakdown(stderr: str) -> dict[str, tuple[int, float]]:
    """Commands and their summed durations, from ``-vv`` (``exit N after Xs: NAME``) lines."""
    out: dict[str, list[float]] = defaultdict(list)
    for line in stderr.splitlines():
        m = _EXIT.search(line)
        if m:
            out[m.group(3)].append(float(m.group(2)))
    return {k: (len(v), sum(v)) for k, v in out.items()}


# -- reporting -----------------------------------------------------------------------------
def med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def rng(xs: Sequence[float]) -> str:
    return f"{min(xs):.2f}-{max(xs):.2f} s"


def table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())










def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stacks", type=int, default=8, help="independent stacks (default 8)")
    ap.add_argument("--resources", type=int, default=5,
                    help="terraform_data resources per stack (default 5)")
    ap.add_argument("--parallel", type=int, default=4, help="compared with 1 (default 4)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    ap.add_argument("--gitops-push", help="the executable (default: beside this python)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="first wait up to this long for the load average to drop (default 0)")
    ap.add_argument("--skip-plan", action="store_true", help="only the apply overhead")
    ap.add_argument("--skip-apply", action="store_true", help="only plan --parallel")
    ap.add_argument("--keep", action="store_true", help="do not delete the temp dir; print it")
    args = ap.parse_args(argv)
    if args.stacks < 1 or args.resources < 1 or args.runs < 1 or args.warmup < 0:
        ap.error("--stacks, --resources and --runs must be >= 1, --warmup >= 0")
    if shutil.which("terraform") is None:
        raise SystemExit("terraform is not on PATH")
    gp = find_gitops_push(args.gitops_push)
    workdir = Path(tempfile.mkdtemp(prefix="gitops-push-bench-parallel-"))
    try:
        return _main(args, gp, workdir)
    except BenchError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _main(args: argparse.Namespace, gp: str, workdir: Path) -> int:
    env = make_env(workdir)
    repo = build_repo(workdir, env, args.stacks, args.resources)
    tf_version = run(["terraform", "version"], repo, env).stdout.splitlines()[0]
    print(f"gitops-push plan/apply benchmark  ({time.strftime('%Y-%m-%d %H:%M')}, "
          f"{platform.node() or 'host'}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}, {tf_version})")
    print(f"repository: {args.stacks} terraform stacks x {args.resources} terraform_data "
          f"resources, bare origin, local backend; medians of {args.runs} runs after "
          f"{args.warmup} warm-up, fresh checkout (git clean -fdx) before each run\n")
    rows: list[tuple[str, ...]] = [
        ("measure", "median", "min-max", "cpu (median)", "target", "result")]
    wait_quiet(args.wait_quiet)
    load_start = load1()

    if not args.skip_plan:
        times: dict[int, list[float]] = {1: [], args.parallel: []}
        cpus: dict[int, list[float]] = {1: [], args.parallel: []}
        for k in range(args.warmup + args.runs):
            for p in times:  # interleaved, so drift in machine load hits both alike
                res = plan_once(gp, repo, env, p, args.stacks, args.resources)
                if k >= args.warmup:
                    times[p].append(res.seconds)
                    cpus[p].append(res.cpu)
        serial, par = med(times[1]), med(times[args.parallel])
        speedup = serial / par
        rows += [
            ("plan --all --parallel 1", f"{serial:.2f} s", rng(times[1]),
             f"{med(cpus[1]):.2f} s", "", ""),
            (f"plan --all --parallel {args.parallel}", f"{par:.2f} s",
             rng(times[args.parallel]), f"{med(cpus[args.parallel]):.2f} s", "", ""),
            (f"speed-up 1 -> {args.parallel}", f"{speedup:.2f}x", "", "",
             f">= {TARGET_SPEEDUP}x", "PASS" if speedup >= TARGET_SPEEDUP else "FAIL"),
        ]

    extra: list[str] = []
    if not args.skip_apply:
        gp_t: list[float] = []
        tf_t: list[float] = []
        same_t: list[float] = []
        gp_c: list[float] = []
        tf_c: list[float] = []
        same_c: list[float] = []
        for k in range(args.warmup + args.runs):
            g = apply_gitops_push(gp, repo, env, args.resources)
            t, c = apply_by_hand(repo, env, args.resources)
            st, sc = apply_by_hand(repo, env, args.resources, SAME_STEPS)
            if k >= args.warmup:
                gp_t.append(g.seconds)
                gp_c.append(g.cpu)
                tf_t.append(t)
                tf_c.append(c)
                same_t.append(st)
                same_c.append(sc)
        g_med, t_med, s_med = med(gp_t), med(tf_t), med(same_t)
        overhead = g_med / t_med - 1
        cpu_overhead = med(gp_c) / med(tf_c) - 1
        rows += [
            (f"apply --all --stack {APPLY_STACK}", f"{g_med:.2f} s", rng(gp_t),
             f"{med(gp_c):.2f} s", "", ""),
            ("terraform init+plan+apply", f"{t_med:.2f} s", rng(tf_t), f"{med(tf_c):.2f} s",
             "", ""),
            ("apply overhead", f"{overhead * 100:+.0f}%", f"{g_med - t_med:+.2f} s",
             f"{cpu_overhead * 100:+.0f}%", f"< {TARGET_OVERHEAD * 100:.0f}%",
             "PASS" if overhead < TARGET_OVERHEAD else "FAIL"),
            ("  same 8 terraform steps by hand", f"{s_med:.2f} s", rng(same_t),
             f"{med(same_c):.2f} s", "", ""),
            ("  = extra terraform steps", f"{(s_med - t_med) / t_med * 100:+.0f}%",
             f"{s_med - t_med:+.2f} s", "", "", ""),
            ("  = gitops-push itself", f"{(g_med - s_med) / t_med * 100:+.0f}%",
             f"{g_med - s_med:+.2f} s", "", "", ""),
        ]
        extra.append("The extra terraform steps are the version check, lint (fmt, validate), "
                     "the plan's JSON summary (show)\nand the post-apply drift check (a second "
                     "plan). gitops-push itself: python, git, audit records, locks.")
        verbose = apply_gitops_push(gp, repo, env, args.resources, verbose=True)
        parts = breakdown(verbose.stderr)
        if parts:
            total = sum(s for _, s in parts.values())
            extra.append(f"one gitops-push -vv apply ({verbose.seconds:.2f} s wall): "
                         f"{sum(n for n, _ in parts.values())} commands, {total:.2f} s in them")
            for name, (n, s) in sorted(parts.items(), key=lambda kv: -kv[1][1]):
                extra.append(f"  {name:<22} x{n:<3} {s:.2f} s")
            extra.append("  (some commands run side by side: the started record and the lock "
                         "are pushed while lint runs,\n  fmt runs beside init; so the sum can "
                         "exceed the wall time)")

    load_end = load1()
    table(rows)
    print(f"\n{load_note(load_start, load_end)}")
    if extra:
        print()
        print("\n".join(extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
