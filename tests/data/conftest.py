"""Session fixtures for the data tests: tiny pivot tokenizers trained once (see chatdata.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.chatdata import train_tokenizer


@pytest.fixture(scope="session")
def bpe_pivot(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer (Ġ) with a ChatML template."""
    return train_tokenizer(tmp_path_factory.mktemp("pivot"), "bpe")


@pytest.fixture(scope="session")
def sp_pivot(tmp_path_factory) -> Path:
    """A SentencePiece-style (Metaspace ▁) tokenizer with a Gemma-like template."""
    return train_tokenizer(tmp_path_factory.mktemp("pivot"), "sp")


@pytest.fixture(params=["bpe", "sp"])
def pivot(request, bpe_pivot, sp_pivot) -> Path:
    return bpe_pivot if request.param == "bpe" else sp_pivot
