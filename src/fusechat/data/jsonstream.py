"""Read the records of a big JSON document one at a time, and recover the complete ones of a cut-off file.

Chat corpora ship as one JSON list of hundreds of megabytes (ShareGPT's is 125 MB and, as published, cut
off partway through a record). `json.load` needs the whole text in memory and fails on the cut, losing every
record. This reader holds only a sliding window of the text, decodes one element at a time with the
standard library's C decoder (`JSONDecoder.raw_decode`), and tells a cut at the end of the file (the input
simply stops inside or between records) from a syntax error in the middle (a real fault, reported with its
line and column).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fusechat.data.compression import open_text
from fusechat.errors import FusechatError, InvalidRecordError

CHUNK_CHARS = 1 << 20
_WS = " \t\n\r"
_DECODER = json.JSONDecoder()
_TAIL = re.compile(r'[\s\w.+\-\\"]*')
# Keys whose list holds the messages of ONE conversation: an object with them is a record, not a wrapper.
_CONVERSATION_KEYS = ("messages", "conversations")


@dataclass(frozen=True)
class Cut:
    """Where a JSON document stops early: the line and character offset of the unfinished part."""

    line: int
    char: int
    complete_records: int


class _Incomplete(Exception):
    """The window ends before the value does (more text needed, or the file is cut)."""


class JsonRecords:
    """Iterate the objects of a JSON list, or of the one list inside a top-level JSON object.

    Yields `(record_number, line, obj)` with 0-based record numbers and 1-based line numbers where each record
    starts. After iteration `cut` is set if the document stopped early; every complete record before the cut
    has been yielded. A syntax error that is not at the end raises `FusechatError` naming the line and column.
    """

    def __init__(self, path: str | os.PathLike, chunk_chars: int = CHUNK_CHARS, compression: str | None = None):
        self.path = Path(path)
        self.chunk_chars = chunk_chars
        self.compression = compression  # of the file's bytes (compression.detect), None for plain text
        self.cut: Cut | None = None
        self.key: str | None = None  # the wrapper object's key holding the records, if any
        self._f: TextIO | None = None
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._mark = (0, 1)  # (window position, its line number): lines are counted onwards from here
        self._char0 = 0  # character offset of _buf[0] in the file
        self._count = 0
        self._record: int | None = None  # the record being read, while inside the list of records

    # -- window over the file
    def _fill(self, at_least: int = 0) -> bool:
        """Read more text (at least `at_least` characters when possible); False at end of file."""
        if self._eof:
            return False
        if self._pos > len(self._buf) // 2:
            self._mark = (0, self._line_of(self._pos))
            self._char0 += self._pos
            self._buf, self._pos = self._buf[self._pos :], 0
        assert self._f is not None
        more = self._f.read(max(self.chunk_chars, at_least))
        if not more:
            self._eof = True
            return False
        self._buf += more
        return True

    def _line_of(self, pos: int) -> int:
        """1-based line of window position `pos`, counting newlines only once as the window moves forward."""
        mark_pos, mark_line = self._mark
        if pos < mark_pos:
            mark_pos, mark_line = 0, mark_line - self._buf.count("\n", 0, mark_pos)
        line = mark_line + self._buf.count("\n", mark_pos, pos)
        self._mark = (pos, line)
        return line

    def _where(self, pos: int) -> tuple[int, int]:
        """(line, column), both 1-based, of window position `pos`."""
        return self._line_of(pos), pos - self._buf.rfind("\n", 0, pos)

    def _peek(self) -> str:
        """The next non-whitespace character ('' at end of file), leaving the window on it."""
        while True:
            buf, pos = self._buf, self._pos
            while pos < len(buf) and buf[pos] in _WS:
                pos += 1
            self._pos = pos
            if pos < len(buf):
                return buf[pos]
            if not self._fill():
                return ""

    def _expect(self, chars: str, what: str) -> str:
        c = self._peek()
        if c == "":
            raise _Incomplete
        if c not in chars:
            self._syntax(f"expected {what}, found {c!r}", self._pos)
        self._pos += 1
        return c

    def _syntax(self, problem: str, pos: int) -> None:
        """Raise for a fault in the text: an InvalidRecordError naming the record when inside the list of
        records (it still stops the file even with --skip-invalid: the records after it cannot be found)."""
        line, col = self._where(pos)
        problem = f"not valid JSON at line {line} column {col}: {problem}"
        fix = "fix the file (or convert it to JSON Lines, one conversation per line)"
        if self._record is not None:
            raise InvalidRecordError(str(self.path), self._record, problem, fix)
        raise FusechatError(f"{self.path}: {problem}; {fix}")

    def _value(self) -> Any:
        """Decode the next JSON value, reading more of the file until it is complete."""
        if self._peek() == "":
            raise _Incomplete
        while True:
            start = self._pos
            try:
                obj, end = _DECODER.raw_decode(self._buf, start)
            except json.JSONDecodeError as e:
                if not may_be_incomplete(e, self._buf):
                    self._syntax(e.msg, e.pos)
                if not self._fill(at_least=len(self._buf) - start):
                    raise _Incomplete from None
                continue
            except RecursionError:
                self._syntax(f"nested too deeply to read (over {sys.getrecursionlimit()} levels)", start)
            # A number or literal ending exactly at the window's end may continue in the next chunk.
            if end == len(self._buf) and not isinstance(obj, dict | list | str) and self._fill():
                continue
            self._pos = end
            return obj

    # -- document structure
    def __iter__(self) -> Iterator[tuple[int, int, Any]]:
        # Bytes that are not UTF-8 become lone surrogates: inside a string they make that one record invalid
        # (formats.normalise names it), elsewhere they are a syntax error at their line; never a whole-file stop.
        with open_text(self.path, self.compression) as f:
            self._f = f
            try:
                first = self._peek()
                if first == "[":
                    yield from self._list()
                    self._end_of_document()
                elif first == "{":
                    yield from self._wrapper()
                    self._end_of_document()
                elif first == "":
                    raise FusechatError(f"{self.path}: empty file; give a file with conversations")
                else:
                    self._syntax("expected a list of conversations or an object holding one", self._pos)
            except _Incomplete:
                line, _ = self._where(self._pos)
                self.cut = Cut(line=line, char=self._char0 + self._pos, complete_records=self._count)
                if self._count == 0:
                    raise FusechatError(
                        f"{self.path}: ends (is cut off) at line {line} before its first complete record; "
                        "fix or replace the file"
                    ) from None
            finally:
                self._f = None

    def _list(self) -> Iterator[tuple[int, int, Any]]:
        self._expect("[", "'['")
        if self._peek() == "]":
            self._pos += 1
            return
        while True:
            self._peek()
            line, _ = self._where(self._pos)
            self._record = self._count
            obj = self._value()
            yield self._count, line, obj
            self._count += 1
            self._record = self._count  # a fault between records is reported against the next one
            if self._expect(",]", "',' or ']' after a record") == "]":
                self._record = None
                return

    def _wrapper(self) -> Iterator[tuple[int, int, Any]]:
        """A top-level object: its one list of objects holds the records; other values are skipped."""
        self._expect("{", "'{'")
        if self._peek() == "}":
            self._pos += 1
            raise FusechatError(f"{self.path}: an empty JSON object; give a list of conversations")
        while True:
            if self._peek() != '"':
                self._syntax("expected a key", self._pos)
            key = self._value()
            self._expect(":", "':' after a key")
            if self._peek() == "[" and self._list_of_objects_follows():
                if key in _CONVERSATION_KEYS:
                    raise FusechatError(
                        f"{self.path}: holds one conversation (a top-level '{key}' list), not a list; "
                        "wrap it in [ ] or write it as one line of a .jsonl file"
                    )
                if self.key is not None:
                    raise FusechatError(
                        f"{self.path}: the top-level object has two lists of records ('{self.key}', '{key}');"
                        " keep the one to train on"
                    )
                self.key = key
                yield from self._list()
            else:
                self._value()
            if self._expect(",}", "',' or '}'") == "}":
                break
        if self.key is None:
            raise FusechatError(f"{self.path}: the top-level object holds no list of records; give a list")

    def _list_of_objects_follows(self) -> bool:
        """Whether the '[' under the window opens a list whose first element is an object."""
        pos = self._pos + 1
        while True:
            while pos < len(self._buf) and self._buf[pos] in _WS:
                pos += 1
            if pos < len(self._buf):
                return self._buf[pos] == "{"
            before = self._pos
            if not self._fill():
                return False
            pos -= before - self._pos  # the window may have moved

    def _end_of_document(self) -> None:
        if self._peek() != "":
            self._syntax("text after the end of the JSON document", self._pos)


def may_be_incomplete(e: json.JSONDecodeError, buf: str) -> bool:
    """Whether a decode error can be the window (or the file) ending early rather than a fault in the text."""
    if e.msg.startswith("Unterminated string"):
        return True  # no closing quote before the end of the window
    # An error in the last few characters: a literal (`tru`), a number, a key or an escape cut short.
    return len(buf) - e.pos <= 8 and _TAIL.fullmatch(buf, e.pos) is not None
