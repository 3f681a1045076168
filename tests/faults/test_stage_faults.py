"""The faults every stage must survive, asked of each row of the stage table (stages.py) through the real CLI:
kill -9 at seeded moments then a rerun, a full disk, a damaged input, a second run on the same output, and a
damaged shard of its own output.

After a kill nothing may claim `complete` while a file it lists is missing or damaged, and the rerun must give
the uninterrupted run's output (byte-identical for the deterministic stages, within float tolerance for
training); every refusal is one line, exit 2, no traceback, and leaves what was already written whole.
"""

from __future__ import annotations

import json

import pytest

from fusechat.manifest import sha256_file
from fusechat.verify import verify
from tests.faults.common import (
    assert_one_clear_error,
    flip_bit,
    full_disk_case,
    kill_sweep,
    manifest,
    record,
    run,
    second_run_refused,
    truncate,
)
from tests.faults.stages import Stage, shard_hashes, stages


def _sweep(stage: Stage, world, references, root, kills: int, seed: int):
    ref = references(stage.name)
    by_units = stage.progress is not None
    return kill_sweep(
        stage.name, lambda out: stage.command(world, out), stage.outputs, stage.started, references.window(stage),
        lambda out: stage.same(ref, out), root, kills, seed, done=stage.finished, progress=stage.progress,
        units=stage.units(ref) if by_units else 1,
    )  # fmt: skip


@pytest.mark.parametrize("stage", stages("kill", lambda s: s.kills[0]))
def test_kill_9_then_rerun_gives_the_uninterrupted_output(stage, world, references, tmp_path):
    kills, seed, mid_work = stage.kills
    tally = _sweep(stage, world, references, tmp_path, kills, seed)
    assert tally.recovered == kills and tally.mid_work >= mid_work


@pytest.mark.slow
@pytest.mark.parametrize("stage", stages("sweep", lambda s: s.sweep[0]))
def test_kill_9_sweep(stage, world, references, tmp_path):
    kills, seed, mid_work = stage.sweep
    tally = _sweep(stage, world, references, tmp_path, kills, seed)
    assert tally.recovered == kills and tally.mid_work >= mid_work


def _world_paths(world, keys):
    return [p for key in keys for p in (world[key] if isinstance(world[key], list) else [world[key]])]


@pytest.mark.parametrize("stage", stages("disk", lambda s: s.disk))
def test_full_disk_is_one_line_and_resumable(stage, world, references, tmp_path):
    """One line naming where it was writing and whether a rerun resumes or starts over; nothing claims complete,
    the inputs are untouched; with room again the same command gives the uninterrupted output."""
    ref = references(stage.name)
    mount = tmp_path / "mnt"

    def finished_shards_whole(out):  # the shards a store finished before the disk filled stay, each whole
        kept = [json.loads(p.read_text()) for p in out.glob("shard-*.json") if not p.name.endswith(".stats.json")]
        assert kept, "some shards should have fitted before the disk filled"
        assert all(sha256_file(out / s["file"]) == s["sha256"] for s in kept)
        assert not list(out.glob(".*.tmp")), "a temporary file survived the failed run"

    line = full_disk_case(
        stage.name, lambda out: stage.command(world, out), mount, stage.disk,
        _world_paths(world, stage.disk_inputs), lambda out: stage.same(ref, out),
        leftovers=lambda out: stage.outputs(out)[1:],
        kept_whole=finished_shards_whole if stage.sharded else lambda out: None,
    )  # fmt: skip
    assert str(mount) in line and all(words in line for words in stage.disk_says), line
    assert ("starts over" in line) != ("to resume" in line), line


DAMAGE = {"truncated": truncate, "bit-flipped": flip_bit}


@pytest.mark.parametrize(
    ("stage", "kind"),
    [pytest.param(p.values[0], kind, id=f"{p.id}-{kind}") for p in stages("damaged", lambda s: s.damaged)
     for kind in p.values[0].damaged.kinds],
)  # fmt: skip
def test_damaged_input_is_refused_by_name(stage, kind, world, references, tmp_path):
    """A truncated or bit-flipped input file (a copy): one line naming it, before any output claims complete."""
    damaged = stage.damaged
    inputs, victim = damaged.copy(world, references, tmp_path)
    (damaged.flip if kind == "bit-flipped" and damaged.flip else DAMAGE[kind])(victim)
    if victim.suffix == ".parquet":  # what the checksum is there for: does the damaged file still parse?
        record("corruption-parses", stage.name, kind=kind, parses_as_parquet=_parses(victim))
    out = tmp_path / "out"
    line = assert_one_clear_error(run(stage.command(world, out, **inputs)), victim.name)
    assert not damaged.says or any(words in line for words in damaged.says), line
    record("corruption", stage.name, kind=kind, file=victim.suffix, detected=True)
    assert not any(stage.finished(o) for o in stage.outputs(out)) and not (out / "checkpoints").exists()
    if damaged.then:
        damaged.then(world, inputs, victim, kind)


def _parses(path) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.read_table(path)
        return True
    except Exception:  # noqa: BLE001 (any failure of the Parquet reader counts)
        return False


@pytest.mark.parametrize("stage", stages("second-run", lambda s: s.same))
def test_second_run_on_the_same_output_refuses(stage, world, references, tmp_path):
    out = tmp_path / "out"
    line = second_run_refused(stage.name, stage.command(world, out), lambda: stage.started(out))
    assert str(out) in line, line
    stage.same(references(stage.name), out)


@pytest.mark.parametrize(
    ("stage", "kind"),
    [pytest.param(p.values[0], kind, id=f"{p.id}-{kind}") for p in stages("rebuild", lambda s: s.sharded)
     for kind in DAMAGE],
)  # fmt: skip
def test_rerun_over_a_damaged_shard_rebuilds_only_it(stage, kind, world, references, tmp_path):
    """A rerun over a complete store whose shard was damaged afterwards finds it (size, then sha256 against its
    sidecar: the shared shard protocol, store/output.py), rebuilds that shard alone, and ends byte-identical."""
    import shutil

    ref = references(stage.name)
    out = shutil.copytree(ref, tmp_path / "out")
    shards = manifest(out)["shards"]
    victim = out / shards[1]["file"]
    DAMAGE[kind](victim)
    untouched = {s["file"]: (out / s["file"]).stat().st_mtime_ns for s in shards if s["file"] != victim.name}
    done = run(stage.command(world, out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert verify(out) == [], "the rerun must repair the damaged shard, not report the store complete"
    assert shard_hashes(out) == shard_hashes(ref)
    assert {f: (out / f).stat().st_mtime_ns for f in untouched} == untouched, "only the damaged shard is redone"
