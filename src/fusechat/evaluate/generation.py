"""Greedy generation in left-padded batches, for exact-match tasks and MT-Bench answers.

Prompts are sorted by length so that a batch holds similar lengths (little padding), padded on the left so
that every row's next token sits in the last column, and decoded greedily: the same prompts give the same text
on every run. Generation stops at the model's end-of-turn tokens, read from its generation config and tokenizer.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from fusechat.evaluate.prompts import cut_at_stop, tokenize_prompts


def eos_ids(model, tokenizer) -> list[int]:
    """Every id that ends a turn: the generation config's eos ids and the tokenizer's eos."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return sorted(ids)


def left_pad(rows: list[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) input ids and attention mask with every row aligned to the right edge."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, length - len(r) :] = torch.from_numpy(r)
        mask[b, length - len(r) :] = 1
    return ids, mask


def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 256,
    batch_size: int = 8,
    stops: list[str] | None = None,
    desc: str = "generate",
    progress: bool = True,
) -> list[str]:
    """Greedy continuations of rendered prompts (one string each, in input order, cut at any stop string)."""
    stops = stops or []
    new_ids = generate_ids(model, tokenizer, prompts, max_new_tokens, batch_size, stops, desc, progress)
    return [cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), stops) for ids in new_ids]


def generate_ids(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 256,
    batch_size: int = 8,
    stops: list[str] | None = None,
    desc: str = "generate",
    progress: bool = True,
) -> list[list[int]]:
    """The new token ids of each greedy continuation, up to (not including) the first end-of-turn id."""
    stops = stops or []
    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    encoded = tokenize_prompts(tokenizer, prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    device = next(model.parameters()).device
    outputs: list[list[int]] = [[] for _ in prompts]
    bar = tqdm(total=len(prompts), unit="prompt", desc=desc, disable=not progress)
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        ids, mask = left_pad([encoded[i] for i in chunk], pad)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                num_beams=1,
                eos_token_id=eos or None,
                pad_token_id=pad,
                stop_strings=stops or None,
                tokenizer=tokenizer if stops else None,
            )
        for row, i in enumerate(chunk):
            new = out[row, ids.shape[1] :].tolist()
            cut = next((j for j, t in enumerate(new) if t in eos), len(new))
            outputs[i] = new[:cut]
        bar.update(len(chunk))
    bar.close()
    return outputs
