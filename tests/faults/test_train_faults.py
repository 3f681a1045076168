"""Faults in `fusechat train` through the real CLI: kill -9, a full disk, corrupted targets, two runs.

Training checkpoints every other step here, so a kill resumes from the Trainer's newest whole checkpoint (a
checkpoint cut off while being saved is discarded). The resumed weights are compared with an uninterrupted
run's within float tolerance; whether they are also bitwise equal is recorded for the figures.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from fusechat.verify import verify
from tests.faults.common import (
    claims_complete,
    corrupted_input_case,
    flip_bit,
    full_disk_case,
    fusechat,
    kill_sweep,
    manifest,
    record,
    reference_run,
    run,
    second_run_refused,
    truncate,
)

STEPS = 24


@pytest.fixture(scope="module")
def setup(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("train-faults")

    def cmd(out, targets=world["fused"]):
        return fusechat(
            "train", "--pivot", world["pivot"], "--targets", targets, "--out", out, "--max-steps", STEPS,
            "--batch-size", 2, "--save-steps", 2, "--seed", 0, "--lr", "1e-3", "--report-to", "none",
            "--max-length", 256,
        )  # fmt: skip

    ref = root / "reference"
    window = reference_run(cmd(ref), lambda: (ref / "checkpoints").exists(), lambda: claims_complete(ref))
    return {"root": root, "cmd": cmd, "ref": ref, "window": window, "world": world}


def same_weights(setup):
    want = load_file(setup["ref"] / "model.safetensors")

    def check(out):
        got = load_file(out / "model.safetensors")
        assert got.keys() == want.keys()
        worst = max(float((got[k] - want[k]).abs().max()) for k in want)
        assert worst <= 1e-5, f"resumed weights differ from the uninterrupted run's by {worst}"
        bitwise = all(torch.equal(got[k], want[k]) for k in want)
        record("train-resume", "train", max_abs_diff=worst, bitwise=bitwise)
        assert manifest(out)["steps"] == STEPS and not (out / "checkpoints").exists()

    return check


def _sweep(setup, kills, seed):
    return kill_sweep(
        "train", setup["cmd"], lambda o: [o], lambda o: (o / "checkpoints").exists(), setup["window"],
        same_weights(setup), setup["root"] / f"sweep-{seed}", kills, seed,
        progress=lambda o: len(list((o / "checkpoints").glob("checkpoint-*"))), units=STEPS // 2,
    )  # fmt: skip


def test_kill_9_then_rerun_resumes_to_the_same_weights(setup):
    tally = _sweep(setup, kills=1, seed=41)
    assert tally.recovered == 1


@pytest.mark.slow
def test_kill_9_sweep(setup):
    tally = _sweep(setup, kills=20, seed=1041)
    assert tally.recovered == 20 and tally.mid_work >= 15


def test_full_disk(setup, tmp_path):
    full_disk_case(
        "train", setup["cmd"], tmp_path / "mnt", "600k", [setup["world"]["fused"], setup["world"]["pivot"]],
        same_weights(setup),
    )  # fmt: skip


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_corrupted_targets_shard_is_caught_by_name(setup, tmp_path, damage):
    store = tmp_path / "targets"
    shutil.copytree(setup["world"]["fused"], store)
    victim = store / manifest(store)["shards"][2]["file"]
    out = tmp_path / "out"
    line = corrupted_input_case("train", setup["cmd"](out, targets=store), victim,
                                truncate if damage == "truncated" else flip_bit, damage)  # fmt: skip
    assert "checksum" in line and not (out / "checkpoints").exists()
    # The documented repair: delete the damaged shard and rerun the stage that wrote the store.
    victim.unlink()
    world = setup["world"]
    repaired = run(fusechat("fuse", "--pivot-store", world["pivot_store"], "--aligned", world["aligned"],
                            "--out", store))  # fmt: skip
    assert repaired.returncode == 0, repaired.stderr[-2000:]
    assert manifest(store)["shards"] == manifest(world["fused"])["shards"] and verify(store) == []
    record("repair", "fuse", kind=damage, repaired=True)


@pytest.mark.slow  # two training runs; the lock itself is the one align, fuse and merge show by default
def test_second_run_on_the_same_output_refuses(setup, tmp_path):
    out = tmp_path / "out"
    second_run_refused("train", setup["cmd"](out), lambda: (out / "manifest.json").exists())
    same_weights(setup)(out)
