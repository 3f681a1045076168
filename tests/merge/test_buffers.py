"""The merge's buffer pool hands memory back out, best fit first, and never two borrowers the same buffer."""

from __future__ import annotations

import torch

from fusechat.merge.buffers import MAX_FREE, BufferPool


def test_reuses_the_smallest_buffer_that_fits():
    pool = BufferPool()
    big, small = pool.take(1000), pool.take(100)
    big_ptr, small_ptr = big.data_ptr(), small.data_ptr()
    pool.give(big.view(torch.int16)[:10])  # any view of it returns the whole buffer
    pool.give(small)
    again = pool.take(80)
    assert again.numel() == 80 and again.data_ptr() == small_ptr
    assert pool.take(500).data_ptr() == big_ptr
    fresh = pool.take(500)  # nothing free fits any more: a new buffer
    assert fresh.data_ptr() not in (big_ptr, small_ptr)


def test_keeps_at_most_max_free():
    pool = BufferPool()
    buffers = [pool.take(10 + i) for i in range(MAX_FREE + 4)]
    for b in buffers:
        pool.give(b)
    assert len(pool._free) == MAX_FREE
    assert min(b.numel() for b in pool._free) == 14  # the smallest were dropped


def test_a_held_buffer_is_not_handed_out_until_its_job_is_done():
    from concurrent.futures import Future

    pool = BufferPool()
    buf = pool.take(100)
    job = Future()
    pool.hold(buf[10:20], job)  # a job (e.g. hashing) still reads part of it
    pool.give(buf)
    other = pool.take(50)
    assert other.data_ptr() != buf.data_ptr()
    job.set_result(None)
    assert pool.take(50).data_ptr() == buf.data_ptr()
