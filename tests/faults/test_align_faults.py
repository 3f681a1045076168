"""Faults in `fusechat align` through the real CLI: kill -9, a full disk, corrupted teacher shards, two runs.

Alignment is deterministic, so a resumed store must hold byte-identical shards (same sha256) as an
uninterrupted run.
"""

from __future__ import annotations

import pytest

from tests.faults.common import (
    claims_complete,
    corrupted_input_case,
    damaged_store_copy,
    full_disk_case,
    fusechat,
    kill_sweep,
    manifest,
    reference_run,
    second_run_refused,
)


def shard_hashes(store):
    return [s["sha256"] for s in manifest(store)["shards"]]


@pytest.fixture(scope="module")
def setup(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("align-faults")

    def cmd(out, pivot=world["pivot_store"]):
        return fusechat("align", "--pivot-store", pivot, "--source-store", world["source_store"], "--out", out)

    ref = root / "reference"
    window = reference_run(cmd(ref), lambda: (ref / "manifest.json").exists(), lambda: claims_complete(ref))
    return {"root": root, "cmd": cmd, "ref": ref, "window": window, "world": world}


def _sweep(setup, kills, seed):
    ref = setup["ref"]

    def same(out):
        assert shard_hashes(out) == shard_hashes(ref)
        assert manifest(out)["coverage"] == manifest(ref)["coverage"]

    return kill_sweep(
        "align", setup["cmd"], lambda o: [o], lambda o: (o / "manifest.json").exists(), setup["window"], same,
        setup["root"] / f"sweep-{seed}", kills, seed,
    )  # fmt: skip
    # Timed, not shard-triggered: most of align's time goes to tokenizers and the vocabulary map before the
    # first shard, and its shards then follow within a fraction of a second (measured: a trigger on shards
    # done put 18 of 20 kills after the end).


def test_kill_9_then_rerun_gives_identical_shards(setup):
    tally = _sweep(setup, kills=2, seed=11)
    assert tally.recovered == 2 and tally.mid_work >= 1


@pytest.mark.slow
def test_kill_9_sweep(setup):
    tally = _sweep(setup, kills=20, seed=1011)
    assert tally.recovered == 20 and tally.mid_work >= 10


def test_full_disk(setup, tmp_path):
    world = setup["world"]
    line = full_disk_case(
        "align", setup["cmd"], tmp_path / "mnt", "100k", [world["pivot_store"], world["source_store"]],
        lambda out: shard_hashes(out) == shard_hashes(setup["ref"]) or pytest.fail("resumed store differs"),
    )  # fmt: skip
    assert "finished parts are kept" in line


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_corrupted_teacher_shard_is_caught_by_name(setup, tmp_path, damage):
    store = tmp_path / "pivot-store"
    victim = damaged_store_copy(setup["world"]["pivot_store"], store, damage, "align")
    out = tmp_path / "out"
    line = corrupted_input_case("align", setup["cmd"](out, pivot=store), victim, lambda p: None, damage)
    assert "checksum" in line
    assert not (out / "manifest.json").exists() or not manifest(out).get("complete")


def test_second_run_on_the_same_output_refuses(setup, tmp_path):
    out = tmp_path / "out"
    second_run_refused("align", setup["cmd"](out), lambda: (out / "manifest.json").exists())
    assert shard_hashes(out) == shard_hashes(setup["ref"])
