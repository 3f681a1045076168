"""Inputs of the fault suite, built once per session in-process: tiny models, conversations, stores.

The faults are then injected into the real CLI (subprocesses), so what is measured is what a user runs.
"""

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

N_CHATS = 48
SHARD_ROWS = 4  # many small shards: a kill usually lands between two of them or inside one


def wide_llama(path, tokenizer, seed: int):
    """A Llama big enough (about 10 MB) that a merge of three takes long enough to be killed mid-write."""
    torch.manual_seed(seed)
    config = tiny_llama_config(len(tokenizer), hidden=256, layers=6)
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


@pytest.fixture(scope="session")
def references(world, tmp_path_factory):
    """Each stage's uninterrupted run through the CLI (stages.py), made on first use and shared by the checks."""
    from tests.faults.stages import References

    return References(world, tmp_path_factory.mktemp("references"))
