"""The conversations file every model reads: rendered chat text and the character spans that are supervised.

`fusechat prepare` writes it once, with the pivot's chat template; every teacher pass, the alignment and the
training read the same text, so all models see exactly the same characters. This module is the reader and the
one definition of which tokens are supervised.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fusechat.errors import FusechatError
from fusechat.manifest import check_files, read_manifest

STAGE = "prepare"
FORMAT = "fusechat.conversations"
FORMAT_VERSION = 1
FILE = "conversations.parquet"


def conversations_schema() -> pa.Schema:
    """Columns of `conversations.parquet` (see docs/formats.md)."""
    return pa.schema(
        [
            ("id", pa.string()),  # stable id (from the record, else derived from its content)
            ("text", pa.string()),  # the conversation rendered with the pivot's chat template
            (
                "spans",
                pa.list_(pa.list_(pa.int32(), 2)),
            ),  # character [start, end) of supervised assistant text
            ("messages", pa.string()),  # JSON list of {role, content} as normalised (for generation and eval)
            ("source", pa.string()),  # input file name
            ("record", pa.int64()),  # record number in that file (0-based)
        ]
    )


def supervised_mask(offsets: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Which tokens are supervised: those whose character span overlaps an assistant span.

    `offsets` (n, 2) character [start, end) per token; `spans` (m, 2) sorted, non-overlapping. A token with an
    empty span (a special token the tokenizer added, such as BOS) is never supervised. A token straddling a span
    edge counts as supervised, so the first and last pieces of an assistant turn are never lost.
    """
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    if len(spans) == 0 or len(offsets) == 0:
        return np.zeros(len(offsets), dtype=bool)
    start, end = offsets[:, 0], offsets[:, 1]
    # The last span starting before the token's end is the only one that can overlap it (spans are disjoint).
    j = np.searchsorted(spans[:, 0], end, side="left") - 1
    valid = j >= 0
    jj = np.clip(j, 0, None)
    return valid & (spans[jj, 1] > start) & (end > start)


def supervised_positions(offsets: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Positions t (int32) whose next token t+1 is supervised: the positions a teacher is scored at."""
    mask = supervised_mask(offsets, spans)
    return (np.nonzero(mask[1:])[0]).astype(np.int32)


def spans_n_bytes(text: str, spans: np.ndarray) -> int:
    """UTF-8 bytes of the supervised text: the per-byte denominator, identical for every tokenizer."""
    return sum(len(text[s:e].encode("utf-8")) for s, e in np.asarray(spans).reshape(-1, 2))


class Conversations:
    """A prepared conversations directory, read whole (it holds text only, so it stays small)."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.manifest = read_manifest(self.dir, stage=STAGE)
        if self.manifest.get("format_version", 0) > FORMAT_VERSION:
            raise FusechatError(f"{self.dir}: conversations format is newer than this fusechat reads; upgrade")
        path = self.dir / FILE
        # A bit flipped in the text can still decode, to other text; the sha256 the manifest recorded decides
        # (hashed once per process; outputs of an older fusechat without `files` are read unchecked).
        check_files(self.dir, suffixes=(FILE,))
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as e:
            raise FusechatError(f"{path}: unreadable ({e}); rerun `fusechat prepare`") from None
        self.ids: list[str] = table.column("id").to_pylist()
        self.texts: list[str] = table.column("text").to_pylist()
        spans = table.column("spans").combine_chunks()
        flat = np.asarray(spans.flatten().flatten(), dtype=np.int32).reshape(-1, 2)
        bounds = np.asarray(spans.offsets, dtype=np.int64)
        self.spans: list[np.ndarray] = [flat[bounds[i] : bounds[i + 1]] for i in range(len(self.ids))]
        self._messages: list[str] = table.column("messages").to_pylist()

    @property
    def fingerprint(self) -> str:
        """Identifies the rendered text and spans; downstream manifests record it."""
        return str(self.manifest["fingerprint"])

    def __len__(self) -> int:
        return len(self.ids)

    def messages(self, index: int) -> list[dict]:
        return json.loads(self._messages[index])

    def n_bytes(self, index: int) -> int:
        return spans_n_bytes(self.texts[index], self.spans[index])
