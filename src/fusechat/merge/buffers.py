"""Reusing the byte buffers of a streaming merge instead of allocating fresh ones for every tensor.

Each tensor of a merge needs buffers for its inputs and its output; allocated fresh, every one is new memory
from the kernel (large allocations are mmapped and unmapped each time), so every byte read or written is
first a page fault and a page zeroed: 6.9 of a TIES merge's 12 CPU-seconds were system time here, most of
it that. The pool hands out buffers that came back, best fit first, so after the first few tensors a merge
reuses the same few buffers (a model has a handful of distinct tensor sizes).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np

MAX_FREE = 16  # buffers kept for reuse; beyond that the smallest are dropped


def _owner(a: np.ndarray) -> np.ndarray:
    """The array that owns the memory under `a` (a itself, or the root of its chain of views)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class BufferPool:
    """uint8 buffers handed out by `take` and returned by `give`; thread-safe (the reader and writer use it)."""

    def __init__(self) -> None:
        self._free: list[np.ndarray] = []
        self._busy: dict[int, Future] = {}  # buffer address → a job still reading that memory
        self._lock = threading.Lock()

    def hold(self, array: np.ndarray, job: Future) -> None:
        """Keep the memory under `array` out of `take` until `job` (which reads it, e.g. a hash) is done."""
        with self._lock:
            self._busy[_owner(array).ctypes.data] = job

    def _ready(self, buf: np.ndarray) -> bool:  # the lock is held
        job = self._busy.get(buf.ctypes.data)
        if job is not None and job.done():
            del self._busy[buf.ctypes.data]
            job = None
        return job is None

    def take(self, nbytes: int) -> np.ndarray:
        """A (nbytes,) uint8 array: the smallest free buffer that fits and no job still reads (a prefix of
        it), or a new one."""
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.size >= nbytes and self._ready(b)]
            if fits:
                best = min(fits, key=lambda i: self._free[i].size)
                return self._free.pop(best)[:nbytes]
        return np.empty(nbytes, dtype=np.uint8)

    def reserve(self, sizes: list[int]) -> None:
        """Make sure `take` can hand out buffers of these sizes (one each) without allocating.

        Called before reads that run in parallel: a fresh buffer is an mmap, which waits for the memory map's
        lock while another thread's read is faulting in its own fresh pages, so three first reads allocating
        their own buffers ran one after another.
        """
        with self._lock:
            free = [b.size for b in self._free if self._ready(b)]
            for nbytes in sorted(sizes, reverse=True):
                fits = [i for i, size in enumerate(free) if size >= nbytes]
                if fits:
                    free.pop(min(fits, key=lambda i: free[i]))
                elif nbytes:
                    self._free.append(np.empty(nbytes, dtype=np.uint8))

    def give(self, array: np.ndarray) -> None:
        """Hand back the whole memory under `array` (any dtype, shape or view) for reuse.

        The caller must own that memory and be done with every array that views it.
        """
        owner = _owner(array)
        if owner.nbytes == 0:
            return
        buf = owner.reshape(-1).view(np.uint8)
        with self._lock:
            if any(b.ctypes.data == buf.ctypes.data for b in self._free):
                return  # already back (two views of one buffer given back)
            self._free.append(buf)
            if len(self._free) > MAX_FREE:
                self._free.pop(min(range(len(self._free)), key=lambda i: self._free[i].size))
