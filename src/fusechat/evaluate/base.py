"""What every evaluation task receives (a loaded model) and returns (metrics, counts and per-item records).

Kept apart from the tasks so that each task module is only its prompt and its grading, and the suite runner
is the only place that loads models and reads or writes the cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the task registry imports this module, and the recipe the registry: no torch at import
    import torch


@dataclass
class Loaded:
    """One model ready to evaluate: weights, tokenizer, the teacher pass's backbone/head split, and its limits."""

    name: str
    model: Any
    tokenizer: Any
    backbone: torch.nn.Module
    head: Any
    device: torch.device
    max_tokens: int  # the longest sequence the model reads (its config's max_position_embeddings, capped)


@dataclass
class TaskResult:
    """A task's score for one model: `metric` ± `stderr` over `n` items, plus what each item gave."""

    metric: str
    value: float
    stderr: float
    n: int
    extra: dict[str, Any] = field(default_factory=dict)
    items: list[dict] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "stderr": self.stderr, "n": self.n, **self.extra}


def accuracy(correct: list[bool]) -> tuple[float, float]:
    """Mean of 0/1 outcomes and its binomial standard error sqrt(p(1−p)/n)."""
    n = len(correct)
    if n == 0:
        return float("nan"), float("nan")
    p = sum(bool(c) for c in correct) / n
    return p, math.sqrt(p * (1 - p) / n)


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n))."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)
