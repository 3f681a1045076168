"""Writing one output shard straight to disk (O_DIRECT) through an aligned staging buffer.

A buffered write copies every byte into the page cache first; that copy into fresh page-cache pages was the second
largest cost of a merge, after the same copy on the read side (docs/benchmarks.md). With O_DIRECT the disk reads from
our buffer. O_DIRECT needs block-aligned memory, offsets and lengths, so bytes are gathered in an aligned 16 MiB buffer
written whenever it fills; the last block is padded with zeros and the file truncated to its true size. Where the
filesystem refuses O_DIRECT (tmpfs), the shard is written the buffered way, with writeback started per write so the disk
works while the merge computes. The file's sha256 is computed from the bytes as they are written (`sha256`), on a thread
of its own while the bytes go to disk: hashing the finished shards by reading them back would read every output byte
again, and hashing before writing would put the hash on the writer's path.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ALIGN = 4096
STAGE = 16 << 20
_HASHER = ThreadPoolExecutor(1, "shard-hash")  # one thread: a file's blocks are hashed in the order written


class ShardFile:
    """A new file written sequentially with `write(bytes-like)`; `close()` makes it durable (fsync)."""

    def __init__(self, path: Path) -> None:
        self.size = 0
        self._hash = hashlib.sha256()
        self._stage: np.ndarray | None = None
        self._fill = 0
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_DIRECT", 0), 0o666)
            self._direct = hasattr(os, "O_DIRECT")
        except OSError:  # EINVAL: no O_DIRECT on this filesystem
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            self._direct = False
        if self._direct:
            raw = np.empty(STAGE + ALIGN, dtype=np.uint8)
            pad = -raw.ctypes.data % ALIGN
            self._stage = raw[pad : pad + STAGE]

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        hashed = _HASHER.submit(self._hash.update, view)  # hashlib releases the GIL on large buffers
        try:
            self._write(view)
        finally:
            hashed.result()  # the caller may reuse `data` once this returns

    def _write(self, view: memoryview) -> None:
        if not self._direct:
            _write_all(self._fd, view)
            start_writeback(self._fd, self.size, len(view))
            self.size += len(view)
            return
        src = np.frombuffer(view, dtype=np.uint8)
        pos = 0
        while pos < src.size:
            k = min(STAGE - self._fill, src.size - pos)
            self._stage[self._fill : self._fill + k] = src[pos : pos + k]
            self._fill += k
            pos += k
            if self._fill == STAGE:
                self._flush(STAGE)
        self.size += src.size

    @property
    def sha256(self) -> str:
        """Hex sha256 of every byte written so far (the file's contents once closed)."""
        return self._hash.hexdigest()

    def _flush(self, nbytes: int) -> None:
        _write_all(self._fd, memoryview(self._stage[:nbytes]))
        self._fill = 0

    def close(self) -> None:
        """Write what is staged, trim the padding, fsync, close."""
        if self._direct and self._fill:
            padded = -(-self._fill // ALIGN) * ALIGN
            self._stage[self._fill : padded] = 0
            self._flush(padded)
            os.ftruncate(self._fd, self.size)
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _write_all(fd: int, view: memoryview) -> None:
    done = 0
    while done < len(view):
        done += os.write(fd, view[done:])


_SYNC_FILE_RANGE: Any = None


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing this byte range to disk now, without waiting (Linux; else a no-op).

    Without it, buffered output sits in the page cache until the shard's final fsync, which then writes the
    whole shard while nothing else happens; started per write, the disk writes while the next tensors merge.
    """
    global _SYNC_FILE_RANGE
    if _SYNC_FILE_RANGE is None:
        _SYNC_FILE_RANGE = False
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).sync_file_range
            fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            _SYNC_FILE_RANGE = fn
        except (OSError, AttributeError):
            pass
    if _SYNC_FILE_RANGE and nbytes:
        _SYNC_FILE_RANGE(fd, offset, nbytes, 2)  # SYNC_FILE_RANGE_WRITE: start writeback, do not wait
