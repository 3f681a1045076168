"""The training tests' session fixture: a tiny pivot with its tokenizer and fusion targets from another model."""

from __future__ import annotations

import pytest
import torch

from tests.train.helpers import make_model, make_targets, make_tokenizer


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny Llama-style pivot (tied embeddings) with its tokenizer, and fusion targets from another
    model."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny")
    pivot = root / "pivot"
    make_tokenizer(pivot)
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(pivot))
    make_model(pivot, vocab, seed=1)
    source = make_model(root / "source", vocab, seed=2, layers=3)
    targets = make_targets(root / "targets", pivot, source)
    return {"root": root, "pivot": pivot, "targets": targets, "vocab": vocab, "source": source}
