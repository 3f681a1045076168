"""Batched left-padded greedy generation equals one-at-a-time greedy decoding, and repeats exactly."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fusechat.evaluate.generation import eos_ids, generate, generate_ids, left_pad
from fusechat.evaluate.prompts import render, stop_strings, tokenize_prompts

QUESTIONS = ["What is 12 + 30?", "Say hello.", "The quick brown fox jumps over the lazy dog. Why?", "日本語?", "Hi"]


def _greedy_reference(model, tokenizer, prompt: str, n: int) -> list[int]:
    """Plain greedy decoding: full forward pass per step, argmax, stop at an eos id. No cache, no padding."""
    ids = torch.from_numpy(tokenize_prompts(tokenizer, [prompt])[0])[None]
    eos = eos_ids(model, tokenizer)
    new = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(ids).logits[0, -1].argmax())
            if nxt in eos:
                break
            new.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return new


def test_batched_equals_unbatched_and_reference(tiny):
    for which in ("lively", "gpt2"):  # a chat template, and the plain format with a stop string
        model = AutoModelForCausalLM.from_pretrained(tiny[which]).eval()
        tok = AutoTokenizer.from_pretrained(tiny[which])
        prompts = [render(tok, [{"role": "user", "content": q}]) for q in QUESTIONS]
        batched = generate_ids(model, tok, prompts, max_new_tokens=12, batch_size=4, progress=False)
        single = generate_ids(model, tok, prompts, max_new_tokens=12, batch_size=1, progress=False)
        again = generate_ids(model, tok, prompts, max_new_tokens=12, batch_size=4, progress=False)
        assert batched == single == again
        for p, ids in zip(prompts, batched, strict=True):
            assert ids == _greedy_reference(model, tok, p, 12)
        texts = generate(model, tok, prompts, max_new_tokens=12, batch_size=4, stops=stop_strings(tok), progress=False)
        assert texts == [tok.decode(ids, skip_special_tokens=True).split("\nUser:")[0].strip() for ids in batched]
    assert len({tuple(ids) for ids in batched}) > 1  # distinct prompts, distinct continuations


def test_left_pad_aligns_rows_to_the_right():
    import numpy as np

    ids, mask = left_pad([np.array([5, 6, 7]), np.array([9])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_plain_format_without_template(tiny):
    tok = AutoTokenizer.from_pretrained(tiny["gpt2"])
    assert not tok.chat_template
    text = render(tok, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}])
    assert text == "User: Hi\nAssistant: Yo\nAssistant:" or text.endswith("Assistant:")
