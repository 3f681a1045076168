"""Faults in `fusechat merge` through the real CLI: kill -9, a full disk, corrupted checkpoints, two runs.

A merge is deterministic (DARE's masks come from the seed), so a rerun after a kill must write byte-identical
safetensors. The output is built in a hidden `.OUT.partial-PID` directory and renamed when whole, so a kill
leaves no OUT at all; the next run removes the killed one's partial directory.
"""

from __future__ import annotations

import shutil

import pytest
import yaml

from tests.faults.common import (
    corrupted_input_case,
    flip_bit,
    full_disk_case,
    fusechat,
    kill_sweep,
    manifest,
    reference_run,
    run,
    second_run_refused,
    truncate,
)


def partials(out):
    return sorted(out.parent.glob(f".{out.name}.partial-*"))


def write_config(path, base, models):
    body = {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [{"model": str(m), "parameters": {"weight": 0.5, "density": 0.5}} for m in models],
        "dtype": "float32",
    }
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.fixture(scope="module")
def setup(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("merge-faults")
    base, *models = world["merge_inputs"]
    config = write_config(root / "merge.yml", base, models)

    def cmd(out, cfg=config):
        return fusechat("merge", cfg, out, "--max-shard-size", "2e6")

    ref = root / "reference"
    window = reference_run(cmd(ref), lambda: bool(partials(ref)), ref.exists)
    return {"root": root, "cmd": cmd, "ref": ref, "window": window, "world": world, "config": config}


def same_as_reference(setup):
    def check(out):
        assert manifest(out)["files"] == manifest(setup["ref"])["files"]
        assert not partials(out), "a killed merge's partial directory was left behind"

    return check


def _sweep(setup, kills, seed):
    return kill_sweep(
        "merge", setup["cmd"], lambda o: [o, *partials(o)], lambda o: bool(partials(o)) or o.exists(),
        setup["window"], same_as_reference(setup), setup["root"] / f"sweep-{seed}", kills, seed,
        progress=lambda o: sum(len(list(p.glob("*.safetensors"))) for p in partials(o)),
        units=len([f for f in manifest(setup["ref"])["files"] if f.endswith(".safetensors")]),
    )  # fmt: skip


def test_kill_9_then_rerun_gives_identical_weights(setup):
    tally = _sweep(setup, kills=2, seed=31)
    assert tally.recovered == 2 and tally.mid_work >= 1


@pytest.mark.slow
def test_kill_9_sweep(setup):
    tally = _sweep(setup, kills=20, seed=1031)
    assert tally.recovered == 20 and tally.mid_work >= 15


def test_full_disk(setup, tmp_path):
    line = full_disk_case(
        "merge", setup["cmd"], tmp_path / "mnt", "6m", list(setup["world"]["merge_inputs"]),
        same_as_reference(setup), leftovers=partials,
    )  # fmt: skip
    # A merge starts over (its partial directory is removed): the line must not promise to resume, and names
    # where it was writing.
    assert "starts over" in line and "resume" not in line and str(tmp_path / "mnt") in line, line


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_corrupted_checkpoint_is_caught_by_name(setup, tmp_path, damage):
    """A fusechat checkpoint (here the reference merge) read by merge and by evaluate, damaged two ways."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(setup["ref"], ckpt)
    victim = ckpt / sorted(manifest(ckpt)["files"])[3]
    base, *models = setup["world"]["merge_inputs"]
    config = write_config(tmp_path / "m.yml", base, [ckpt, models[0]])
    line = corrupted_input_case("merge", setup["cmd"](tmp_path / "out", cfg=config), victim,
                                truncate if damage == "truncated" else flip_bit, damage)  # fmt: skip
    assert ("checksum" in line) or ("truncated" in line)
    assert not (tmp_path / "out").exists() and not partials(tmp_path / "out")
    evaluated = run(fusechat("evaluate", ckpt, "--suite", "bpb", "--out", tmp_path / "eval",
                             "--conversations", setup["world"]["conv"]))  # fmt: skip
    assert evaluated.returncode == 2 and victim.name in evaluated.stderr and "Traceback" not in evaluated.stderr


def test_second_run_on_the_same_output_refuses(setup, tmp_path):
    out = tmp_path / "out"
    line = second_run_refused("merge", setup["cmd"](out), lambda: bool(partials(out)))
    assert f"{out}: another fusechat run" in line
    same_as_reference(setup)(out)
