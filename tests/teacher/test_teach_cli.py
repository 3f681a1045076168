"""`fusechat teach` through the real command line: output, resume, and one-line errors with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fusechat.store.format import TopKStore
from tests.tiny_models import byte_bpe_tokenizer, sample_chats, save_llama, write_conversations

SRC = str(Path(__file__).resolve().parents[2] / "src")


def fusechat(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-m", "fusechat", *args], capture_output=True, text=True, env=env)


def test_teach_cli(tmp_path):
    tok = byte_bpe_tokenizer()
    model = save_llama(tmp_path / "m", tok)
    conv = write_conversations(tmp_path / "conv", sample_chats(6), tok)
    out = tmp_path / "store"
    args = ["teach", "--model", str(model), "--conversations", str(conv), "--out", str(out), "--top-k", "3"]
    done = fusechat(*args, "--shard-rows", "2", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    store = TopKStore(out)
    assert store.n_shards == 3 and store.k == 3 and len(store) == 6
    again = fusechat(*args, "--shard-rows", "2", "--no-progress")
    assert again.returncode == 0 and "nothing left to do" in again.stderr
    bad = fusechat(*args, "--shard-rows", "3", "--no-progress")
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "shard_rows" in lines[0] and "Traceback" not in bad.stderr
    bad_shard = fusechat(*args, "--shard", "3/2")
    assert bad_shard.returncode == 2 and "--shard" in bad_shard.stderr


def test_torchrun_ranks_split_shards_and_match_one_process(tmp_path):
    tok = byte_bpe_tokenizer()
    model = save_llama(tmp_path / "m", tok)
    conv = write_conversations(tmp_path / "conv", sample_chats(6), tok)
    common = ["--model", str(model), "--conversations", str(conv), "--shard-rows", "2", "--no-progress"]
    one = fusechat("teach", *common, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    env = dict(os.environ, PYTHONPATH=SRC)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "fusechat", "teach"]
    two = subprocess.run([*cmd, *common, "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr
    a, b = TopKStore(tmp_path / "one"), TopKStore(tmp_path / "two")
    assert [s["sha256"] for s in a.manifest["shards"]] == [s["sha256"] for s in b.manifest["shards"]]


def test_torchrun_ranks_split_shards_with_a_placed_model(tmp_path):
    """--device-map under torchrun: each process places its own copy (here capped at 20 kB of CPU memory, the
    rest offloaded to its own folder), and the shards are still split between the processes."""
    tok = byte_bpe_tokenizer()
    model = save_llama(tmp_path / "m", tok, tie=False)
    conv = write_conversations(tmp_path / "conv", sample_chats(6), tok)
    common = ["--model", str(model), "--conversations", str(conv), "--shard-rows", "2", "--no-progress"]
    one = fusechat("teach", *common, "--dtype", "float32", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    env = dict(os.environ, PYTHONPATH=SRC)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "fusechat", "teach"]
    placed = ["--device-map", "auto", "--max-memory", "cpu=20000", "--offload-folder", str(tmp_path / "off")]
    two = subprocess.run(
        [*cmd, *common, *placed, "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env
    )
    assert two.returncode == 0, two.stderr
    assert "'disk'" in two.stderr  # the placement logged by each rank
    a, b = TopKStore(tmp_path / "one"), TopKStore(tmp_path / "two")
    assert [s["sha256"] for s in a.manifest["shards"]] == [s["sha256"] for s in b.manifest["shards"]]
    bad = fusechat("teach", *common, "--max-memory", "cpu=1GiB", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "go with --device-map" in bad.stderr
