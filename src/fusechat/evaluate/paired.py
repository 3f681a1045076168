"""Paired comparison of two models on the same evaluation items.

Two fine-tunes of one pivot differ far less than the spread between items, so the standard error of each score
(what the table shows) hides every real difference between them: the error of a *difference* must come from the
per-item differences. This module reads the per-item JSONL that `evaluate` writes and returns the difference and
its paired standard error: for bits per byte, the ratio estimator sum(Δnll) / sum(bytes) with its delta-method
error; for exact match and multiple choice, the mean of per-item (correct_a − correct_b).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fusechat.evaluate.base import mean_se
from fusechat.evaluate.likelihood import bits_per_byte


def read_items(path: Path) -> dict[str, dict]:
    """Per-item records of one model and task, by item id (empty when the file is absent)."""
    if not path.is_file():
        return {}
    items = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            if "id" in rec:
                items[str(rec["id"])] = rec
    return items


def paired_difference(a: dict[str, dict], b: dict[str, dict]) -> tuple[float, float, int] | None:
    """(score(a) − score(b), paired standard error, items in common), or None when the items cannot be paired.

    Bits-per-byte items (`nll_nats`, `n_bytes`) give a difference in bits per byte; items with `correct` give a
    difference in accuracy. Both models must have scored the same bytes of each item.
    """
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return None
    first = a[common[0]]
    if "nll_nats" in first and "n_bytes" in first:
        if any(a[i]["n_bytes"] != b[i]["n_bytes"] for i in common):
            return None
        # Σ Δnll / Σ bytes is a ratio of sums like bits per byte itself: same estimator, same error formula.
        diff, se = bits_per_byte(
            np.array([a[i]["nll_nats"] - b[i]["nll_nats"] for i in common]), np.array([a[i]["n_bytes"] for i in common])
        )
        return diff, se, len(common)
    if "correct" in first:
        diff, se = mean_se([float(bool(a[i]["correct"])) - float(bool(b[i]["correct"])) for i in common])
        return diff, se, len(common)
    return None
