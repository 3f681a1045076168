"""Multiple choice picks the option with the best log-likelihood per byte, as a plain computation does."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fusechat.evaluate.base import Loaded
from fusechat.evaluate.choice import choose, option_texts, run_choice
from fusechat.evaluate.datasets import ChoiceItem
from fusechat.teacher.scoring import model_parts

ITEMS = [
    ChoiceItem("q0", "What is 12 + 30?", ["The answer is 42.", "Hello world", "café"], 0),
    ChoiceItem("q1", "Say hello.", ["Hello world, how are you today?", "The quick brown fox", "def add(a, b):"], 0),
    ChoiceItem("q2", "Pick one.", ["日本語", "assistant system", "42", "The lazy dog."], 2),
    ChoiceItem("q3", "Which?", ["yes", "no"], 1),
]


def _loaded(model_dir) -> Loaded:
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    backbone, head = model_parts(model)
    return Loaded("m", model, tok, backbone, head, torch.device("cpu"), 512)


def _plain_per_byte(loaded: Loaded, item: ChoiceItem) -> list[float]:
    texts, spans = option_texts(loaded.tokenizer, item)
    out = []
    for text, span in zip(texts, spans, strict=True):
        (a, b) = span[0]
        assert text[a:b] in item.options
        enc = loaded.tokenizer(text, return_offsets_mapping=True)
        ids = enc["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(loaded.model(torch.tensor([ids])).logits[0].double(), -1)
        lp = sum(float(logp[t - 1, ids[t]]) for t, (s, e) in enumerate(enc["offset_mapping"]) if t and e > a and s < b)
        out.append(lp / len(text[a:b].encode()))
    return out


def test_choice_matches_plain_computation(tiny):
    for which in ("llama", "gpt2"):  # a chat template, and the plain format
        loaded = _loaded(tiny[which])
        result = run_choice(loaded, ITEMS, batch_tokens=64, progress=False)
        assert result.n == len(ITEMS)
        for item, rec in zip(ITEMS, result.items, strict=True):
            plain = _plain_per_byte(loaded, item)
            np.testing.assert_allclose(rec["logprob_per_byte"], plain, rtol=1e-4)
            assert rec["picked"] == int(np.argmax(plain))
        assert result.value == np.mean([r["picked"] == i.correct for r, i in zip(result.items, ITEMS, strict=True)])


def test_choose_normalises_per_byte():
    # A long option with more total log-likelihood mass lost, but less per byte, wins.
    assert choose([-10.0, -3.0], [20, 3]) == 0
    assert choose([-10.0, -3.0], [5, 3]) == 1
