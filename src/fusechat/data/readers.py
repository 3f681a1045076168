"""Raw records out of JSONL, JSON and Parquet files, streamed, each tagged with where it came from.

A reader knows files, not chat formats: it yields dictionaries with their record number (and line, where the
file has lines) so that every later complaint can name the file and the record. The kind of file is taken from
its suffix and, for `.json`, from its first characters (many `.json` files are really JSON Lines); JSON and
JSON Lines may be compressed (gzip, zstd, bzip2, xz: see compression.py). A `Source` is anything that yields
such records; files are one kind, `datasets` data sets (saved to disk or in memory, hf_datasets.py) another,
and generated data sets a third.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fusechat.data import compression as compressed
from fusechat.data.jsonstream import Cut, JsonRecords, may_be_incomplete
from fusechat.errors import FusechatError
from fusechat.manifest import sha256_file

log = logging.getLogger(__name__)

PARQUET_BATCH_ROWS = 256
SNIFF_CHARS = 1 << 24  # how much of a .json file's first line is read to tell JSON Lines from JSON
EXPECTED = (
    "expected JSON Lines, a JSON list, or Parquet (JSON optionally compressed: .gz, .zst, .bz2, .xz), "
    "or a `datasets` save_to_disk directory"
)


@dataclass(frozen=True)
class RawRecord:
    """One input record before any chat-format parsing. `line` is 1-based, or None for Parquet rows."""

    source: str
    record: int
    line: int | None
    data: Any
    error: str | None = None  # set when the record could not even be parsed (a bad JSON line)
    reason: str = "invalid_json"  # the skip-count key of `error` (formats.REASONS)


class Source(Protocol):
    """A stream of raw records with a name (used in errors and ids) and a description for the manifest."""

    name: str

    def records(self) -> Iterator[RawRecord]: ...

    def describe(self) -> dict: ...


@dataclass
class FileSource:
    """Records from one JSONL, JSON or Parquet file; `kind` is found from the file when not given."""

    path: Path
    kind: str | None = None
    compression: str | None = field(default=None, init=False)
    cut: Cut | None = field(default=None, init=False)
    read: int = field(default=0, init=False)
    _sha256: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.is_file():
            raise FusechatError(f"{self.path}: {not_a_file(self.path)}; {EXPECTED}")
        self.compression = compressed.detect(self.path)
        if self.kind is None:
            self.kind = file_kind(self.path, self.compression)
        elif self.kind == "parquet" and self.compression is not None:
            raise FusechatError(f"{self.path}: Parquet inside {self.compression}; decompress it first")

    @property
    def name(self) -> str:
        return str(self.path)

    def records(self) -> Iterator[RawRecord]:
        readers = {"jsonl": self._jsonl, "json": self._json, "parquet": _parquet}
        for rec in readers[str(self.kind)](self.path):
            self.read += 1
            yield rec

    def _json(self, path: Path) -> Iterator[RawRecord]:
        reader = JsonRecords(path, compression=self.compression)
        for number, line, obj in reader:
            yield RawRecord(self.name, number, line, obj)
        self.cut = reader.cut
        if self.cut is not None:
            log.warning(
                "%s: the JSON list is cut off at line %d (character %d); kept its %d complete records",
                path,
                self.cut.line,
                self.cut.char,
                self.cut.complete_records,
            )

    def _jsonl(self, path: Path) -> Iterator[RawRecord]:
        """One JSON object a line, blank lines skipped. A last line cut short (no newline, text ending early)
        means the file was cut: the lines before it are kept and the cut is reported."""
        number = char = 0
        with compressed.open_binary(path, self.compression) as f:
            for lineno, raw in enumerate(f, start=1):
                if lineno == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    # One bad line, not a bad file: the other lines are still records (and skippable).
                    char += len(raw.decode("utf-8", "surrogateescape"))
                    problem = f"line {lineno} is not UTF-8 text (byte {raw[e.start]:#04x} at byte {e.start + 1})"
                    yield RawRecord(self.name, number, lineno, None, error=problem, reason="invalid_text")
                    number += 1
                    continue
                char += len(line)
                if not line.strip():
                    continue
                try:
                    yield RawRecord(self.name, number, lineno, json.loads(line))
                except json.JSONDecodeError as e:
                    if not line.endswith("\n") and may_be_incomplete(e, line):
                        self.cut = Cut(line=lineno, char=char - len(line), complete_records=number)
                        log.warning("%s: last line %d is cut off; kept %d records", path, lineno, number)
                        return
                    problem = f"line {lineno} is not valid JSON ({e.msg}: column {e.colno})"
                    yield RawRecord(self.name, number, lineno, None, error=problem)
                except RecursionError:
                    problem = f"line {lineno} is JSON nested too deeply to read (over {sys.getrecursionlimit()} levels)"
                    yield RawRecord(self.name, number, lineno, None, error=problem)
                number += 1

    def describe(self) -> dict:
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        out: dict[str, Any] = {"path": str(self.path), "kind": self.kind, "sha256": self._sha256}
        if self.compression is not None:
            out["compression"] = self.compression
        out["records"] = self.read
        if self.cut is not None:
            out["cut_off"] = {"line": self.cut.line, "char": self.cut.char}
        return out


@dataclass
class GeneratedSource:
    """Records made in memory or by a generator (a seeded data set, for instance). `describe` goes into the
    manifest as is, so it should say how to make the same records again (package, version, seed, size)."""

    name: str
    make: Callable[[], Iterable[Any]]
    description: dict = field(default_factory=dict)

    def records(self) -> Iterator[RawRecord]:
        for number, data in enumerate(self.make()):
            yield RawRecord(self.name, number, None, data)

    def describe(self) -> dict:
        return {"name": self.name, **self.description}


def file_kind(path: Path, compression: str | None = None) -> str:
    """'jsonl', 'json' or 'parquet', from the suffix (the one under a compression suffix), and for JSON from
    the text (a first line that is a whole object followed by more lines means JSON Lines)."""
    suffix = compressed.inner_suffix(path, compression)
    if suffix in (".parquet", ".pq"):
        if compression is not None:
            raise FusechatError(f"{path}: Parquet inside {compression}; decompress it (Parquet compresses itself)")
        return "parquet"
    with compressed.open_binary(path, compression) as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        if compression is not None:
            raise FusechatError(f"{path}: Parquet inside {compression}; decompress it (Parquet compresses itself)")
        return "parquet"
    if b"\0" in head:
        start = head.lstrip()[:8]
        raise FusechatError(f"{path}: binary data (starts with {start!r}), not UTF-8 text; {EXPECTED}")
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    with compressed.open_text(path, compression) as f:  # bad bytes: found per record later
        text: list[str] = []  # the first two non-blank lines, each read only up to SNIFF_CHARS
        for _ in range(100):
            line = f.readline(SNIFF_CHARS)
            if line.strip():
                text.append(line)
            if len(text) == 2 or not line.endswith("\n"):
                break
    if len(text) < 2 or not text[0].lstrip().startswith("{") or not text[0].endswith("\n"):
        return "json"  # a list, a pretty-printed object, or one line (possibly longer than the sniff)
    try:
        return "jsonl" if isinstance(json.loads(text[0]), dict) else "json"
    except json.JSONDecodeError:
        return "json"  # the first line of a pretty-printed object


def _parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        number = 0
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                yield RawRecord(str(path), number, None, row)
                number += 1
    except (OSError, pa.ArrowException) as e:
        raise FusechatError(f"{path}: not a readable Parquet file ({e})") from None


def not_a_file(path: Path) -> str:
    """Why `path` cannot be read as a data file, in a few words: what it is instead of a file."""
    if path.is_symlink() and not path.exists():
        return "is a symbolic link that leads to no file (its target is missing, or the links form a loop)"
    if path.is_dir():
        return "is a directory, not a file"
    if path.exists():
        return "is not a regular file"
    return "no such file"
