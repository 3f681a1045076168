"""Run a recipe's stages in order, skipping what is done and redoing what is stale.

Each step has a fingerprint: its settings plus the fingerprints of the steps it reads. `WORKDIR/pipeline.json`
records the fingerprint each finished step was made with; a step whose fingerprint is unchanged and whose output
manifest says `complete` is skipped, a step whose inputs changed is removed and redone, and an unfinished step
is rerun, which for sharded or checkpointed stages resumes where it stopped. Stages are the same functions the
single commands call; this module only wires them together.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fusechat.errors import FusechatError
from fusechat.manifest import MANIFEST, atomic_write_json, fingerprint, locked

log = logging.getLogger(__name__)
STATE = "pipeline.json"


@dataclass
class Step:
    """One stage invocation: where it writes, what decides its output, what it reads, how to run it."""

    name: str
    out: Path
    settings: dict
    needs: list[str] = field(default_factory=list)
    run: Callable[[], object] | None = None


def _complete(out: Path) -> bool:
    try:
        return json.loads((out / MANIFEST).read_text()).get("complete") is True
    except (OSError, json.JSONDecodeError):
        return False


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

    def status(self) -> list[tuple[str, str, Path]]:
        """(step, done | stale | partial | todo, output) for every step."""
        state = self._state()
        rows = []
        for s, fp in zip(self.steps, self.fingerprints().values(), strict=True):
            if state.get(s.name) == fp and _complete(s.out):
                status = "done"
            elif s.out.exists() and state.get(s.name) not in (None, fp):
                status = "stale"
            elif s.out.exists():
                status = "partial"
            else:
                status = "todo"
            rows.append((s.name, status, s.out))
        return rows

    def _state(self) -> dict[str, str]:
        path = self.workdir / STATE
        return json.loads(path.read_text()) if path.is_file() else {}

    def run(self, echo: Callable[[str], None] = print) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with locked(self.workdir):
            state = self._state()
            fps = self.fingerprints()
            started = time.monotonic()
            for i, s in enumerate(self.steps, 1):
                fp = fps[s.name]
                head = f"[{i}/{len(self.steps)}] {s.name}"
                if state.get(s.name) == fp and _complete(s.out):
                    echo(f"{head}: up to date -> {s.out}")
                    continue
                if s.out.exists() and state.get(s.name) not in (None, fp):
                    echo(f"{head}: inputs changed, redoing")
                    shutil.rmtree(s.out)
                state.pop(s.name, None)
                atomic_write_json(self.workdir / STATE, state)
                t0 = time.monotonic()
                echo(f"{head}: running (elapsed {_clock(t0 - started)})")
                if s.run is not None:
                    s.run()
                state[s.name] = fp
                atomic_write_json(self.workdir / STATE, state)
                echo(f"{head}: done in {_clock(time.monotonic() - t0)} -> {s.out}")


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
