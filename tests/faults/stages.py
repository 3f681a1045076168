"""The fault suite's table of stages: one row per command, with its shortest real command line (commands.py) and
the facts about its output that the shared fault checks need.

The checks themselves are written once (test_stage_faults.py: interrupted runs, a full disk, damaged inputs, two
runs at once, a damaged shard of its own; test_bad_out_cli.py: output directories a stage cannot or must not
use) and asked of every row that has the fact they need; a new stage is one row here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from fusechat.verify import verify
from tests.faults.commands import (
    STEPS,
    align_command,
    evaluate_command,
    fuse_command,
    merge_command,
    merge_config,
    prepare_command,
    run_command,
    teach_command,
    train_command,
)
from tests.faults.common import claims_complete, fusechat, manifest, record, reference_run, run


# ---------------------------------------------------------------- what a stage's output looks like
def partials(out: Path) -> list[Path]:
    """A merge builds OUT in a hidden `.OUT.partial-PID` beside it and renames it when whole."""
    return sorted(out.parent.glob(f".{out.name}.partial-*"))


def shard_hashes(store: Path) -> list[str]:
    return [s["sha256"] for s in manifest(store)["shards"]]


def shards_done(store: Path) -> int:
    return sum(1 for p in store.glob("shard-*.json") if not p.name.endswith(".stats.json"))


def _has_manifest(out: Path) -> bool:
    return (out / "manifest.json").exists()


def _same_store(*keys: str) -> Callable[[Path, Path], None]:
    """Deterministic stores: a resumed one holds byte-identical shards (same sha256) and the same summary."""

    def same(ref: Path, out: Path) -> None:
        assert shard_hashes(out) == shard_hashes(ref), "the resumed store differs"
        for key in keys:
            assert manifest(out)[key] == manifest(ref)[key], key

    return same


def _same_merge(ref: Path, out: Path) -> None:
    """A merge is deterministic (DARE's masks come from the seed): byte-identical safetensors."""
    assert manifest(out)["files"] == manifest(ref)["files"]
    assert not partials(out), "a killed merge's partial directory was left behind"


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in b)


def _same_weights(ref: Path, out: Path) -> None:
    """Training resumes from the Trainer's newest whole checkpoint: the same weights within float tolerance
    (whether they are also bitwise equal is recorded for docs/reliability.md)."""
    got, want = load_file(out / "model.safetensors"), load_file(ref / "model.safetensors")
    worst = _max_diff(got, want)
    assert worst <= 1e-5, f"resumed weights differ from the uninterrupted run's by {worst}"
    record("train-resume", "train", max_abs_diff=worst, bitwise=worst == 0.0)
    assert manifest(out)["steps"] == STEPS and not (out / "checkpoints").exists()


def run_outputs(workdir: Path) -> dict[str, Path]:
    """Every step output of a run (directories holding a manifest), by path relative to the run."""
    return {str(m.parent.relative_to(workdir)): m.parent for m in sorted(workdir.rglob("manifest.json"))}


def _same_run(ref: Path, out: Path) -> None:
    """Byte-identical stores (prepare, teach, align, fuse are deterministic), checkpoints within tolerance."""
    want, got = run_outputs(ref), run_outputs(out)
    assert got.keys() == want.keys()
    worst = 0.0
    for name, ref_dir in want.items():
        a, b = manifest(got[name]), manifest(ref_dir)
        if isinstance(b.get("shards"), list):
            assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]], name
        for f in b.get("files", {}):
            if f.endswith(".safetensors"):
                worst = max(worst, _max_diff(load_file(got[name] / f), load_file(ref_dir / f)))
    assert worst <= 1e-5, f"resumed checkpoints differ by {worst}"
    record("run-resume", "run", max_abs_diff=worst)


def _run_started(out: Path) -> bool:
    return (out / "pipeline.json").exists()


def _run_outputs_truthful(out: Path) -> list[Path]:
    """After a kill `fusechat status` works, and no step it calls complete fails `fusechat verify`."""
    if _run_started(out):
        done = run(fusechat("status", out))
        assert done.returncode == 0, done.stderr
        for line in done.stdout.splitlines()[1:-1]:
            state, step_out = line.split()[0], line.split()[-1]
            assert state != "complete" or verify(step_out) == [], (line, verify(step_out))
    return list(run_outputs(out).values()) if out.exists() else []


def _run_steps_done(out: Path) -> int:
    try:
        return len(json.loads((out / "pipeline.json").read_text())["done"])
    except (OSError, ValueError, KeyError):
        return 0


# ---------------------------------------------------------------- damaged inputs
def _store_copy(key: str, arg: str, shard: int) -> Callable[..., tuple[dict, Path]]:
    """Copy the world's store `key` (the command's input `arg`); its shard number `shard` is the victim."""

    def copy(world: dict, reference: Callable, tmp: Path) -> tuple[dict, Path]:
        store = shutil.copytree(world[key], tmp / key)
        return {arg: store}, store / manifest(store)["shards"][shard]["file"]

    return copy


def _checkpoint_copy(reference: Callable, tmp: Path) -> tuple[Path, Path]:
    """A fusechat checkpoint (the reference merge) copied, and its fourth file, the victim."""
    ckpt = shutil.copytree(reference("merge"), tmp / "ckpt")
    return ckpt, ckpt / sorted(manifest(ckpt)["files"])[3]


def _merge_of_damaged(world: dict, reference: Callable, tmp: Path) -> tuple[dict, Path]:
    ckpt, victim = _checkpoint_copy(reference, tmp)
    base, *models = world["merge_inputs"]
    return {"config": merge_config(tmp / "m.yml", base, [ckpt, models[0]])}, victim


def _evaluate_of_damaged(world: dict, reference: Callable, tmp: Path) -> tuple[dict, Path]:
    ckpt, victim = _checkpoint_copy(reference, tmp)
    return {"models": f"c={ckpt}"}, victim


def _conversations_copy(world: dict, reference: Callable, tmp: Path) -> tuple[dict, Path]:
    """Conversations as `fusechat prepare` writes them (with their checksums): the prepare stage's reference."""
    conv = shutil.copytree(reference("prepare"), tmp / "conv")
    return {"conversations": conv}, conv / "conversations.parquet"


def _repair_targets(world: dict, inputs: dict, victim: Path, kind: str) -> None:
    """The documented repair: delete the damaged shard and rerun the stage that wrote the store."""
    victim.unlink()
    store = inputs["targets"]
    repaired = run(fuse_command(world, store))
    assert repaired.returncode == 0, repaired.stderr[-2000:]
    assert manifest(store)["shards"] == manifest(world["fused"])["shards"] and verify(store) == []
    record("repair", "fuse", kind=kind, repaired=True)


def _conversations_reported(world: dict, inputs: dict, victim: Path, kind: str) -> None:
    assert verify(inputs["conversations"]), "verify must report the damaged conversations file"


def decoding_flip(path: Path) -> int:
    """Flip single bits through a Parquet file until one still decodes, to other text; return how many were tried.

    zstd pages carry no checksum that pyarrow checks, so such flips exist (116 of 300 in the issue's sweep)."""
    original = pq.read_table(path).column("text").to_pylist()
    clean = path.read_bytes()
    for tried, i in enumerate(range(len(clean) // 8, len(clean) * 7 // 8, 7), 1):
        data = bytearray(clean)
        data[i] ^= 0x04
        path.write_bytes(bytes(data))
        try:
            texts = pq.read_table(path).column("text").to_pylist()
        except Exception:  # noqa: BLE001 (any failure of the decoder: not the case we look for)
            continue
        if texts != original:
            return tried
    raise AssertionError("no single-bit flip decoded to other text")


@dataclass(frozen=True)
class Damaged:
    """An input of the stage to damage: `copy(world, reference, tmp)` gives the command's inputs and the file
    to damage; the one error line must name that file and say one of `says`; `then` checks more afterwards."""

    copy: Callable[..., tuple[dict, Path]]
    says: tuple[str, ...] = ("checksum",)
    kinds: tuple[str, ...] = ("truncated", "bit-flipped")
    then: Callable[[dict, dict, Path, str], None] | None = None
    flip: Callable[[Path], Any] | None = None  # a bit flip of its own kind (default: one bit mid-file)


# ---------------------------------------------------------------- the table
@dataclass(frozen=True)
class Stage:
    """One row: a stage and what the checks must know of it; a check asks only the rows that have its fact."""

    name: str
    command: Callable[..., list[str]]  # (world, out, **inputs): the shortest real command writing `out`
    started: Callable[[Path], bool] = _has_manifest  # it has begun writing `out`
    finished: Callable[[Path], bool] = claims_complete  # `out` is whole
    outputs: Callable[[Path], list[Path]] = lambda out: [out]  # what a killed run may have left
    same: Callable[[Path, Path], None] | None = None  # (reference, out): a rerun gave the uninterrupted output
    progress: Callable[[Path], int] | None = None  # units of work its output shows done (kills spread over them)
    units: Callable[[Path], int] | None = None  # how many units the reference has
    kills: tuple[int, int, int] = (0, 0, 0)  # the default test's (kills, seed, how many must land mid-work)
    sweep: tuple[int, int, int] = (0, 0, 0)  # the slow sweep's
    disk: str | None = None  # a tmpfs too small for its output
    disk_inputs: tuple[str, ...] = ()  # the world's inputs a run that fills the disk must leave alone
    disk_says: tuple[str, ...] = ("finished parts are kept",)
    sharded: bool = False  # a resumable store of checksummed shards (store/output.py)
    damaged: Damaged | None = None
    other: Callable[[dict], dict] | None = None  # (world): inputs that change its settings (an --out of others)
    slow: tuple[str, ...] = ()  # the checks that are slow for this stage (marked `slow`)


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("prepare", prepare_command, other=lambda w: {"max_length": 512}),
        Stage(
            "teach",
            teach_command,
            same=_same_store(),
            progress=shards_done,
            units=lambda ref: manifest(ref)["n_shards"],
            kills=(2, 7, 1),
            sweep=(20, 1007, 15),
            disk="40k",
            disk_inputs=("pivot", "conv"),
            sharded=True,
            damaged=Damaged(
                _conversations_copy, ("checksum", "rerun"), then=_conversations_reported, flip=decoding_flip
            ),
            other=lambda w: {"top_k": 3},
        ),
        Stage(
            # Timed kills, not shard-triggered: most of align's time goes to tokenizers and the vocabulary map
            # before the first shard, and its shards then follow within a fraction of a second.
            "align",
            align_command,
            same=_same_store("coverage"),
            kills=(2, 11, 1),
            sweep=(20, 1011, 10),
            disk="100k",
            disk_inputs=("pivot_store", "source_store"),
            sharded=True,
            damaged=Damaged(_store_copy("pivot_store", "pivot_store", 1)),
            other=lambda w: {"vocab_map": "prefix"},
        ),
        Stage(
            "fuse",
            fuse_command,
            same=_same_store("selection"),
            progress=shards_done,
            units=lambda ref: manifest(ref)["n_shards"],
            kills=(2, 21, 1),
            sweep=(20, 1021, 15),
            disk="80k",
            disk_inputs=("pivot_store", "aligned"),
            sharded=True,
            damaged=Damaged(_store_copy("aligned", "aligned", 1)),
            other=lambda w: {"method": "avgce"},
        ),
        Stage(
            "train",
            train_command,
            started=lambda out: (out / "checkpoints").exists(),
            same=_same_weights,
            progress=lambda out: len(list((out / "checkpoints").glob("checkpoint-*"))),
            units=lambda ref: STEPS // 2,
            kills=(1, 41, 0),
            sweep=(20, 1041, 15),
            disk="600k",
            disk_inputs=("fused", "pivot"),
            damaged=Damaged(_store_copy("fused", "targets", 2), then=_repair_targets),
            other=lambda w: {"seed": 1},
            slow=("second-run",),  # two training runs; the lock is the one align, fuse and merge show by default
        ),
        Stage(
            # A merge starts over after a failure (its partial directory is removed): its line must not promise
            # a resume.
            "merge",
            merge_command,
            started=lambda out: bool(partials(out)) or out.exists(),
            finished=Path.exists,
            outputs=lambda out: [out, *partials(out)],
            same=_same_merge,
            progress=lambda out: sum(len(list(p.glob("*.safetensors"))) for p in partials(out)),
            units=lambda ref: sum(f.endswith(".safetensors") for f in manifest(ref)["files"]),
            kills=(2, 31, 1),
            sweep=(20, 1031, 15),
            disk="6m",
            disk_inputs=("merge_inputs",),
            disk_says=("starts over",),
            damaged=Damaged(_merge_of_damaged, ("checksum", "truncated")),
        ),
        Stage(
            "evaluate",
            evaluate_command,
            damaged=Damaged(_evaluate_of_damaged, ()),
            other=lambda w: {"models": f"s={w['source']}"},
        ),
        Stage(
            "run",
            run_command,
            started=_run_started,
            finished=lambda out: claims_complete(out / "report"),
            outputs=_run_outputs_truthful,
            same=_same_run,
            progress=_run_steps_done,
            units=lambda ref: len(json.loads((ref / "pipeline.json").read_text())["steps"]),
            kills=(1, 51, 0),
            sweep=(10, 1051, 8),
            slow=("kill", "second-run"),  # a whole recipe per run
        ),
    )
}


def stages(check: str, has: Callable[[Stage], Any] = lambda s: True) -> list:
    """The rows a check applies to (`has` holds), as pytest parameters; marked slow where the row says so."""
    return [
        pytest.param(s, id=s.name, marks=pytest.mark.slow if check in s.slow else ()) for s in STAGES.values() if has(s)
    ]


class References:
    """Each stage's uninterrupted run, made once per session on first use: its output and its kill window."""

    def __init__(self, world: dict, root: Path) -> None:
        self.world, self.root, self.made = world, root, {}

    def window(self, stage: Stage) -> float:
        return self._make(stage)[1]

    def __call__(self, name: str) -> Path:
        return self._make(STAGES[name])[0]

    def _make(self, stage: Stage) -> tuple[Path, float]:
        if stage.name not in self.made:
            ref = self.root / stage.name
            cmd = stage.command(self.world, ref)
            self.made[stage.name] = ref, reference_run(cmd, lambda: stage.started(ref), lambda: stage.finished(ref))
        return self.made[stage.name]
