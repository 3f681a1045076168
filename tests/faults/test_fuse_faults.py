"""Faults in `fusechat fuse` through the real CLI: kill -9, a full disk, corrupted aligned shards, two runs.

Fusion is deterministic, so a resumed store must hold byte-identical shards (same sha256) as an
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


def shards_done(store):
    return sum(1 for p in store.glob("shard-*.json") if not p.name.endswith(".stats.json"))


def shard_hashes(store):
    return [s["sha256"] for s in manifest(store)["shards"]]


@pytest.fixture(scope="module")
def setup(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuse-faults")

    def cmd(out, aligned=world["aligned"]):
        return fusechat("fuse", "--pivot-store", world["pivot_store"], "--aligned", aligned, "--out", out)

    ref = root / "reference"
    window = reference_run(cmd(ref), lambda: (ref / "manifest.json").exists(), lambda: claims_complete(ref))
    return {"root": root, "cmd": cmd, "ref": ref, "window": window, "world": world}


def _sweep(setup, kills, seed):
    ref = setup["ref"]

    def same(out):
        assert shard_hashes(out) == shard_hashes(ref)
        assert manifest(out)["selection"] == manifest(ref)["selection"]

    return kill_sweep(
        "fuse", setup["cmd"], lambda o: [o], lambda o: (o / "manifest.json").exists(), setup["window"], same,
        setup["root"] / f"sweep-{seed}", kills, seed, progress=shards_done, units=manifest(ref)["n_shards"],
    )  # fmt: skip


def test_kill_9_then_rerun_gives_identical_shards(setup):
    tally = _sweep(setup, kills=2, seed=21)
    assert tally.recovered == 2 and tally.mid_work >= 1


@pytest.mark.slow
def test_kill_9_sweep(setup):
    tally = _sweep(setup, kills=20, seed=1021)
    assert tally.recovered == 20 and tally.mid_work >= 15


def test_full_disk(setup, tmp_path):
    world = setup["world"]
    line = full_disk_case(
        "fuse", setup["cmd"], tmp_path / "mnt", "80k", [world["pivot_store"], world["aligned"]],
        lambda out: shard_hashes(out) == shard_hashes(setup["ref"]) or pytest.fail("resumed store differs"),
    )  # fmt: skip
    assert "finished parts are kept" in line and str(tmp_path / "mnt") in line, line


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_corrupted_aligned_shard_is_caught_by_name(setup, tmp_path, damage):
    store = tmp_path / "aligned-store"
    victim = damaged_store_copy(setup["world"]["aligned"], store, damage, "fuse")
    out = tmp_path / "out"
    line = corrupted_input_case("fuse", setup["cmd"](out, aligned=store), victim, lambda p: None, damage)
    assert "checksum" in line
    assert not (out / "manifest.json").exists() or not manifest(out).get("complete")


def test_second_run_on_the_same_output_refuses(setup, tmp_path):
    out = tmp_path / "out"
    second_run_refused("fuse", setup["cmd"](out), lambda: (out / "manifest.json").exists())
    assert shard_hashes(out) == shard_hashes(setup["ref"])


def test_rerun_over_a_bit_flipped_shard_rebuilds_it(setup, tmp_path):
    """The shared shard protocol (store/output.py) finds a flipped bit in its own output by the sidecar's sha256
    and rebuilds that shard only (align uses the same protocol)."""
    import shutil

    from tests.faults.common import flip_bit, run

    out = tmp_path / "out"
    shutil.copytree(setup["ref"], out)
    victim = out / manifest(out)["shards"][1]["file"]
    flip_bit(victim)
    done = run(setup["cmd"](out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert shard_hashes(out) == shard_hashes(setup["ref"])
    from fusechat.verify import verify

    assert verify(out) == []


def test_other_settings_are_refused_unless_overwrite(setup, tmp_path):
    """`fuse --method avgce` into a MinCE store used to replace it silently; now one line and nothing touched,
    and `--overwrite` replaces it."""
    import shutil

    from tests.faults.common import assert_one_clear_error, run, snapshot

    out = tmp_path / "out"
    shutil.copytree(setup["ref"], out)
    before = snapshot(out)
    cmd = [*setup["cmd"](out), "--method", "avgce"]
    assert_one_clear_error(run(cmd), str(out), "other inputs or settings", "--overwrite")
    assert snapshot(out) == before
    done = run([*cmd, "--overwrite"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert manifest(out)["method"] == "avgce" and claims_complete(out)
