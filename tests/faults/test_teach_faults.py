"""Faults of the teacher pass that are its own, through the real CLI (the ones every stage shares, kill -9, a full
disk, two runs, damaged shards, are asked of it in test_stage_faults.py)."""

from __future__ import annotations

import shutil

import torch
from safetensors.torch import load_file

from fusechat.verify import verify
from tests.faults.common import run
from tests.faults.stages import STAGES


def test_a_refused_run_leaves_nothing_that_blocks_the_next(world, tmp_path):
    """teach refused after it claimed --out (pickled weights without --allow-pickle) used to leave an incomplete
    manifest that made the next run, with the right model, refuse "other settings". An output that holds no
    work is not protected; one that holds shards is (test_resume_refuses_other_settings)."""
    pickled = shutil.copytree(world["pivot"], tmp_path / "pickled")
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    out = tmp_path / "store"
    teach = STAGES["teach"].command
    refused = run(teach(world, out, model=pickled))
    assert refused.returncode == 2 and "--allow-pickle" in refused.stderr, refused.stderr[-2000:]
    done = run(teach(world, out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert verify(out) == []
