"""Bits per byte and span log-likelihoods against a plain full-logits computation on tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fusechat.data.conversations import Conversations
from fusechat.evaluate.likelihood import bits_per_byte, span_logprobs
from fusechat.teacher.scoring import model_parts


def _plain(model_dir, texts, spans, max_tokens=10_000):
    """Full logits, log-softmax, and a token-by-token overlap test: the obviously correct computation."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    nll, nbytes = [], []
    for text, sp in zip(texts, spans, strict=True):
        enc = tok(text, return_offsets_mapping=True)
        ids, offs = enc["input_ids"][:max_tokens], enc["offset_mapping"][:max_tokens]
        end = max(e for _, e in offs)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        total = 0.0
        for t in range(1, len(ids)):
            s, e = offs[t]
            if e > s and any(e > a and s < b for a, b in sp):
                total -= float(logp[t - 1, ids[t]])
        nll.append(total)
        nbytes.append(sum(len(text[a : min(b, end)].encode()) for a, b in sp if min(b, end) > a))
    return np.array(nll), np.array(nbytes)


@pytest.mark.parametrize("which", ["llama", "gpt2"])
@pytest.mark.parametrize("max_tokens", [10_000, 40])
def test_bpb_equals_full_logits(tiny, which, max_tokens):
    conv = Conversations(tiny["conv"])
    model_dir = tiny[which]
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    backbone, head = model_parts(model)
    # A small batch budget: several batches, padding inside each.
    scores = span_logprobs(backbone, head, tok, conv.texts, conv.spans, max_tokens, batch_tokens=200, progress=False)
    nll, nbytes = _plain(model_dir, conv.texts, conv.spans, max_tokens)
    np.testing.assert_allclose([-s.logprob for s in scores], nll, rtol=1e-4)
    assert [s.n_bytes for s in scores] == nbytes.tolist()
    if max_tokens > 1000:
        assert nbytes.tolist() == [conv.n_bytes(i) for i in range(len(conv))]
    value, _ = bits_per_byte(np.array([-s.logprob for s in scores]), nbytes)
    assert value == pytest.approx(nll.sum() / (math.log(2) * nbytes.sum()), rel=1e-5)
    # A random tiny model is close to uniform: about log2(vocab) bits per token.
    tokens = sum(s.n_tokens for s in scores)
    per_token = nll.sum() / math.log(2) / tokens
    assert abs(per_token - math.log2(len(tok))) < 1.0


def test_bits_per_byte_standard_error():
    # Equal byte counts: the ratio estimator's standard error is the plain standard error of per-item bpb.
    rng = np.random.default_rng(0)
    bits = rng.uniform(50, 150, size=40)
    nll = bits * math.log(2)
    value, se = bits_per_byte(nll, np.full(40, 100))
    per_item = bits / 100
    assert value == pytest.approx(per_item.mean())
    assert se == pytest.approx(per_item.std(ddof=1) / math.sqrt(40))
    assert math.isnan(bits_per_byte(nll[:1], np.array([100]))[1])


def test_content_scope_drops_the_end_of_turn_text(tiny, tmp_path):
    from fusechat.evaluate import evaluate
    from fusechat.evaluate.tasks import content_spans

    conv = Conversations(tiny["conv"])
    for i in range(len(conv)):
        contents = [m["content"].strip() for m in conv.messages(i) if m["role"] == "assistant"]
        spans = content_spans(conv.texts[i], conv.spans[i], conv.messages(i))
        assert [conv.texts[i][a:b] for a, b in spans] == contents
        assert all(conv.texts[i][a:b].endswith("<|im_end|>") for a, b in conv.spans[i])
    common = {"conversations": tiny["conv"], "cache_dir": tmp_path / "cache", "progress": False}
    turn = evaluate({"m": tiny["llama"]}, "bpb", tmp_path / "a", **common)["m"]["bpb"]
    content = evaluate({"m": tiny["llama"]}, "bpb", tmp_path / "b", bpb_scope="content", **common)["m"]["bpb"]
    dropped = sum(
        len(m["content"].encode()) - len(m["content"].strip().encode()) + len("<|im_end|>")
        for i in range(len(conv))
        for m in conv.messages(i)
        if m["role"] == "assistant"
    )
    assert turn["n_bytes"] - content["n_bytes"] == dropped
    assert content["value"] != turn["value"] and content["scope"] == "content"
