"""The teacher pass's engine: bf16 against float32, accelerate's placement with offload, the background writer's
errors, and the batch budget sized from free memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import LlamaConfig

from fusechat.errors import FusechatError
from fusechat.store.format import ShardWriter, TopKStore
from fusechat.teacher.placement import MAX_BATCH_TOKENS, MIN_BATCH_TOKENS, batch_budget, parse_max_memory
from fusechat.teacher.teach import teach
from tests.tiny_models import save_llama


def _hashes(store: TopKStore) -> list[str]:
    return [s["sha256"] for s in store.manifest["shards"]]


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_bf16_pass_against_float32(tiny, which):
    """Stated tolerances (docs/formats.md): a bf16 forward with float32 log-softmax, top-k and head product stays
    within 0.02 of float32 rank by rank (0.002 on average); ids differ only at near-ties of these random models."""
    root, conv, model = tiny.root, tiny.conv, getattr(tiny, which)
    ref = TopKStore(teach(str(model), conv, root / f"{which}-f32", top_k=5, dtype="float32", progress=False))
    low = TopKStore(teach(str(model), conv, root / f"{which}-bf16", top_k=5, dtype="bfloat16", progress=False))
    assert (ref.manifest["dtype"], ref.manifest["head_dtype"]) == ("float32", "float32")
    assert (low.manifest["dtype"], low.manifest["head_dtype"]) == ("bfloat16", "float32")
    same, diff, gold = [], [], []
    for a, b in zip(ref, low, strict=True):
        assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.positions, b.positions)
        same.append((a.topk_ids == b.topk_ids).ravel())
        diff.append(np.abs(a.topk_logprobs.astype(np.float32) - b.topk_logprobs.astype(np.float32)).ravel())
        gold.append(np.abs(a.gold_logprob.astype(np.float32) - b.gold_logprob.astype(np.float32)))
    d, g = np.concatenate(diff), np.concatenate(gold)
    assert np.concatenate(same).mean() >= 0.95
    assert d.max() <= 0.02 and d.mean() <= 0.002
    assert g.max() <= 0.02 and g.mean() <= 0.002


def test_resume_refuses_another_dtype(tiny):
    root, conv, model = tiny.root, tiny.conv, tiny.llama
    out = teach(str(model), conv, root / "dtype", top_k=3, shard_rows=5, shard="0/3", dtype="float32", progress=False)
    with pytest.raises(FusechatError, match="dtype float32"):
        teach(str(model), conv, out, top_k=3, shard_rows=5, dtype="bfloat16", progress=False)


def test_offloaded_placement_gives_the_same_store(tiny, caplog):
    """Half the layers and the head on disk, the rest on the CPU (accelerate's hooks move them in per forward)."""
    root, tok, conv = tiny.root, tiny.tok, tiny.conv
    caplog.set_level("INFO", logger="fusechat.teacher.teach")
    model = save_llama(root / "untied", tok, tie=False)
    plain = TopKStore(teach(str(model), conv, root / "plain", top_k=5, shard_rows=5, dtype="float32", progress=False))
    spread = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.norm": "cpu",
        "lm_head": "disk",
    }
    placed = teach(
        str(model), conv, root / "placed", top_k=5, shard_rows=5, dtype="float32",
        device_map=spread, offload_folder=root / "offload", progress=False,
    )  # fmt: skip
    placed_logs = [r.getMessage() for r in caplog.records if "placed by accelerate" in r.getMessage()]
    assert placed_logs and "'model.layers.1': 'disk'" in placed_logs[0]
    assert _hashes(TopKStore(placed)) == _hashes(plain)
    # device_map="auto" with a CPU cap below the model's size: accelerate sends the remainder to disk.
    auto = teach(
        str(model), conv, root / "auto", top_k=5, shard_rows=5, dtype="float32", device_map="auto",
        max_memory={"cpu": 20_000}, offload_folder=root / "offload-auto", progress=False,
    )  # fmt: skip
    assert _hashes(TopKStore(auto)) == _hashes(plain)
    assert "'disk'" in [r.getMessage() for r in caplog.records if "placed by accelerate" in r.getMessage()][-1]


def test_writer_error_reaches_the_caller_and_the_rerun_completes(tiny, monkeypatch):
    """A failure on the writer thread (here: the disk refuses the third shard) is raised by `teach`, leaves only
    whole shards, and releases the locks, so a rerun in the same process finishes with the same bytes."""
    root, conv, model = tiny.root, tiny.conv, tiny.llama
    ref = TopKStore(teach(str(model), conv, root / "w-ref", top_k=3, shard_rows=2, dtype="float32", progress=False))
    close, calls = ShardWriter.close, []

    def failing_close(self):
        calls.append(self.index)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return close(self)

    monkeypatch.setattr(ShardWriter, "close", failing_close)
    out = root / "w-out"
    with pytest.raises(OSError, match="No space"):
        teach(str(model), conv, out, top_k=3, shard_rows=2, dtype="float32", progress=False)
    monkeypatch.setattr(ShardWriter, "close", close)
    assert len(list(out.glob("shard-*.json"))) == 2
    assert not list(out.glob(".*.tmp"))
    assert json.loads((out / "manifest.json").read_text())["complete"] is False
    again = TopKStore(teach(str(model), conv, out, top_k=3, shard_rows=2, dtype="float32", progress=False))
    assert _hashes(again) == _hashes(ref)


def test_batch_budget_from_free_memory():
    """A Qwen2.5-1.5B-shaped model: more free memory gives a larger budget, within the stated bounds."""
    config = LlamaConfig(hidden_size=1536, intermediate_size=8960, num_attention_heads=12, vocab_size=151_936)
    small = batch_budget(8 << 30, config, torch.bfloat16, vocab=151_936)
    large = batch_budget(20 << 30, config, torch.bfloat16, vocab=151_936)
    assert MIN_BATCH_TOKENS <= small < large <= MAX_BATCH_TOKENS and large % 1024 == 0
    assert batch_budget(1 << 30, config, torch.bfloat16, vocab=151_936) == MIN_BATCH_TOKENS
    assert batch_budget(1 << 40, config, torch.bfloat16, vocab=151_936) == MAX_BATCH_TOKENS
    # 20 GiB free: 0.6 x 20 GiB less the head's chunks, at 2 x (8 x 1536 + 4 x 8960) bytes a token.
    assert large == int((0.6 * (20 << 30) - 2 * 1024 * 151_936 * 4) // (2 * (8 * 1536 + 4 * 8960))) // 1024 * 1024


def test_max_memory_parsing():
    assert parse_max_memory("0=70GiB, 1=60GiB,cpu=200GiB") == {0: "70GiB", 1: "60GiB", "cpu": "200GiB"}
    assert parse_max_memory("cpu=20000") == {"cpu": 20000}
    with pytest.raises(FusechatError, match="DEVICE=SIZE"):
        parse_max_memory("70GiB")
