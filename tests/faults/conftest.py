"""Inputs of the fault suite, built once per session in-process: tiny models, conversations, stores.

The faults are then injected into the real CLI (subprocesses), so what is measured is what a user runs.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import (
    byte_bpe_tokenizer,
    metaspace_tokenizer,
    sample_chats,
    save_gpt2,
    save_llama,
    write_conversations,
)
from transformers import LlamaConfig, LlamaForCausalLM

N_CHATS = 48
SHARD_ROWS = 4  # many small shards: a kill usually lands between two of them or inside one


def wide_llama(path, tokenizer, seed: int):
    """A Llama big enough (about 10 MB) that a merge of three takes long enough to be killed mid-write."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    from fusechat.align.stage import align
    from fusechat.fuse.stage import fuse
    from fusechat.teacher.teach import teach

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("faults-world")
    piv_tok = byte_bpe_tokenizer(400)
    pivot = save_llama(root / "pivot", piv_tok, seed=0)
    source = save_gpt2(root / "source", metaspace_tokenizer(300), seed=1)
    conv = write_conversations(root / "conv", sample_chats(N_CHATS), piv_tok)
    stores = root / "stores"
    piv_store = teach(str(pivot), conv, stores / "pivot", top_k=4, shard_rows=SHARD_ROWS, progress=False)
    src_store = teach(str(source), conv, stores / "source", top_k=4, shard_rows=SHARD_ROWS, progress=False)
    aligned = align(piv_store, src_store, stores / "aligned")
    fused = fuse(piv_store, [aligned], stores / "fused")
    merge_inputs = [wide_llama(root / f"wide-{i}", piv_tok, seed=10 + i) for i in range(3)]
    return {
        "root": root,
        "pivot": pivot,
        "source": source,
        "conv": conv,
        "pivot_store": piv_store,
        "source_store": src_store,
        "aligned": aligned,
        "fused": fused,
        "merge_inputs": merge_inputs,
    }
