"""`fusechat verify` catches bit flips and truncation in stores and checkpoints."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file

from fusechat.errors import FusechatError
from fusechat.teacher.teach import teach
from fusechat.verify import verify
from tests.tiny_models import byte_bpe_tokenizer, sample_chats, save_llama, write_conversations


def test_store_bit_flip_and_truncation(tmp_path):
    tok = byte_bpe_tokenizer()
    store = teach(
        str(save_llama(tmp_path / "m", tok)),
        write_conversations(tmp_path / "c", sample_chats(4), tok),
        tmp_path / "s",
        top_k=2,
        shard_rows=2,
        progress=False,
    )
    assert verify(store) == []
    flipped = shutil.copytree(store, tmp_path / "flipped")
    shard = flipped / "shard-00001-of-00002.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    assert [p for p in verify(flipped) if "shard-00001" in p and "corrupted" in p]
    cut = shutil.copytree(store, tmp_path / "cut")
    shard = cut / "shard-00000-of-00002.parquet"
    shard.write_bytes(shard.read_bytes()[:-7])
    assert [p for p in verify(cut) if "shard-00000" in p and "bytes" in p]


def test_safetensors_truncation(tmp_path):
    save_file({"a": torch.ones(10, 10)}, tmp_path / "model.safetensors")
    assert verify(tmp_path) == []
    f = tmp_path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-4])
    assert "truncated" in verify(tmp_path)[0]
    with pytest.raises(FusechatError):
        verify(tmp_path / "nothing")
