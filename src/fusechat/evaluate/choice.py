"""Multiple choice by log-likelihood: each option is scored as the assistant's reply, normalised per byte.

For a question, every option is appended to the same rendered prompt (the model's chat template around the user
turn), and the model's log-likelihood of the option's characters is divided by the option's UTF-8 bytes. The
option with the highest log-likelihood per byte is the model's choice. Per-byte normalisation keeps long options
from losing only for being long, and, like bits per byte, does not depend on the tokenizer.
"""

from __future__ import annotations

import numpy as np

from fusechat.evaluate.base import Loaded, TaskResult, accuracy
from fusechat.evaluate.datasets import ChoiceItem
from fusechat.evaluate.likelihood import span_logprobs
from fusechat.evaluate.prompts import prompt_format, render


def option_texts(tokenizer, item: ChoiceItem) -> tuple[list[str], list[np.ndarray]]:
    """One text per option (prompt + option) and the option's character span in it."""
    prompt = render(tokenizer, [{"role": "user", "content": item.prompt}])
    if prompt and not prompt[-1].isspace() and not prompt.endswith("\n"):
        prompt += " "  # the plain format ends with "Assistant:"; the reply starts after a space
    texts, spans = [], []
    for option in item.options:
        texts.append(prompt + option)
        spans.append(np.array([[len(prompt), len(prompt) + len(option)]], dtype=np.int64))
    return texts, spans


def choose(logprobs: list[float], n_bytes: list[int]) -> int:
    """Index of the best option by log-likelihood per byte (first one on ties)."""
    per_byte = [lp / max(nb, 1) for lp, nb in zip(logprobs, n_bytes, strict=True)]
    return int(np.argmax(per_byte))


def run_choice(
    loaded: Loaded,
    items: list[ChoiceItem],
    batch_tokens: int = 4096,
    max_batch: int = 32,
    desc: str = "choice",
    progress: bool = True,
) -> TaskResult:
    """Accuracy of the per-byte log-likelihood choice over `items`."""
    texts, spans, owner = [], [], []
    for q, item in enumerate(items):
        t, s = option_texts(loaded.tokenizer, item)
        texts += t
        spans += s
        owner += [q] * len(t)
    scores = span_logprobs(
        loaded.backbone,
        loaded.head,
        loaded.tokenizer,
        texts,
        spans,
        loaded.max_tokens,
        batch_tokens,
        max_batch,
        loaded.device,
        desc=desc,
        progress=progress,
    )
    records, correct = [], []
    start = 0
    for item in items:
        mine = scores[start : start + len(item.options)]
        start += len(item.options)
        picked = choose([s.logprob for s in mine], [s.n_bytes for s in mine])
        correct.append(picked == item.correct)
        records.append(
            {
                "id": item.id,
                "picked": picked,
                "correct_index": item.correct,
                "correct": picked == item.correct,
                "logprob_per_byte": [s.logprob / max(s.n_bytes, 1) for s in mine],
                **item.meta,
            }
        )
    acc, se = accuracy(correct)
    extra = {"prompt_format": prompt_format(loaded.tokenizer), "normalisation": "per_byte"}
    return TaskResult("accuracy", acc, se, len(items), extra, records)
