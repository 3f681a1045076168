"""Shared machinery of the fault suite: the real CLI as a subprocess, kills at seeded moments, a tiny tmpfs.

The inputs are built once (fixtures in conftest.py), each stage's row in stages.py says how to run it, and
test_stage_faults.py asks every row the same questions through these helpers: does a rerun after kill -9 give
the uninterrupted run's output, does any directory claim `complete` while a file it lists is missing or
damaged, does a second run refuse, does a full disk end in one line. Outcomes are appended to `FAULTS_LOG`
(JSON lines) when that variable is set, which is where the figures in docs/reliability.md come from.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fusechat.verify import verify

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
TIMEOUT = 600


def fusechat(*args: object) -> list[str]:
    return [sys.executable, "-m", "fusechat", *map(str, args)]


def run(cmd: list[str], timeout: float = TIMEOUT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env or ENV, capture_output=True, text=True, timeout=timeout)


def manifest(directory: Path) -> dict:
    try:
        return json.loads((directory / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def claims_complete(directory: Path) -> bool:
    return manifest(directory).get("complete") is True


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("fusechat ") and ": error: " in line]


def assert_one_clear_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, exactly one `fusechat CMD: error:` line, no traceback; the line contains every needle."""
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = error_lines(done.stderr)
    assert len(lines) == 1, done.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def no_false_complete(directories: list[Path]) -> None:
    """No directory may say `complete` while `fusechat verify` finds a file missing, short or changed."""
    for d in directories:
        if d.is_dir() and claims_complete(d):
            assert verify(d) == [], f"{d} claims complete but: {verify(d)}"


def record(event: str, stage: str, **fields: object) -> None:
    """Append one outcome to $FAULTS_LOG (for the reliability figures); a no-op when it is unset."""
    path = os.environ.get("FAULTS_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"event": event, "stage": stage, **fields}) + "\n")


@dataclass
class KillTally:
    """Where the kills of one stage landed and whether every rerun recovered."""

    stage: str
    before_output: int = 0
    mid_work: int = 0
    after_complete: int = 0
    recovered: int = 0
    delays: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.before_output + self.mid_work + self.after_complete

    def save(self) -> None:
        record("kill-summary", self.stage, **{k: v for k, v in vars(self).items() if k != "stage"})


def wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, timeout: float = TIMEOUT) -> bool:
    """Poll `predicate` until it holds or `proc` exits; True if it held while `proc` still ran."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return proc.poll() is None
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("timed out waiting for the stage to start writing")


def kill_sweep(
    stage: str,
    cmd: Callable[[Path], list[str]],
    outs: Callable[[Path], list[Path]],
    started: Callable[[Path], bool],
    window: float,
    check_same: Callable[[Path], None],
    root: Path,
    kills: int,
    seed: int,
    done: Callable[[Path], bool] = claims_complete,
    progress: Callable[[Path], int] | None = None,
    units: int = 1,
) -> KillTally:
    """Kill `kills` runs of `cmd` with SIGKILL and rerun each to completion.

    Each run is killed a seeded random delay in [0, window) seconds after `started(out)` first holds (the stage
    has begun writing), so most kills land mid-work. With `progress` (units of work the output shows done:
    shards, checkpoints, steps) and `units`, each run is instead killed a random fraction of one unit's time
    after a random number of units are done, which spreads the kills over the whole run whatever the load on
    the machine (a timed delay alone lands after the end whenever the machine is faster than it was for the
    reference run). After the kill no output may claim `complete` while it is
    damaged; the rerun must exit 0, and `check_same(out)` compares its result with the uninterrupted run's.
    """
    rng = random.Random(seed)
    tally = KillTally(stage)
    for trial in range(kills):
        out = root / f"{stage}-killed-{trial}"
        at = rng.randrange(units) if progress is not None else 0
        delay = rng.uniform(0.0, window / units if progress is not None else window)
        proc = subprocess.Popen(cmd(out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ready = (lambda o=out, a=at: started(o) and progress(o) >= a) if progress else (lambda o=out: started(o))
            if wait_for(ready, proc):
                time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if done(out):
            tally.after_complete += 1
        elif started(out):
            tally.mid_work += 1
        else:
            tally.before_output += 1
        tally.delays.append(round(delay, 3))
        no_false_complete(outs(out))
        if not done(out):  # a finished output has nothing to recover (and `merge` refuses an existing OUT)
            again = run(cmd(out))
            assert again.returncode == 0, again.stderr[-3000:]
            no_false_complete(outs(out))
            leftovers = [p for d in outs(out) if d.is_dir() for p in d.glob(".*.tmp") if p.is_file()]
            assert not leftovers, f"temporary files of the killed run survived the rerun: {leftovers}"
        check_same(out)
        tally.recovered += 1
    tally.save()
    return tally


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "300k") mounted at `path`; skips the test where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def grow_disk(path: Path, size: str) -> None:
    """Give the tmpfs at `path` more room (the 'free space and rerun' half of a full-disk case)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)


def tree_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under `directory`: proof that a failed run left its inputs alone."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*")}


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def flip_bit(path: Path, where: float = 0.5) -> None:
    """Flip one bit in the middle of the file's data (not its header): the file usually still parses."""
    data = bytearray(path.read_bytes())
    i = int(len(data) * where)
    data[i] ^= 0x10
    path.write_bytes(bytes(data))


def damaged_store_copy(store: Path, copy: Path, damage: str, stage: str) -> Path:
    """Copy a top-k store to `copy`, damage its second shard ("truncated" or "bit-flipped"), record whether the
    damaged file still parses as Parquet (what the checksum is there for), and return the damaged shard."""
    import shutil

    import pyarrow.parquet as pq

    shutil.copytree(store, copy)
    victim = copy / manifest(copy)["shards"][1]["file"]
    (truncate if damage == "truncated" else flip_bit)(victim)
    try:
        pq.read_table(victim)
        parses = True
    except Exception:  # noqa: BLE001 (any failure of the Parquet reader counts)
        parses = False
    record("corruption-parses", stage, kind=damage, parses_as_parquet=parses)
    return victim


def reference_run(cmd: list[str], started: Callable[[], bool], finished: Callable[[], bool] | None = None) -> float:
    """Run `cmd` uninterrupted; return the kill window: from `started()` first holding until `finished()` does
    (the output is whole; by default, until the process exits)."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    seen = time.monotonic() if wait_for(started, proc) else t0
    end = None
    while finished is not None and proc.poll() is None:
        if finished():
            end = time.monotonic()
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err[-3000:]
    return max((end or time.monotonic()) - seen, 0.05)


def second_run_refused(stage: str, cmd: list[str], started: Callable[[], bool]) -> str:
    """Start `cmd`, freeze it (SIGSTOP) once it writes, run the same command again, then let the first finish.

    Freezing the first run makes the overlap certain instead of a race between start-up times; the frozen
    process still holds its lock, as a slow real run would. The second must refuse with one clear line.
    """
    first = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(started, first), "the first run finished before it could be overlapped"
        first.send_signal(signal.SIGSTOP)
        second = run(cmd)
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=TIMEOUT)
    assert first.returncode == 0, err[-3000:]
    line = assert_one_clear_error(second, "another fusechat run")
    record("concurrent", stage, refused=True)
    return line


def full_disk_case(
    stage: str,
    cmd: Callable[[Path], list[str]],
    mount: Path,
    small: str,
    inputs: list[Path],
    check_same: Callable[[Path], None],
    leftovers: Callable[[Path], list[Path]] = lambda out: [],
    kept_whole: Callable[[Path], None] = lambda out: None,
) -> str:
    """Run into a full tmpfs: one clear line, exit 2, nothing claims complete, inputs untouched, and what the run
    keeps is whole (`kept_whole(out)`); then with room again the same command completes and matches the
    uninterrupted run."""
    before = [snapshot(d) for d in inputs]
    with small_disk(mount, small):
        out = mount / f"{stage}-out"
        done = run(cmd(out))
        line = assert_one_clear_error(done, "disk is full")
        no_false_complete([out, *leftovers(out)])
        assert not claims_complete(out)
        kept_whole(out)
        assert [snapshot(d) for d in inputs] == before, "a failed run changed its inputs"
        grow_disk(mount, "64m")
        again = run(cmd(out))
        assert again.returncode == 0, again.stderr[-3000:]
        check_same(out)
        assert verify(out) == []
    record("full-disk", stage, recovered=True)
    return line


def corrupted_input_case(stage: str, cmd: list[str], victim: Path, damage: Callable[[Path], None], kind: str) -> str:
    """Damage `victim` (a copy the test owns), run `cmd`: exit 2 and one line naming the file."""
    damage(victim)
    done = run(cmd)
    line = assert_one_clear_error(done, victim.name)
    record("corruption", stage, kind=kind, file=victim.suffix, detected=True)
    return line
