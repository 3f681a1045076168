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

import torch

MAX_FREE = 16  # buffers kept for reuse; beyond that the smallest are dropped


class BufferPool:
    """uint8 buffers handed out by `take` and returned by `give`; thread-safe (the reader and writer use it)."""

    def __init__(self) -> None:
        self._free: list[torch.Tensor] = []
        self._busy: dict[int, Future] = {}  # storage address → a job still reading that memory
        self._lock = threading.Lock()

    def hold(self, tensor: torch.Tensor, job: Future) -> None:
        """Keep the memory under `tensor` out of `take` until `job` (which reads it, e.g. a hash) is done."""
        with self._lock:
            self._busy[tensor.untyped_storage().data_ptr()] = job

    def _ready(self, buf: torch.Tensor) -> bool:  # the lock is held
        job = self._busy.get(buf.untyped_storage().data_ptr())
        if job is not None and job.done():
            del self._busy[buf.untyped_storage().data_ptr()]
            job = None
        return job is None

    def take(self, nbytes: int) -> torch.Tensor:
        """A (nbytes,) uint8 tensor: the smallest free buffer that fits and no job still reads (a prefix of
        it), or a new one."""
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.numel() >= nbytes and self._ready(b)]
            if fits:  # by position: list.remove would compare tensors elementwise
                best = min(fits, key=lambda i: self._free[i].numel())
                return self._free.pop(best)[:nbytes]
        return torch.empty(nbytes, dtype=torch.uint8)

    def give(self, tensor: torch.Tensor) -> None:
        """Hand back the whole memory under `tensor` (any dtype, shape or view) for reuse.

        The caller must own that memory and be done with every tensor that views it.
        """
        storage = tensor.untyped_storage()
        if storage.nbytes() == 0:
            return
        buf = torch.empty(0, dtype=torch.uint8).set_(storage)
        with self._lock:
            self._free.append(buf)
            if len(self._free) > MAX_FREE:
                self._free.pop(min(range(len(self._free)), key=lambda i: self._free[i].numel()))
