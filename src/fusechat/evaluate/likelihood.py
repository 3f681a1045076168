"""Log-likelihood of character spans of texts, and bits per byte of held-out assistant turns.

Bits per byte is the held-out metric that compares models with different tokenizers: the same characters are
scored by each model in its own tokenization, and the total −log₂ p is divided by the UTF-8 bytes of the
supervised text, which no tokenizer changes. Perplexity per token would reward a tokenizer with longer tokens.

Scoring reuses the teacher pass: `encode` finds the supervised positions from character offsets, `make_batches`
sorts by length, and `score_batch` applies the output head to supervised rows only, so no (batch, length,
vocabulary) tensor is ever built. Multiple choice uses the same function with the option as the span.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from fusechat.data.conversations import supervised_positions
from fusechat.teacher.scoring import score_batch
from fusechat.teacher.teach import Encoded, encode, make_batches

LN2 = math.log(2.0)


@dataclass
class SpanScore:
    """Log-likelihood of the spans of one text: sum of log p (nats) over its supervised tokens, and their count."""

    logprob: float
    n_tokens: int
    n_bytes: int  # UTF-8 bytes of the scored span text (after truncation to `max_tokens`)


def _truncate(item: Encoded, text: str, spans: np.ndarray, max_tokens: int) -> tuple[Encoded, int]:
    """Cut a sequence longer than the model can read, keeping the spans' bytes consistent with what is scored."""
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    if len(item.input_ids) > max_tokens:
        ids, offs = item.input_ids[:max_tokens], item.offsets[:max_tokens]
        end = int(offs[:, 1].max()) if len(offs) else 0
        spans = np.stack([np.minimum(spans[:, 0], end), np.minimum(spans[:, 1], end)], axis=1)
        spans = spans[spans[:, 1] > spans[:, 0]]
        item = Encoded(item.index, ids, offs, supervised_positions(offs, spans))
    n_bytes = sum(len(text[s:e].encode("utf-8")) for s, e in spans)
    return item, n_bytes


def span_logprobs(
    backbone: torch.nn.Module,
    head,
    tokenizer,
    texts: list[str],
    spans: list[np.ndarray],
    max_tokens: int,
    batch_tokens: int = 4096,
    max_batch: int = 32,
    device: torch.device | str = "cpu",
    desc: str = "score",
    progress: bool = True,
) -> list[SpanScore]:
    """Score each text's `spans` (character [start, end) pairs) with the model in its own tokenization.

    A token counts if its characters overlap a span (the teacher pass's rule); its log p is that of the model
    predicting it from everything before it. Texts longer than `max_tokens` tokens are cut, and only the bytes
    still covered are counted. Returns one `SpanScore` per text, in order.
    """
    encoded, n_bytes = [], []
    for item in encode(tokenizer, texts, spans):
        cut, nb = _truncate(item, texts[item.index], spans[item.index], max_tokens)
        encoded.append(cut)
        n_bytes.append(nb)
    totals = [0.0] * len(texts)
    bar = tqdm(
        total=sum(len(e.input_ids) for e in encoded), unit="tok", unit_scale=True, desc=desc, disable=not progress
    )
    for batch in make_batches(encoded, batch_tokens, max_batch):
        length = max(len(e.input_ids) for e in batch)
        ids = torch.zeros((len(batch), length), dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for b, e in enumerate(batch):
            ids[b, : len(e.input_ids)] = torch.from_numpy(e.input_ids.astype(np.int64))
            mask[b, : len(e.input_ids)] = 1
        positions = [torch.from_numpy(e.positions.astype(np.int64)) for e in batch]
        gold = score_batch(backbone, head, ids.to(device), mask.to(device), positions, k=1).wait().gold_logprob
        start = 0
        for e in batch:
            p = len(e.positions)
            totals[e.index] = float(gold[start : start + p].double().sum())
            start += p
        bar.update(int(mask.sum()))
    bar.close()
    return [SpanScore(totals[i], len(encoded[i].positions), n_bytes[i]) for i in range(len(texts))]


def bits_per_byte(nll_nats: np.ndarray, n_bytes: np.ndarray) -> tuple[float, float]:
    """Corpus bits per byte, Σ nll / (ln 2 · Σ bytes), and its standard error over conversations.

    Shapes: (n,) each. The standard error is the delta-method one for a ratio of sums, treating conversations as
    the independent units: sqrt(Σ (x_i − R·y_i)² / (n (n − 1))) / ȳ with x in bits and y in bytes.
    """
    x = np.asarray(nll_nats, dtype=np.float64) / LN2
    y = np.asarray(n_bytes, dtype=np.float64)
    if y.sum() <= 0:
        return float("nan"), float("nan")
    ratio = x.sum() / y.sum()
    n = len(x)
    if n < 2:
        return float(ratio), float("nan")
    se = math.sqrt(((x - ratio * y) ** 2).sum() / (n * (n - 1))) / y.mean()
    return float(ratio), float(se)
