"""Hugging Face `datasets` data sets as sources: a `save_to_disk` directory, or a `Dataset` passed from Python.

Users who already hold their chats as a `datasets.Dataset` should not have to export them to JSONL first.
Rows are read in batches (Arrow to Python a batch at a time) and go through the same chat-format checks as
file records. `datasets` is an optional dependency (`pip install 'fusechat[datasets]'`); it is imported only
when such a source is given. A `DatasetDict` (several splits) is refused with its split names: one split is
one source.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusechat.data.readers import EXPECTED, RawRecord
from fusechat.errors import FusechatError

BATCH_ROWS = 256
INSTALL = "pip install 'fusechat[datasets]'"


def is_dataset(obj: Any) -> bool:
    """Whether `obj` is a `datasets` object (checked by its class's module: `datasets` is not imported here)."""
    return type(obj).__module__.split(".")[0] == "datasets"


def _is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


@dataclass
class DatasetSource:
    """The rows of one `datasets.Dataset` split; `path` is its save_to_disk directory, if it came from one."""

    dataset: Any
    name: str
    path: Path | None = None
    read: int = field(default=0, init=False)

    @classmethod
    def of(cls, dataset: Any) -> DatasetSource:
        """A source for a `datasets` object passed from Python."""
        import datasets

        if isinstance(dataset, datasets.DatasetDict):
            splits = ", ".join(dataset)
            raise FusechatError(
                f"a DatasetDict with splits ({splits}); give one split, e.g. dataset['{next(iter(dataset))}']"
            )
        if not isinstance(dataset, datasets.Dataset):
            raise FusechatError(
                f"a datasets.{type(dataset).__name__} is not a Dataset; give a Dataset (an IterableDataset "
                "cannot be fingerprinted to resume: materialise it with Dataset.from_generator)"
            )
        split = f":{dataset.split}" if dataset.split is not None else ""
        return cls(dataset, f"<datasets.Dataset{split} {dataset.num_rows} rows>")

    @classmethod
    def from_disk(cls, path: Path) -> DatasetSource:
        """A source for a `Dataset.save_to_disk` directory."""
        if (path / "dataset_dict.json").is_file():
            splits = sorted(p.name for p in path.iterdir() if p.is_dir() and _is_saved_dataset(p))
            raise FusechatError(
                f"{path}: a saved DatasetDict with splits ({', '.join(splits)}); give one split's directory, "
                f"e.g. {path / (splits[0] if splits else 'train')}"
            )
        if not _is_saved_dataset(path):
            raise FusechatError(
                f"{path}: a directory, but not a `datasets` save_to_disk one (no state.json); {EXPECTED}"
            )
        try:
            import datasets
        except ImportError:
            raise FusechatError(
                f"{path}: a `datasets` save_to_disk directory; reading it needs datasets: {INSTALL}"
            ) from None
        try:
            dataset = datasets.load_from_disk(str(path))
        except (OSError, ValueError) as e:
            raise FusechatError(f"{path}: `datasets` cannot load it ({e}); save it again") from None
        return cls(dataset, str(path), path)

    def records(self) -> Iterator[RawRecord]:
        rows = self.dataset.with_format(None)
        for start in range(0, rows.num_rows, BATCH_ROWS):
            batch = rows[start : start + BATCH_ROWS]
            columns = list(batch)
            for i in range(len(batch[columns[0]]) if columns else 0):
                yield RawRecord(self.name, start + i, None, {c: batch[c][i] for c in columns})
                self.read += 1

    def describe(self) -> dict:
        """What identifies the rows: datasets' own fingerprint of the data and its transforms, and for a saved
        directory the sha256 of its Arrow files too. Without a fingerprint, a random one: never skipped as done."""
        out: dict[str, Any] = {
            "datasets_fingerprint": getattr(self.dataset, "_fingerprint", None) or uuid.uuid4().hex,
            "rows": self.dataset.num_rows,
            "columns": list(self.dataset.column_names),
            "records": self.read,
        }
        if self.path is not None:
            h = hashlib.sha256()
            for f in sorted(self.path.glob("*.arrow")):
                with open(f, "rb") as fh:
                    while block := fh.read(1 << 22):
                        h.update(block)
            out = {"path": str(self.path), "kind": "datasets", "sha256": h.hexdigest(), **out}
        else:
            out = {"name": self.name, "kind": "datasets", **out}
        return out
