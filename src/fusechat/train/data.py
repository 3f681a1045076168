"""Training examples from a training-targets store, and the collator that batches them without waste.

Each example is one conversation: its pivot token ids and, at its supervised positions, the sparse target
(top-k ids and log-probs). The collator pads to the longest sequence of the batch (never to a fixed maximum),
or with `pack=True` puts several conversations in one row, separated by restarting position ids so the
attention mask keeps them apart; targets stay sparse, concatenated in (row, position) order: the same order as
the supervised labels, which is how the trainer pairs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import torch

from fusechat.errors import FusechatError
from fusechat.store.format import TopKStore

IGNORE = -100
COLUMNS = ["input_ids", "positions", "topk_ids", "topk_logprobs"]


class TargetsDataset(torch.utils.data.Dataset):
    """A training-targets store, read into Arrow tables once (compact), one example per conversation.

    `max_length` truncates each conversation to its first `max_length` tokens (positions whose next token
    falls beyond are dropped). `with_targets=False` skips the top-k columns (CLM-only training).
    """

    def __init__(self, store: TopKStore, max_length: int | None = None, with_targets: bool = True):
        self.store, self.max_length, self.with_targets = store, max_length, with_targets
        columns = COLUMNS if with_targets else COLUMNS[:2]
        self.tables = [store.read_table(i, columns) for i in range(store.n_shards)]
        self.starts = np.cumsum([0] + [t.num_rows for t in self.tables])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def max_target_id(self) -> int:
        """The largest id in the inputs and targets (to check against the pivot's vocabulary before
        training)."""
        best = -1
        for t in self.tables:
            for name in ("input_ids", "topk_ids") if self.with_targets else ("input_ids",):
                col = pc.list_flatten(t.column(name))
                if name == "topk_ids":
                    col = pc.list_flatten(col)
                if len(col):
                    best = max(best, int(pc.max(col).as_py()))
        return best

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        shard = int(np.searchsorted(self.starts, index, side="right") - 1)
        row = self.tables[shard].slice(index - int(self.starts[shard]), 1).to_pylist()[0]
        ids = np.asarray(row["input_ids"], dtype=np.int64)
        positions = np.asarray(row["positions"], dtype=np.int64)
        keep = slice(None)
        if self.max_length is not None and len(ids) > self.max_length:
            ids = ids[: self.max_length]
            keep = positions < self.max_length - 1
            positions = positions[keep]
        example = {"input_ids": ids, "positions": positions}
        if self.with_targets:
            k = self.store.k
            example["topk_ids"] = np.asarray(row["topk_ids"], dtype=np.int64).reshape(-1, k)[keep]
            example["topk_logprobs"] = np.asarray(row["topk_logprobs"], dtype=np.float32).reshape(-1, k)[keep]
        return example


def pack_rows(lengths: list[int], max_length: int) -> list[list[int]]:
    """Group example indices into rows of at most `max_length` tokens, first fit by decreasing length."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_length - lengths[i])
    return [sorted(r) for r in rows]


@dataclass
class FusionCollator:
    """Batches examples: `input_ids` (B, L), `labels` (B, L) holding input_ids[t + 1] at t + 1 for supervised
    t and -100 elsewhere (Hugging Face's unshifted convention, so the Trainer counts supervised positions
    right), `attention_mask` (B, L) or, packed, `position_ids` (B, L); `target_ids` (N, k) and
    `target_logprobs` (N, k) in (row, position) order when the examples carry targets. L is the batch's
    longest row."""

    pad_id: int = 0
    pack: bool = False
    max_length: int | None = None

    def __call__(self, examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        if self.pack:
            if self.max_length is None:
                raise FusechatError("packing needs a maximum row length (--max-length)")
            rows = pack_rows([len(e["input_ids"]) for e in examples], self.max_length)
        else:
            rows = [[i] for i in range(len(examples))]
        lengths = [sum(len(examples[i]["input_ids"]) for i in row) for row in rows]
        b, width = len(rows), max(lengths)
        input_ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        labels = torch.full((b, width), IGNORE, dtype=torch.long)
        position_ids = torch.zeros((b, width), dtype=torch.long)
        attention_mask = torch.zeros((b, width), dtype=torch.long)
        targets: list[tuple[np.ndarray, np.ndarray]] = []
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                e = examples[i]
                n = len(e["input_ids"])
                ids = torch.from_numpy(e["input_ids"])
                input_ids[r, at : at + n] = ids
                position_ids[r, at : at + n] = torch.arange(n)
                attention_mask[r, at : at + n] = 1
                nxt = torch.from_numpy(e["positions"]) + 1
                labels[r, at + nxt] = ids[nxt]
                if "topk_ids" in e:
                    targets.append((e["topk_ids"], e["topk_logprobs"]))
                at += n
            # padding is its own sequence (positions restart) so a packed row's mask keeps it apart
            position_ids[r, at:] = torch.arange(width - at)
        batch = {"input_ids": input_ids, "labels": labels}
        if self.pack:
            batch["position_ids"] = position_ids
        else:
            batch["attention_mask"] = attention_mask
        if targets:
            batch["target_ids"] = torch.from_numpy(np.concatenate([t[0] for t in targets]))
            batch["target_logprobs"] = torch.from_numpy(np.concatenate([t[1] for t in targets]))
        return batch
