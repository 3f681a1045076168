"""The merge's buffer pool hands memory back out, best fit first, and never two borrowers the same buffer."""

from __future__ import annotations

import numpy as np

from fusechat.merge.buffers import MAX_FREE, BufferPool


def test_reuses_the_smallest_buffer_that_fits():
    pool = BufferPool()
    big, small = pool.take(1000), pool.take(100)
    big_ptr, small_ptr = big.ctypes.data, small.ctypes.data
    pool.give(big.view(np.int16)[:10])  # any view of it returns the whole buffer
    pool.give(small)
    again = pool.take(80)
    assert again.size == 80 and again.ctypes.data == small_ptr
    assert pool.take(500).ctypes.data == big_ptr
    fresh = pool.take(500)  # nothing free fits any more: a new buffer
    assert fresh.ctypes.data not in (big_ptr, small_ptr)


def test_keeps_at_most_max_free():
    pool = BufferPool()
    buffers = [pool.take(10 + i) for i in range(MAX_FREE + 4)]
    for b in buffers:
        pool.give(b)
    assert len(pool._free) == MAX_FREE
    assert min(b.size for b in pool._free) == 14  # the smallest were dropped


def test_a_held_buffer_is_not_handed_out_until_its_job_is_done():
    from concurrent.futures import Future

    pool = BufferPool()
    buf = pool.take(100)
    job = Future()
    pool.hold(buf[10:20], job)  # a job (e.g. hashing) still reads part of it
    pool.give(buf)
    other = pool.take(50)
    assert other.ctypes.data != buf.ctypes.data
    job.set_result(None)
    assert pool.take(50).ctypes.data == buf.ctypes.data


def test_reserve_allocates_only_what_the_free_buffers_do_not_cover():
    pool = BufferPool()
    kept = pool.take(1000)
    pool.give(kept)
    pool.reserve([900, 300, 0])  # 900 fits the free 1000; 300 needs a new buffer; 0 needs none
    assert sorted(b.size for b in pool._free) == [300, 1000]
    reserved = {b.ctypes.data for b in pool._free}
    pool.reserve([900, 300])  # both covered now: nothing allocated
    assert len(pool._free) == 2
    got = [pool.take(300), pool.take(900)]
    assert {g.ctypes.data for g in got} == reserved and got[1].ctypes.data == kept.ctypes.data
    assert pool._free == []
