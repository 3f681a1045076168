"""The tiny models and conversations the teacher-pass tests share, built once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_models import (
    byte_bpe_tokenizer,
    metaspace_tokenizer,
    sample_chats,
    save_gpt2,
    save_llama,
    write_conversations,
)


@dataclass
class TeachInputs:
    root: Path  # stores are written under it, each test under its own name
    tok: Any  # the byte-level BPE tokenizer of `llama` and of the conversations
    llama: Path
    gpt2: Path  # a Metaspace tokenizer: another tokenization of the same texts
    conv: Path  # 12 prepared sample chats


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TeachInputs:
    root = tmp_path_factory.mktemp("teach")
    tok = byte_bpe_tokenizer()
    llama, gpt2 = save_llama(root / "llama", tok), save_gpt2(root / "gpt2", metaspace_tokenizer())
    return TeachInputs(root, tok, llama, gpt2, write_conversations(root / "conv", sample_chats(12), tok))
