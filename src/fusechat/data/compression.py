"""Compressed chat files (`.jsonl.gz`, `.json.zst`, ...) read as streams, told apart by their first bytes.

Chat corpora are often shipped compressed. The compression is found from the file's magic bytes, not its name,
so a misnamed file is read right or refused with what it really is. gzip, bzip2 and xz come from the standard
library; zstd from pyarrow's codec (already a dependency; Python 3.11's standard library has no zstd). A stream
that stops early (a cut download) ends where its data ends, as an uncompressed file cut short would, so the
readers keep the complete records before the cut; a corrupt stream is refused naming the file.
"""

from __future__ import annotations

import bz2
import gzip
import io
import logging
import lzma
import zlib
from pathlib import Path
from typing import BinaryIO

from fusechat.errors import FusechatError

log = logging.getLogger(__name__)

MAGIC = {
    "gzip": b"\x1f\x8b",
    "zstd": b"\x28\xb5\x2f\xfd",
    "bzip2": b"BZh",
    "xz": b"\xfd7zXZ\x00",
}
SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bzip2", ".xz": "xz"}
ZSTD_READ = 1 << 16
ARCHIVES = {b"PK\x03\x04": "a zip archive", b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive"}


def detect(path: Path) -> str | None:
    """The compression of `path` from its first bytes (None: not compressed). Refuses archives, and a
    compression suffix on data that is not compressed that way."""
    with open(path, "rb") as f:
        head = f.read(8)
    found = next((name for name, magic in MAGIC.items() if head.startswith(magic)), None)
    named = SUFFIXES.get(path.suffix.lower())
    if found is None:
        archive = next((what for magic, what in ARCHIVES.items() if head.startswith(magic)), None)
        if archive is not None:
            raise FusechatError(f"{path}: is {archive}, not a data file; extract it and give the file inside")
        if named is not None:
            raise FusechatError(
                f"{path}: named {path.suffix} but its data is not {named} (starts with {head[:4]!r}); "
                "rename or recompress it"
            )
    return found


def inner_suffix(path: Path, compression: str | None) -> str:
    """The suffix of the data inside: `.jsonl` for `chats.jsonl.gz` (the file's own suffix if uncompressed)."""
    suffixes = [s.lower() for s in path.suffixes]
    if compression is not None and suffixes and suffixes[-1] in SUFFIXES:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def open_binary(path: Path, compression: str | None) -> BinaryIO:
    """`path` opened for reading its (decompressed) bytes, buffered, with `readline` and line iteration."""
    if compression is None:
        return open(path, "rb")
    return io.BufferedReader(_Decompressed(path, compression), buffer_size=1 << 20)


def open_text(path: Path, compression: str | None) -> io.TextIOWrapper:
    """The text of `path`: UTF-8 (a byte-order mark dropped), undecodable bytes kept as lone surrogates so that
    one bad record is found and named later, newlines untranslated."""
    return io.TextIOWrapper(open_binary(path, compression), encoding="utf-8-sig", errors="surrogateescape", newline="")


class _Decompressed(io.RawIOBase):
    """The decompressed bytes of a file, turning a decoder's complaint into one line that names the file."""

    def __init__(self, path: Path, compression: str) -> None:
        self.path, self.compression = path, compression
        if compression == "zstd":
            import pyarrow as pa

            self._f = pa.input_stream(str(path), compression="zstd")
        else:
            self._f = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}[compression](path, "rb")
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable bytes-like object, as io.RawIOBase says
        if self._ended:
            return 0
        try:
            # One decoder step at a time (read1; pyarrow's stream in small reads), so that the data before a cut
            # is returned before the error: a read(n) that fills n bytes loses what it had with the exception.
            if hasattr(self._f, "read1"):
                data = self._f.read1(len(buffer))
            else:
                data = self._f.read(min(len(buffer), ZSTD_READ))
        except (EOFError, OSError, zlib.error, lzma.LZMAError, ValueError) as e:
            # EOFError (and pyarrow's "Truncated compressed stream"): the stream stops before its end marker,
            # the file was cut. What came before is read as a file that ends there; the record readers then
            # keep the complete records and report the cut. Anything else is corrupt data.
            if not isinstance(e, EOFError) and "Truncated" not in str(e):
                raise FusechatError(
                    f"{self.path}: its {self.compression} data is corrupt ({e}); download or compress it again"
                ) from None
            log.warning("%s: the %s stream is cut off; reading the data before the cut", self.path, self.compression)
            self._ended = True
            return 0
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()
