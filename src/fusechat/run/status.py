"""`fusechat status`: where a run stands, read from its run directory alone (no recipe needed, no model loaded).

A fusion run is hours to days of stages; after a crash or on a shared cluster the first question is which
steps are finished, which were cut off, which are out of date, and how long the finished ones took. The answer
comes from `WORKDIR/pipeline.json` (the plan and each finished step's fingerprint, end time and duration) and
each step's output manifest; nothing is hashed or loaded, so it is instant on a 70B run. This module owns that
state file and the one definition of a step's state, which the pipeline uses to decide what to skip or redo.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fusechat.errors import FusechatError
from fusechat.manifest import MANIFEST

STATES = ("complete", "partial", "stale", "missing")
STATE = "pipeline.json"
STATE_FORMAT = "fusechat.pipeline-state"


@dataclass
class StepStatus:
    """One step's state, output, size on disk, and when it finished and how long it took (when known)."""

    name: str
    state: str
    out: Path
    bytes: int
    finished: str | None
    seconds: float | None


def classify(out: Path, planned: str, done: dict | None) -> str:
    """complete | stale | partial | missing for an output made (or not) with `done` and planned as `planned`."""
    recorded = (done or {}).get("fingerprint")
    if recorded == planned and _complete(out):
        return "complete"
    if out.exists() and recorded not in (None, planned):
        return "stale"
    return "partial" if out.exists() else "missing"


def _complete(out: Path) -> bool:
    try:
        return json.loads((out / MANIFEST).read_text()).get("complete") is True
    except (OSError, json.JSONDecodeError):
        return False


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def step_statuses(workdir: Path, planned: list[tuple[str, Path, str]]) -> list[StepStatus]:
    """The status of each (name, output, planned fingerprint) against what `workdir`'s state file recorded."""
    done = read_state(workdir)["done"]
    rows = []
    for name, out, fp in planned:
        d = done.get(name) or {}
        state = classify(out, fp, d)
        finished = d.get("finished")
        if finished is None and state == "complete":  # recorded by an older fusechat: the manifest's time
            finished = datetime.fromtimestamp((out / MANIFEST).stat().st_mtime, UTC).isoformat(timespec="seconds")
        seconds = d.get("seconds") if state in ("complete", "stale") else None
        rows.append(StepStatus(name, state, out, _size(out), finished if state != "missing" else None, seconds))
    return rows


def run_dir_statuses(workdir: str | Path) -> list[StepStatus]:
    """Statuses from a run directory alone, using the plan the last `fusechat run` recorded there."""
    workdir = Path(workdir)
    if not (workdir / STATE).is_file():
        raise FusechatError(
            f"{workdir}: no {STATE}; give a run directory that `fusechat run` has started, or the recipe file"
        )
    steps = read_state(workdir)["steps"]
    if not steps:
        raise FusechatError(
            f"{workdir / STATE}: written by an older fusechat, it holds no plan; run `fusechat status RECIPE.yaml` "
            "(or rerun the recipe once)"
        )
    return step_statuses(workdir, [(s["name"], workdir / s["out"], s["fingerprint"]) for s in steps])


def read_state(workdir: Path) -> dict:
    """`WORKDIR/pipeline.json`: the planned steps and, per finished step, its fingerprint, end time, duration.

    A file from before the plan was recorded (a flat {step: fingerprint} map) is read as finished steps only.
    """
    path = Path(workdir) / STATE
    if not path.is_file():
        return {"format": STATE_FORMAT, "steps": [], "done": {}}
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FusechatError(f"{path}: not valid JSON ({e}); remove it and rerun the recipe to rebuild it") from None
    if body.get("format") != STATE_FORMAT:  # the flat layout of older runs
        return {"format": STATE_FORMAT, "steps": [], "done": {k: {"fingerprint": v} for k, v in body.items()}}
    body.setdefault("steps", [])
    body.setdefault("done", {})
    return body


def human_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def format_table(rows: list[StepStatus]) -> str:
    """One line per step, then a count per state."""
    width = max([len(r.name) for r in rows] + [4])
    lines = [f"{'state':9s} {'step':{width}s} {'size':>9s}  {'finished':25s} {'took':>9s}  output"]
    for r in rows:
        finished = r.finished or "-"
        lines.append(
            f"{r.state:9s} {r.name:{width}s} {human_bytes(r.bytes):>9s}  {finished:25s} {_duration(r.seconds):>9s}"
            f"  {r.out}"
        )
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no steps")
    return "\n".join(lines)
