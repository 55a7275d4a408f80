"""One deployment, many jobs (issue 15): the audit records of every job of one CI
pipeline share a ``deployment_id``; this module folds them back into one run.

``audit log`` shows one entry per deployment, ``summary`` renders one Markdown summary
for the whole fan-out. A re-run of a failed job writes new records under the same id,
and the newest result of each stack wins, so the re-run continues the deployment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gitops_push.errors import ExitCode, UserError

OK_RESULTS = frozenset({"applied", "no-changes", "destroyed", "fixed", "clean", "skipped",
                        "planned"})


def deployment_of(record: Mapping[str, Any]) -> str:
    """A record's deployment: its ``deployment_id``, else (older records) its run id."""
    return str(record.get("deployment_id") or record.get("run_id"))


def merge_log(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``audit log`` entries (one per run) folded into one entry per deployment.

    A deployment of one run is left as it is; one of several runs gets ``runs`` (their
    ids, oldest first), the stacks of all of them (each stack's newest entry), the
    earliest start, the latest finish, and an outcome over every stack.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for e in entries:
        groups.setdefault(deployment_of(e), []).append(e)
    out: list[dict[str, Any]] = []
    for dep, runs in groups.items():
        if len(runs) == 1:
            out.append(dict(runs[0]))
            continue
        out.append(_merged(dep, runs))
    return out


def _merged(dep: str, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    stacks: dict[str, dict[str, Any]] = {}
    for r in runs:
        for s in r.get("stacks") or []:
            if isinstance(s, Mapping) and s.get("name") is not None:
                stacks.pop(str(s["name"]), None)  # newest last (a re-run's entry wins)
                stacks[str(s["name"])] = dict(s)
    finished = [r for r in runs if r.get("phase") == "finished"]
    first, last = runs[0], runs[-1]
    starts = [str(r["started_at"]) for r in runs if r.get("started_at")]
    ends = [str(r["finished_at"]) for r in finished if r.get("finished_at")]
    merged = dict(last)
    merged.update(
        deployment_id=dep,
        run_id=first.get("run_id"),
        runs=[r.get("run_id") for r in runs],
        phase="finished" if len(finished) == len(runs) else "started",
        started_at=min(starts) if starts else None,
        finished_at=max(ends) if len(finished) == len(runs) and ends else None,
        stacks=list(stacks.values()),
        outcome=_outcome(runs, list(stacks.values())),
    )
    return merged


def _outcome(runs: Sequence[Mapping[str, Any]], stacks: Sequence[Mapping[str, Any]]) -> str:
    if any(r.get("phase") != "finished" for r in runs):
        return "in progress"
    if any(r.get("outcome") == "interrupted" for r in runs):
        return "interrupted"
    ok = [_stack_ok(s) for s in stacks if "result" in s]
    if any(s.get("result") == "drifted" for s in stacks):
        return "drift"
    if all(ok):
        return "success"
    return "partial" if any(ok) else "failed"


def _stack_ok(s: Mapping[str, Any]) -> bool:
    return s.get("result") in OK_RESULTS or s.get("deployed") is True


# -- summary ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StackResult:
    """One stack's result in a deployment that several jobs ran."""

    name: str
    result: str
    ok: bool
    message: str
    run_id: str
    counts: Mapping[str, int] | None = None


@dataclass(frozen=True)
class Summary:
    """A fan-out deployment, put together from its runs' audit records."""

    deployment_id: str
    command: str
    head: str
    runs: tuple[str, ...]
    stacks: tuple[StackResult, ...]
    unfinished: tuple[str, ...] = ()  # runs with a started record only (killed job)
    actors: tuple[str, ...] = field(default=())

    @property
    def failed(self) -> list[StackResult]:
        return [s for s in self.stacks if not s.ok]

    @property
    def exit_code(self) -> int:
        return ExitCode.FAILED if self.failed else ExitCode.OK

    @property
    def outcome(self) -> str:
        if not self.failed:
            return "success"
        return "partial" if len(self.failed) < len(self.stacks) else "failed"


def summarize(records: Iterable[Mapping[str, Any]], deployment: str) -> Summary:
    """Every stack of a deployment with its newest result, from the trail's records.

    A job that started and never finished (killed, timed out) leaves its stacks as
    ``interrupted`` unless a later job (a re-run) finished them.
    """
    runs: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in records:
        if deployment_of(r) != deployment:
            continue
        runs.setdefault(str(r.get("run_id")), {})[str(r.get("phase"))] = r
    if not runs:
        raise UserError(f"--deployment: no run in the audit trail was recorded under "
                        f"deployment {deployment!r} (did the jobs run `apply` or `drift` "
                        "with the same GITOPS_PUSH_DEPLOYMENT_ID / pipeline?)")
    stacks: dict[str, StackResult] = {}
    unfinished: list[str] = []
    command = head = ""
    actors: list[str] = []
    for run_id, phases in runs.items():
        rec = phases.get("finished") or phases.get("started") or {}
        command, head = str(rec.get("command") or command), str(rec.get("head") or head)
        if rec.get("actor") and str(rec["actor"]) not in actors:
            actors.append(str(rec["actor"]))
        if "finished" not in phases:
            unfinished.append(run_id)
        for s in rec.get("stacks") or []:
            if not isinstance(s, Mapping) or s.get("name") is None:
                continue
            name = str(s["name"])
            if "finished" in phases:
                counts = s.get("counts") if isinstance(s.get("counts"), Mapping) else None
                result = StackResult(name, str(s.get("result")), _stack_ok(s),
                                     str(s.get("message") or ""), run_id, counts)
            else:
                result = StackResult(name, "interrupted", False,
                                     "the job started and never finished (killed or timed "
                                     "out); re-run it", run_id)
            stacks.pop(name, None)
            stacks[name] = result
    return Summary(deployment, command, head, tuple(runs), tuple(stacks.values()),
                   tuple(unfinished), tuple(actors))


def summary_markdown(summary: Summary) -> str:
    """One Markdown summary for the whole fan-out (step summary and PR/MR comment)."""
    from gitops_push.output import md_code, md_escape, truncate_markdown

    mark = "✅" if not summary.failed else "❌"
    lines = [f"### gitops-push {md_escape(summary.command or 'deployment')} · "
             f"deployment `{md_escape(summary.deployment_id)}` · `{summary.head[:12]}`", "",
             f"{mark} {len(summary.stacks) - len(summary.failed)} of {len(summary.stacks)} "
             f"stack(s) succeeded in {len(summary.runs)} job(s).", ""]
    if summary.stacks:
        lines += ["| stack | result | add | change | destroy | detail |",
                  "|---|---|--:|--:|--:|---|"]
        for s in sorted(summary.stacks, key=lambda x: (x.ok, x.name)):
            c = s.counts or {}
            lines.append("| " + " | ".join([
                md_code(s.name), ("✅ " if s.ok else "❌ ") + md_escape(s.result),
                *(str(c.get(k, "")) for k in ("add", "change", "destroy")),
                md_escape(s.message[:200])]) + " |")
    if summary.unfinished:
        lines += ["", f"> ⚠️ {len(summary.unfinished)} job(s) started and never finished: "
                      + ", ".join(md_code(r) for r in summary.unfinished[:20])]
    lines.append(f"\n<sub>runs: {', '.join(md_code(r) for r in summary.runs[:50])}"
                 f"{' ...' if len(summary.runs) > 50 else ''}</sub>")
    return truncate_markdown("\n".join(lines) + "\n", 60_000)


def summary_data(summary: Summary) -> dict[str, Any]:
    return {
        "deployment_id": summary.deployment_id, "command": summary.command,
        "head": summary.head, "outcome": summary.outcome, "runs": list(summary.runs),
        "unfinished_runs": list(summary.unfinished),
        "stacks": [{"name": s.name, "result": s.result, "ok": s.ok, "message": s.message,
                    "run_id": s.run_id, "counts": dict(s.counts) if s.counts else None}
                   for s in summary.stacks],
    }


__all__ = ["Summary", "deployment_of", "merge_log", "summarize", "summary_data",
           "summary_markdown"]
