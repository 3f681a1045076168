"""Resuming an interrupted run, and several processes, give the weights of one uninterrupted process."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from fusechat.train.api import train
from tests.train.helpers import CLI, cli_env, read_json

OPTIONS = dict(per_device_train_batch_size=4, learning_rate=3e-3, warmup_steps=0, disable_tqdm=True, seed=7)


class StopAt(TrainerCallback):
    """Interrupts training after `step` (as a killed job would, once its checkpoint is written)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def weights(out) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tiny, tmp_path):
    whole = train(tiny["pivot"], tiny["targets"], tmp_path / "whole", max_steps=5, save_steps=2, **OPTIONS)
    cut = tmp_path / "cut"
    train(tiny["pivot"], tiny["targets"], cut, max_steps=5, save_steps=2, callbacks=[StopAt(2)], **OPTIONS)
    assert read_json(cut / "manifest.json")["complete"] is False
    assert (cut / "checkpoints" / "checkpoint-2").is_dir() and not (cut / "model.safetensors").exists()
    train(tiny["pivot"], tiny["targets"], cut, max_steps=5, save_steps=2, **OPTIONS)  # the same command again
    m = read_json(cut / "manifest.json")
    assert m["complete"] is True and m["steps"] == 5
    a, b = weights(whole), weights(cut)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_train(tiny, out, batch: int, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    args = ["train", "--pivot", str(tiny["pivot"]), "--targets", str(tiny["targets"]), "--out", str(out)]
    args += ["--max-steps", "3", "--batch-size", str(batch), "--lr", "3e-3", "--warmup", "0", "--seed", "7"]
    args += ["--lambda", "0.5", *extra]
    if nproc == 1:
        cmd = [*CLI, *args]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
        cmd = [*launcher, f"--master_port={free_port()}", "-m", "fusechat", *args]
    return subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def one_process(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "out"
    r = cli_train(tiny, out, 4, 1)
    assert r.returncode == 0, r.stderr[-3000:]
    return weights(out)


@pytest.mark.parametrize(
    "extra",
    [(), pytest.param(("--grad-accum", "2"), marks=pytest.mark.slow)],
    ids=["ddp", "ddp+accumulation"],
)
def test_two_processes_equal_one_with_the_same_global_batch(tiny, tmp_path, one_process, extra):
    accum = 2 if extra else 1
    two = cli_train(tiny, tmp_path / "two", 4 // (2 * accum), 2, *extra)
    assert two.returncode == 0, [line for line in two.stderr.splitlines() if "rror" in line][:8]
    m = read_json(tmp_path / "two" / "manifest.json")
    assert m["world_size"] == 2 and m["global_batch"] == 4
    a, b = one_process, weights(tmp_path / "two")
    pivot = load_file(str(tiny["pivot"] / "model.safetensors"))
    assert max(float((a[k] - pivot[k]).abs().max()) for k in a) > 1e-3  # training moved the weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_a_damaged_checkpoint_is_not_resumed_from(tiny, tmp_path, caplog):
    """Found by trying to break it: one flipped byte in the newest checkpoint's weights was resumed silently (a
    weight of 4e37, exit 0). Now each checkpoint is sealed with its files' sha256 when saved; the damaged one is
    removed and the run resumes from the one before it, ending with the weights of an uninterrupted run."""
    common = dict(max_steps=4, save_steps=1, **OPTIONS)
    whole = train(tiny["pivot"], tiny["targets"], tmp_path / "whole", **common)
    cut = tmp_path / "cut"
    train(tiny["pivot"], tiny["targets"], cut, callbacks=[StopAt(2)], **common)
    newest = cut / "checkpoints" / "checkpoint-2"
    assert (newest / "fusechat-checksums.json").is_file()
    data = bytearray((newest / "model.safetensors").read_bytes())
    data[-5] ^= 0x40  # inside the last tensor: the safetensors header and length still look whole
    (newest / "model.safetensors").write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        train(tiny["pivot"], tiny["targets"], cut, **common)
    assert "checkpoint-2: damaged (model.safetensors" in caplog.text
    a, b = weights(whole), weights(cut)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)
