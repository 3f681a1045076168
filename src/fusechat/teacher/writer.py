"""The teacher pass's host-side half on a background thread: rows assembled and shards written while the device
runs the next batch.

The scoring loop hands over each batch's scores (still in flight to pinned memory on CUDA) as soon as it has
queued the next forward; this thread waits for the copy, turns them into rows, and when a shard's last batch
has arrived writes, renames and hashes the shard. The queue is bounded, so a slow disk holds the device back
instead of filling memory. An error on this thread is raised on the scoring thread at its next hand-over (or at
`close`), and an error on the scoring thread aborts the shard being written here; either way only whole,
renamed shards with their sidecars remain, which is what resume relies on. Shard locks stay with the scoring
thread: it takes them, and releases each one when this thread reports the shard written.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.profiler import record_function

from fusechat.store.format import ShardWriter, TopKRecord


@dataclass
class ShardJob:
    """One shard on its way to disk: its rows in order, and the records assembled so far by row index."""

    index: int
    order: list[int]  # conversation indices, in the order the shard stores them
    records: dict[int, TopKRecord] = field(default_factory=dict)


class BackgroundWriter:
    """A thread that assembles rows (`assemble(batch, scores) -> [(index, record)]`) and writes shards with the
    writers `open_shard(index)` makes (`ShardedOutput.writer`)."""

    def __init__(self, open_shard: Callable[[int], ShardWriter], assemble: Callable, depth: int = 4):
        self.open_shard, self.assemble = open_shard, assemble
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._done: queue.Queue = queue.Queue()  # shard indices written, for the scoring thread's locks
        self._cancelled = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fusechat-teach-writer", daemon=True)
        self._thread.start()

    def put(self, message: tuple) -> None:
        """Queue ("batch", job, batch, scores) or ("end", job); raise this thread's error if it has one."""
        while True:
            self._raise()
            try:
                self._queue.put(message, timeout=0.1)
                return
            except queue.Full:
                continue

    def written(self) -> list[int]:
        """Shards written since the last call (their locks may be released)."""
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        """Wait until every queued shard is written; raise the thread's error if it failed."""
        self.put(("stop",))
        self._thread.join()
        self._raise()

    def cancel(self) -> None:
        """Stop after the message in hand, dropping the shard being written (its temporary file is removed)."""
        self._cancelled.set()
        while self._thread.is_alive():
            try:
                self._queue.put(("stop",), timeout=0.1)
            except queue.Full:
                continue
            self._thread.join(timeout=0.1)
        self._thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        writer: Any = None
        try:
            while True:
                message = self._queue.get()
                if message[0] == "stop" or self._cancelled.is_set():
                    return
                if message[0] == "batch":
                    _, job, batch, scores = message
                    with record_function("teach.rows"):
                        job.records.update(self.assemble(batch, scores.wait()))
                    continue
                _, job = message
                with record_function("teach.write"):
                    writer = self.open_shard(job.index)
                    for i in job.order:
                        writer.write(job.records.pop(i))
                    writer.close()
                    writer = None
                self._done.put(job.index)
        except BaseException as e:  # handed to the scoring thread, which raises it
            self.error = e
        finally:
            if writer is not None:
                writer.abort()
