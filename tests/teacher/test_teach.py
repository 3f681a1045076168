"""The teacher pass against a direct forward pass, its positions, sharding and resume, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fusechat.data.conversations import Conversations
from fusechat.errors import FusechatError
from fusechat.store.format import TopKStore
from fusechat.teacher.teach import make_batches, teach


def _direct(model_dir, text):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    enc = tok(text, return_offsets_mapping=True)
    with torch.no_grad():
        logits = model(torch.tensor([enc["input_ids"]])).logits[0].float()
    return enc, torch.log_softmax(logits, -1)


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_store_equals_direct_forward(tiny, which):
    root, llama, gpt2, conv_dir = tiny.root, tiny.llama, tiny.gpt2, tiny.conv
    model_dir = llama if which == "llama" else gpt2
    store_dir = teach(
        str(model_dir), conv_dir, root / f"store-{which}", top_k=5, batch_tokens=300, dtype="float32", progress=False
    )
    store = TopKStore(store_dir, stage="teach")
    conv = Conversations(conv_dir)
    assert len(store) == len(conv) and store.manifest["complete"] is True
    for i, rec in enumerate(store):
        assert rec.id == conv.ids[i]
        enc, logp = _direct(model_dir, conv.texts[i])
        assert rec.input_ids.tolist() == enc["input_ids"]
        assert len(rec.positions) > 0
        ref_v, ref_i = logp[rec.positions].topk(5, dim=-1)
        np.testing.assert_allclose(rec.topk_logprobs.astype(np.float32), ref_v.numpy(), atol=1e-2)
        # Ids agree except where two log-probs tie within float16 rounding.
        same = rec.topk_ids == ref_i.numpy()
        assert same.mean() > 0.99
        gold = logp[rec.positions, torch.as_tensor(rec.input_ids[rec.positions + 1]).long()]
        np.testing.assert_allclose(rec.gold_logprob.astype(np.float32), gold.numpy(), atol=1e-2)
        np.testing.assert_allclose(rec.nll, -gold.double().sum().item(), rtol=1e-5)
        assert rec.n_bytes == conv.n_bytes(i)


def test_positions_are_exactly_the_assistant_tokens(tiny):
    root, llama, conv_dir = tiny.root, tiny.llama, tiny.conv
    store = TopKStore(teach(str(llama), conv_dir, root / "store-pos", top_k=3, progress=False))
    conv = Conversations(conv_dir)
    for i, rec in enumerate(store):
        text, spans = conv.texts[i], conv.spans[i]
        supervised = set((rec.positions + 1).tolist())
        for t, (s, e) in enumerate(rec.offsets):
            inside = any(e > a and s < b for a, b in spans) and e > s
            assert (t in supervised) == inside, (i, t, text[s:e])
        covered = "".join(text[s:e] for t, (s, e) in enumerate(rec.offsets) if t in supervised)
        assert covered == "".join(text[a:b] for a, b in spans)


def test_sharded_and_resumed_run_is_byte_identical(tiny):
    root, llama, conv_dir = tiny.root, tiny.llama, tiny.conv
    whole = teach(str(llama), conv_dir, root / "whole", top_k=4, shard_rows=5, progress=False)
    part = root / "part"
    teach(str(llama), conv_dir, part, top_k=4, shard_rows=5, shard="1/3", progress=False)
    with pytest.raises(FusechatError, match="did not finish"):
        TopKStore(part)
    # A kill mid-write leaves only a temporary file and a truncated sidecar-less shard: both are ignored.
    (part / ".shard-00000-of-00003.parquet.999.tmp").write_bytes(b"PAR1 partial")
    (part / "shard-00002-of-00003.parquet").write_bytes(b"PAR1 truncated")
    teach(str(llama), conv_dir, part, top_k=4, shard_rows=5, progress=False)
    a, b = TopKStore(whole), TopKStore(part)
    assert a.manifest["shards"] == b.manifest["shards"]
    for i in range(a.n_shards):
        assert a.shard_path(i).read_bytes() == b.shard_path(i).read_bytes()
    assert b.verify() == []


def test_resume_refuses_other_settings(tiny):
    root, llama, conv_dir = tiny.root, tiny.llama, tiny.conv
    out = teach(str(llama), conv_dir, root / "settings", top_k=4, progress=False)
    with pytest.raises(FusechatError, match="top_k"):
        teach(str(llama), conv_dir, out, top_k=5, progress=False)


def test_bad_inputs(tiny, tmp_path):
    llama, conv_dir = tiny.llama, tiny.conv
    notok = tmp_path / "notok"
    notok.mkdir()
    for f in llama.iterdir():
        if f.name in ("config.json", "model.safetensors"):
            (notok / f.name).write_bytes(f.read_bytes())
    with pytest.raises(FusechatError, match="no tokenizer"):
        teach(str(notok), conv_dir, tmp_path / "s1", progress=False)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for f in llama.iterdir():
        if f.name != "model.safetensors":
            (pickled / f.name).write_bytes(f.read_bytes())
    (pickled / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(FusechatError, match="pickled"):
        teach(str(pickled), conv_dir, tmp_path / "s2", progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FusechatError, match="not empty"):
        teach(str(llama), conv_dir, other, progress=False)
    with pytest.raises(FusechatError, match="no manifest"):
        teach(str(llama), tmp_path / "nowhere", tmp_path / "s3", progress=False)


def test_batches_respect_budget_and_sort():
    from fusechat.teacher.teach import Encoded

    items = [
        Encoded(i, np.zeros(n, np.int32), np.zeros((n, 2), np.int32), np.zeros(0, np.int32))
        for i, n in enumerate([5, 50, 7, 300, 20, 1000])
    ]
    batches = make_batches(items, batch_tokens=100, max_batch=8)
    for batch in batches:
        lengths = [len(e.input_ids) for e in batch]
        assert lengths == sorted(lengths)
        assert len(batch) == 1 or len(batch) * max(lengths) <= 100
    assert sorted(e.index for b in batches for e in b) == list(range(6))
