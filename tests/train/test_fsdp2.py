"""FSDP2 (`fully_shard`) over two processes with gloo gives the weights of one unsharded process: the loss
runs inside the head module's call, so it sees the head's full weight even when FSDP keeps it sharded outside.

The Trainer cannot run FSDP on CPU (transformers 5.23 / accelerate 1.15 drop it for DDP), so this drives
torch's FSDP2 directly with the trainer's own loss step (`step_loss`); `fusechat train --fsdp` through the
Trainer is left to the GPU check (benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train.helpers import cli_env, make_model
from tests.train.test_resume_ddp import free_port

WORKER = str(Path(__file__).with_name("fsdp2_step.py"))


def step(pivot, targets, out, *mode: str, nproc: int = 1) -> dict:
    if nproc == 1:
        cmd = [sys.executable, WORKER]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
        cmd += [f"--master_port={free_port()}", WORKER]
    r = subprocess.run(
        [*cmd, str(pivot), str(targets), str(out), *mode], env=cli_env(), capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return torch.load(out)


@pytest.mark.parametrize(
    "tied",
    [pytest.param(True, marks=pytest.mark.slow, id="tied-head-in-root"), pytest.param(False, id="own-head-sharded")],
)
def test_fsdp2_two_processes_equal_one(tiny, tmp_path, tied):
    pivot = tiny["pivot"]
    extra = ()
    if not tied:
        pivot = tmp_path / "untied"
        make_model(pivot, tiny["vocab"], seed=4, tied=False)
        extra = ("shard-head",)
    before = step(pivot, tiny["targets"], tmp_path / "zero.pt", "plain")  # one process, whole model
    two = step(pivot, tiny["targets"], tmp_path / "two.pt", "fsdp", *extra, nproc=2)
    from fusechat.models.load import load_model

    start = load_model(pivot).state_dict()
    assert max(float((before[k] - start[k]).abs().max()) for k in start) > 1e-3  # the step moved the weights
    assert before.keys() == two.keys()
    for k in before:
        torch.testing.assert_close(two[k], before[k], rtol=1e-4, atol=1e-5)
