#!/usr/bin/env python3
"""Benchmark ``gitops-push fan-out`` on a repository of 2,000 stacks, all changed.

Run from the repository root:

    .venv/bin/python bench/fanout.py [--stacks 2000] [--runs 5]

It writes a repository (one commit, pushed to a bare origin, no audit trail yet, so
every stack is a first deployment and ``apply`` selects all of them) whose stacks form
a layered dependency graph: 20 foundation stacks, 180 that each depend on one or two of
them, the rest on one or two of those, plus a chain of 12 (12 waves). It then times, as
subprocesses (median of ``--runs`` after one warm-up):

- ``fan-out --platform github --for apply --max-waves 4`` (what the shipped workflow runs);
- ``fan-out --platform gitlab --for apply``;
- ``fan-out --platform github --for drift``.

Every output is checked: GitHub at most 256 entries, every stack exactly once, every
dependency in an earlier wave or in the same entry; GitLab valid against the GitLab CI
schema (check-jsonschema, offline), job names unique and at most 255 characters, every
``needs:`` naming a job of an earlier stage. A missed time target prints FAIL; the exit
code is non-zero only when a command fails or an output is invalid.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import find_gitops_push, isolated_env, load1, load_note

TARGET_S = 1.5
TF = 'resource "terraform_data" "r" {\n  input = "%s"\n}\n'


def graph(n: int, seed: int = 42) -> dict[str, list[str]]:
    rnd = random.Random(seed)
    deps: dict[str, list[str]] = {}
    found = [f"found-{i:02d}" for i in range(20)]
    for f in found:
        deps[f] = []
    mid = [f"mid-{i:03d}" for i in range(180)]
    for m in mid:
        deps[m] = sorted(rnd.sample(found, rnd.randint(1, 2)))
    chain = [f"chain-{i:02d}" for i in range(12)]
    for i, c in enumerate(chain):
        deps[c] = [chain[i - 1]] if i else []
    for i in range(n - len(deps)):
        deps[f"app-{i:05d}"] = sorted(rnd.sample(mid, rnd.randint(1, 2)))
    return deps


def build(root: Path, deps: dict[str, list[str]], env: dict[str, str]) -> Path:
    origin, repo = root / "origin.git", root / "repo"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True,
                   env=env)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=env)
    lines = ["version: 1", "stacks:"]
    for name, ds in deps.items():
        lines += [f"  - name: {name}", f"    path: stacks/{name}", "    type: terraform"]
        if ds:
            lines.append(f"    depends_on: [{', '.join(ds)}]")
        d = repo / "stacks" / name
        d.mkdir(parents=True)
        (d / "main.tf").write_text(TF % name)
    (repo / "gitops-push.yaml").write_text("\n".join(lines) + "\n")
    for args in (["add", "-A"], ["commit", "-qm", "stacks"], ["remote", "add", "origin",
                                                              str(origin)],
                 ["push", "-q", "origin", "main"], ["remote", "set-head", "origin", "main"]):
        subprocess.run(["git", *args], cwd=repo, check=True, env=env)
    return repo


def timed(cmd: list[str], env: dict[str, str], runs: int) -> tuple[float, float, str]:
    """Median wall time and median CPU time (user + system) of the command, its output."""
    out = ""
    times, cpus = [], []
    for i in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        took = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr}")
        out = res.stdout
        if i:
            times.append(took)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(times), statistics.median(cpus), out


def check_github(text: str, deps: dict[str, list[str]], max_waves: int | None) -> list[str]:
    problems = []
    entries = json.loads(text)["include"]
    if len(entries) > 256:
        problems.append(f"{len(entries)} entries > 256")
    where: dict[str, tuple[int, int]] = {}
    for i, e in enumerate(entries):
        for s in e["stacks"].split():
            if s in where:
                problems.append(f"{s} in two entries")
            where[s] = (e["wave"], i)
    if sorted(where) != sorted(deps):
        problems.append(f"{len(where)} stacks in the matrix, {len(deps)} expected")
    if max_waves and max(e["wave"] for e in entries) > max_waves:
        problems.append("more waves than --max-waves")
    for s, (wave, i) in where.items():
        for d in deps[s]:
            dw, di = where[d]
            if not (dw < wave or di == i):
                problems.append(f"{s} (wave {wave}) does not come after {d} (wave {dw})")
    return problems


def check_gitlab(text: str, deps: dict[str, list[str]], tmp: Path) -> list[str]:
    import yaml

    problems = []
    path = tmp / "child.yml"
    path.write_text(text)
    res = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                          "vendor.gitlab-ci", "--data-transform", "gitlab-ci", str(path)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        problems.append("schema: " + res.stdout[-500:])
    doc = yaml.safe_load(text)
    jobs = {k: v for k, v in doc.items() if isinstance(v, dict)
            and "GITOPS_PUSH_STACK" in v.get("variables", {})}
    if any(len(k) > 255 for k in jobs):
        problems.append("a job name is longer than 255 characters")
    stage = {k: int(v["stage"].rsplit("-", 1)[1]) for k, v in jobs.items()}
    for k, v in jobs.items():
        for need in v.get("needs", []):
            if need["job"] not in jobs or stage[need["job"]] >= stage[k]:
                problems.append(f"{k} needs {need['job']} of a later or unknown stage")
    named = sorted(s for v in jobs.values() for s in v["variables"]["GITOPS_PUSH_STACK"].split())
    if named != sorted(deps):
        problems.append("not every stack exactly once")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--gitops-push", dest="gp", default=None)
    args = ap.parse_args()
    gp = find_gitops_push(args.gp)
    start_load = load1()
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmpdir:
        tmp = Path(tmpdir)
        env = isolated_env(tmp / "env")
        deps = graph(args.stacks)
        t0 = time.perf_counter()
        repo = build(tmp, deps, env)
        print(f"repository: {len(deps)} stacks, built in {time.perf_counter() - t0:.1f} s")
        failed = False
        cases: list[tuple[str, list[str], Any]] = [
            ("github apply --max-waves 4", ["--platform", "github", "--for", "apply",
                                            "--max-waves", "4"],
             lambda text: check_github(text, deps, 4)),
            ("gitlab apply", ["--platform", "gitlab", "--for", "apply"],
             lambda text: check_gitlab(text, deps, tmp)),
            ("github drift", ["--platform", "github", "--for", "drift"],
             lambda text: check_github(text, deps, None)),
        ]
        for label, flags, check in cases:
            took, cpu, out = timed([gp, "-C", str(repo), "fan-out", *flags], env, args.runs)
            problems = check(out)
            verdict = "ok" if took < TARGET_S else "FAIL"
            jobs = len(json.loads(out)["include"]) if out.lstrip().startswith("{") else \
                out.count("\n    GITOPS_PUSH_STACK:")
            print(f"fan-out {label:28s} {took:6.3f} s wall, {cpu:5.3f} s CPU "
                  f"(target < {TARGET_S} s: {verdict}); "
                  f"{jobs} jobs; output {'valid' if not problems else 'INVALID'}")
            for p in problems[:10]:
                print(f"  INVALID: {p}")
            failed |= bool(problems)
        print(load_note(start_load, load1()))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
