"""Run a recipe's stages in order, skipping what is done and redoing what is stale.

Each step has a fingerprint: its settings plus the fingerprints of the steps it reads. `WORKDIR/pipeline.json`
records the planned steps and, for each finished step, the fingerprint it was made with, when it finished and
how long it took; a step whose fingerprint is unchanged and whose output
manifest says `complete` is skipped, a step whose inputs changed is removed and redone, and an unfinished step
is rerun, which for sharded or checkpointed stages resumes where it stopped. Stages are the same functions the
single commands call; this module only wires them together.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fusechat.errors import FusechatError
from fusechat.manifest import atomic_write_json, check_output_dir, fingerprint, locked
from fusechat.run.status import STATE, StepStatus, classify, read_state, step_statuses

log = logging.getLogger(__name__)


@dataclass
class Step:
    """One stage invocation: where it writes, what decides its output, what it reads, how to run it."""

    name: str
    out: Path
    settings: dict
    needs: list[str] = field(default_factory=list)
    run: Callable[[], object] | None = None

    @property
    def stage(self) -> str:
        """The stage whose manifest this step's output holds (the first part of its name)."""
        return self.name.split("/", 1)[0]


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


class Pipeline:
    """An ordered list of steps over one working directory."""

    def __init__(self, workdir: Path, steps: list[Step]):
        self.workdir, self.steps = workdir, steps
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ValueError("step names must be unique")
        for s in steps:
            if not _inside(s.out, workdir):
                raise FusechatError(f"step {s.name}: output {s.out} is outside the working directory {workdir}")
            missing = [n for n in s.needs if n not in names[: names.index(s.name)]]
            if missing:
                raise ValueError(f"step {s.name} needs {missing}, which do not come before it")

    def fingerprints(self) -> dict[str, str]:
        fps: dict[str, str] = {}
        for s in self.steps:
            fps[s.name] = fingerprint({"settings": s.settings, "needs": {n: fps[n] for n in s.needs}})
        return fps

    def status(self) -> list[StepStatus]:
        """Every step's state (complete | partial | stale | missing), size and times."""
        fps = self.fingerprints()
        return step_statuses(self.workdir, [(s.name, s.out, fps[s.name]) for s in self.steps])

    def run(self, echo: Callable[[str], None] = print) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with locked(self.workdir):
            # Before the first step: every folder the plan will write must be its step's own output or empty, so a
            # user's folder in the way stops the run now, not after the teacher passes and the training.
            for s in self.steps:
                check_output_dir(s.out, s.stage, option="workdir in the recipe (or move that folder away)")
            record = read_state(self.workdir)
            done: dict[str, dict] = record["done"]
            fps = self.fingerprints()
            # The plan goes in first, so that `fusechat status RUN_DIR` can tell every step's state from the
            # run directory alone (no recipe, no model loaded), even while this run is under way or was killed.
            record["steps"] = [
                {"name": s.name, "out": _relative(s.out, self.workdir), "needs": s.needs, "fingerprint": fps[s.name]}
                for s in self.steps
            ]
            atomic_write_json(self.workdir / STATE, record)
            started = time.monotonic()
            for i, s in enumerate(self.steps, 1):
                fp = fps[s.name]
                head = f"[{i}/{len(self.steps)}] {s.name}"
                state = classify(s.out, fp, done.get(s.name))
                if state == "complete":
                    echo(f"{head}: up to date -> {s.out}")
                    continue
                if state == "stale":
                    echo(f"{head}: inputs changed, redoing")
                    _remove_own(s)
                # Recorded before the step runs: if this run is killed and the recipe then changes, the partial
                # output is known to be this pipeline's, made with other settings (stale), and is redone.
                done[s.name] = {"fingerprint": fp}
                atomic_write_json(self.workdir / STATE, record)
                t0 = time.monotonic()
                echo(f"{head}: running (elapsed {_clock(t0 - started)})")
                if s.run is not None:
                    s.run()
                seconds = time.monotonic() - t0
                done[s.name] = {"fingerprint": fp, "finished": _now(), "seconds": round(seconds, 3)}
                atomic_write_json(self.workdir / STATE, record)
                echo(f"{head}: done in {_clock(seconds)} -> {s.out}")


def _remove_own(step: Step) -> None:
    """Delete a stale step's output, only if it is that step's own (its manifest) or holds nothing else."""
    check_output_dir(step.out, step.stage, option="workdir in the recipe (or move that folder away)")
    if step.out.exists():
        shutil.rmtree(step.out)


def _relative(path: Path, root: Path) -> str:
    return str(path.resolve().relative_to(root.resolve()))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
