"""Tiny models for the evaluation tests: a ChatML Llama (byte-level BPE) and a GPT-2 with no chat template."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from tests.tiny_models import (
    byte_bpe_tokenizer,
    metaspace_tokenizer,
    sample_chats,
    save_gpt2,
    save_llama,
    tiny_llama_config,
    write_conversations,
)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Two tiny models of different architectures and tokenizers, and held-out conversations."""
    root = tmp_path_factory.mktemp("eval")
    chat_tok = byte_bpe_tokenizer()
    return {
        "root": root,
        "llama": save_llama(root / "llama", chat_tok, seed=3),
        "gpt2": save_gpt2(root / "gpt2", metaspace_tokenizer(), seed=4),
        "lively": _lively_llama(root / "lively", chat_tok),
        "conv": write_conversations(root / "conv", sample_chats(10), chat_tok),
    }


def _lively_llama(path, tokenizer):
    """A tiny Llama with a wide initialisation, so that greedy decoding varies instead of repeating one token."""
    torch.manual_seed(5)
    config = tiny_llama_config(len(tokenizer), initializer_range=0.5)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
