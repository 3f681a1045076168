"""Direct (O_DIRECT) reads and writes give the same bytes as buffered ones, odd sizes and offsets included."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fusechat.merge.buffers import BufferPool
from fusechat.merge.checkpoint import Checkpoint
from fusechat.merge.shard_file import STAGE, ShardFile
from tests.merge.checkpoints import make_family


@pytest.mark.parametrize("sizes", [[0], [1], [5, 4096, 3], [STAGE - 7, 11, STAGE + 4099]])
def test_shard_file_writes_exact_bytes(tmp_path, sizes):
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 256, n, dtype=np.uint8) for n in sizes]
    f = ShardFile(tmp_path / "out.bin")
    for p in parts:
        f.write(p)
    f.close()
    data = (tmp_path / "out.bin").read_bytes()
    assert data == b"".join(p.tobytes() for p in parts)


def test_pooled_direct_reads_equal_buffered_reads(tmp_path):
    base, _, _ = make_family(tmp_path / "in", seed=3, shards=(3, 1, 1), dtype=torch.bfloat16)
    direct, buffered = Checkpoint(base), Checkpoint(base)
    pool = BufferPool()
    try:
        for name in direct.names():
            got = direct.read(name, pool)
            expected = buffered.read(name)
            assert got.dtype == expected.dtype and np.array_equal(got, expected), name
            pool.give(got)
        if hasattr(os, "O_DIRECT"):
            assert direct._direct_fds, "O_DIRECT was not used on this filesystem"
    finally:
        direct.close()
        buffered.close()
