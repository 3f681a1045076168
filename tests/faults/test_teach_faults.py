"""Faults in the teacher pass, through the real CLI: kill -9 at random moments, a full disk, two runs at once.

After every kill the store must never claim `complete` while a shard is missing or damaged, and a rerun must
give exactly the bytes of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusechat.verify import verify
from tests.tiny_models import byte_bpe_tokenizer, sample_chats, save_llama, write_conversations

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = dict(os.environ, PYTHONPATH=SRC)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    tok = byte_bpe_tokenizer()
    return save_llama(root / "m", tok), write_conversations(root / "c", sample_chats(24), tok), root


def teach_cmd(model: Path, conv: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "fusechat", "teach", "--model", str(model), "--conversations", str(conv)] + [
        "--out", str(out), "--top-k", "4", "--shard-rows", "2", "--batch-tokens", "64", "--no-progress",
    ]  # fmt: skip


def shard_hashes(store: Path) -> list[str]:
    return [s["sha256"] for s in json.loads((store / "manifest.json").read_text())["shards"]]


def claims_complete(store: Path) -> bool:
    try:
        return json.loads((store / "manifest.json").read_text()).get("complete") is True
    except (OSError, json.JSONDecodeError):
        return False


def test_kill_9_at_random_moments_then_resume(inputs):
    model, conv, root = inputs
    t0 = time.monotonic()
    ref = root / "reference"
    subprocess.run(teach_cmd(model, conv, ref), env=ENV, check=True, capture_output=True)
    duration = time.monotonic() - t0
    rng = random.Random(7)
    for trial in range(3):
        out = root / f"killed-{trial}"
        proc = subprocess.Popen(teach_cmd(model, conv, out), env=ENV, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 0.9) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if claims_complete(out):
            assert verify(out) == []  # finished before the kill: it must then be whole
        done = subprocess.run(teach_cmd(model, conv, out), env=ENV, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert shard_hashes(out) == shard_hashes(ref)
        assert verify(out) == []
        assert not list(out.glob(".*.tmp")), "a temporary file survived the resumed run"


def test_second_run_on_the_same_store_refuses(inputs):
    model, conv, root = inputs
    out = root / "concurrent"
    first = subprocess.Popen(teach_cmd(model, conv, out), env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "manifest.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run(teach_cmd(model, conv, out), env=ENV, capture_output=True, text=True)
    first.wait()
    if second.returncode == 0:  # the first run had already finished: then the second must have had nothing to do
        assert "nothing left to do" in second.stderr
    else:
        assert second.returncode == 2 and "another fusechat run" in second.stderr
    assert verify(out) == []


def test_full_disk_is_one_clear_error_and_resumable(inputs, tmp_path):
    model, conv, root = inputs
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40k", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = small / "store"
        done = subprocess.run(teach_cmd(model, conv, out), env=ENV, capture_output=True, text=True)
        assert done.returncode == 2, done.stderr[-2000:]
        lines = [line for line in done.stderr.splitlines() if "error:" in line]
        assert len(lines) == 1 and "disk is full" in lines[0] and "Traceback" not in done.stderr
        assert not claims_complete(out)
        assert not list(out.glob(".*.tmp"))
        finished = sorted(p.name for p in out.glob("shard-*.json"))
        assert finished, "some shards should have fitted before the disk filled"
        assert all(verify_shard(out, name) for name in finished)
    finally:
        subprocess.run(["umount", str(small)], check=False)


def verify_shard(store: Path, sidecar: str) -> bool:
    from fusechat.manifest import sha256_file

    info = json.loads((store / sidecar).read_text())
    return sha256_file(store / info["file"]) == info["sha256"]


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_rerun_over_a_damaged_shard_rebuilds_it(inputs, damage):
    """A rerun over a complete store whose shard was damaged afterwards finds it (size, then sha256 against its
    sidecar), rebuilds that shard alone, and ends byte-identical to the uninterrupted run."""
    model, conv, root = inputs
    ref = root / "reference-for-repair"
    subprocess.run(teach_cmd(model, conv, ref), env=ENV, check=True, capture_output=True)
    out = root / f"repair-{damage}"
    import shutil

    shutil.copytree(ref, out)
    shards = json.loads((out / "manifest.json").read_text())["shards"]
    victim = out / shards[1]["file"]
    data = bytearray(victim.read_bytes())
    if damage == "truncated":
        del data[len(data) // 2 :]
    else:
        data[len(data) // 2] ^= 0x10
    victim.write_bytes(bytes(data))
    untouched = {s["file"]: (out / s["file"]).stat().st_mtime_ns for s in shards if s["file"] != victim.name}
    done = subprocess.run(teach_cmd(model, conv, out), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert verify(out) == [], "the rerun must repair the damaged shard, not report the store complete"
    assert shard_hashes(out) == shard_hashes(ref)
    assert {f: (out / f).stat().st_mtime_ns for f in untouched} == untouched, "only the damaged shard is redone"


def test_a_refused_run_leaves_nothing_that_blocks_the_next(inputs, tmp_path):
    """teach refused after it claimed --out (pickled weights without --allow-pickle) used to leave an incomplete
    manifest that made the next run, with the right model, refuse "other settings". An output that holds no
    work is not protected; one that holds shards is (test_resume_refuses_other_settings)."""
    import shutil

    import torch
    from safetensors.torch import load_file

    model, conv, root = inputs
    pickled = tmp_path / "pickled"
    shutil.copytree(model, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    out = tmp_path / "store"
    refused = subprocess.run(teach_cmd(pickled, conv, out), env=ENV, capture_output=True, text=True)
    assert refused.returncode == 2 and "--allow-pickle" in refused.stderr, refused.stderr[-2000:]
    done = subprocess.run(teach_cmd(model, conv, out), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert verify(out) == []


def test_an_out_holding_only_dotfiles_is_refused(inputs, tmp_path):
    model, conv, root = inputs
    out = tmp_path / "mine"
    (out / ".git").mkdir(parents=True)
    (out / ".env").write_text("TOKEN=x\n")
    done = subprocess.run(teach_cmd(model, conv, out), env=ENV, capture_output=True, text=True)
    assert done.returncode == 2 and "not a fusechat 'teach' output" in done.stderr, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == [".env", ".git"]
