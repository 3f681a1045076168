"""The `prepare` stage: chat files in, one conversations directory out (the text every model reads).

Reads each input as a stream, normalises and checks every record (formats.py), renders it with the pivot's
chat template and finds the supervised spans (render.py), fits it into `max_length` pivot tokens, gives it a
stable id, and writes `conversations.parquet` with `manifest.json` as conversations.py reads them. Token
counts use `add_special_tokens=False`: the rendered text already holds every special token the template
writes.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from fusechat.data.conversations import FILE, FORMAT, FORMAT_VERSION, STAGE, conversations_schema
from fusechat.data.formats import FORMATS, BadRecord, Conversation, detect_format, normalise
from fusechat.data.readers import Source
from fusechat.data.render import ChatRenderer, Rendered, TemplateRefused, read_template
from fusechat.data.sources import open_source
from fusechat.errors import FusechatError
from fusechat.manifest import (
    fingerprint,
    locked,
    prepare_output_dir,
    read_manifest,
    remove_temporaries,
    settings_check,
    sha256_file,
    write_manifest,
)
from fusechat.models.load import load_tokenizer, resolve_model_dir, tokenizer_fingerprint

log = logging.getLogger(__name__)

ON_LONG = ("truncate", "drop")
BATCH = 64  # conversations tokenized together
# Texts longer than max_length x CHARS_PER_TOKEN characters are measured on a prefix first (`_Job._measure`);
# MARGIN characters before a prefix's end are not trusted to tokenise as in the whole text.
CHARS_PER_TOKEN = 16
MARGIN = 256
ROW_GROUP = 1024


@dataclass
class _Item:
    conv: Conversation
    rendered: Rendered


class _Counts:
    def __init__(self) -> None:
        self.read = self.kept = self.truncated = self.dropped_too_long = 0
        self.trailing_user_trimmed = self.leading_assistant_trimmed = self.ids_renamed = 0
        self.skipped: Counter[str] = Counter()

    def as_dict(self) -> dict:
        return {
            "read": self.read,
            "kept": self.kept,
            "truncated": self.truncated,
            "dropped_too_long": self.dropped_too_long,
            "skipped_invalid": dict(sorted(self.skipped.items())),
            "trailing_user_trimmed": self.trailing_user_trimmed,
            "leading_assistant_trimmed": self.leading_assistant_trimmed,
            "ids_renamed": self.ids_renamed,
        }


def prepare(
    inputs: list[str | os.PathLike | Source],
    pivot: str | os.PathLike,
    out: str | os.PathLike,
    *,
    max_length: int = 2048,
    on_long: str = "truncate",
    skip_invalid: bool = False,
    chat_template: str | os.PathLike | None = None,
    fmt: str = "auto",
    limit: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Prepare conversations from `inputs` for `pivot`; returns the output directory.

    `on_long`: 'truncate' keeps whole user+assistant turns from the start, ending on an assistant turn, within
    `max_length` pivot tokens; 'drop' drops the conversation. `limit` stops after that many conversations are
    kept. A complete output made from the same inputs and settings is left as it is; one made from others is
    refused unless `overwrite`, and is replaced only once the new one is complete.
    """
    if max_length < 1:
        raise FusechatError(f"--max-length must be at least 1, not {max_length}")
    if on_long not in ON_LONG:
        raise FusechatError(f"--on-long must be one of {', '.join(ON_LONG)}, not {on_long!r}")
    if fmt != "auto" and fmt not in FORMATS:
        raise FusechatError(f"--format must be auto or one of {', '.join(FORMATS)}, not {fmt!r}")
    if limit is not None and limit < 1:
        raise FusechatError(f"--limit must be at least 1, not {limit}")
    if not inputs:
        raise FusechatError("no input data given")
    sources = [open_source(x) for x in inputs]
    tokenizer = load_tokenizer(pivot)
    template = read_template(chat_template) if chat_template is not None else None
    renderer = ChatRenderer(tokenizer, template, str(chat_template or ""))

    settings = {
        "pivot_tokenizer": tokenizer_fingerprint(tokenizer),
        "chat_template_sha256": renderer.sha256,
        "max_length": max_length,
        "on_long": on_long,
        "skip_invalid": skip_invalid,
        "format": fmt,
        "limit": limit,
        # What identifies each input (path and sha256, or a generator's description), not what reading found.
        "inputs": [{k: v for k, v in s.describe().items() if k not in ("records", "cut_off")} for s in sources],
    }
    settings_fp = fingerprint(settings)
    out = prepare_output_dir(out, STAGE)
    with locked(out):
        state = settings_check(out, STAGE, settings_fp, overwrite, key="settings_fingerprint")
        if state == "resume" and _already_done(out):
            log.info("%s: already prepared from the same inputs and settings; nothing to do", out)
            return out
        remove_temporaries(out)  # a killed run's file; this process is now the only writer
        head = {
            "stage": STAGE,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "settings_fingerprint": settings_fp,
        }
        job = _Job(tokenizer, renderer, max_length, on_long, skip_invalid, fmt, limit)
        # The new file is built aside: an earlier output stays whole and valid until the new one is complete,
        # so a run that fails on its input (or a full disk) costs nothing that was there before.
        tmp = out / f".{FILE}.{os.getpid()}.tmp"
        try:
            job.run(sources, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            manifest = {
                **head,
                "fingerprint": job.fingerprint.hexdigest()[:16],
                "pivot": str(pivot),
                "pivot_dir": str(resolve_model_dir(pivot)),
                "tokenizer_fingerprint": settings["pivot_tokenizer"],
                "chat_template": {"origin": renderer.origin, "sha256": renderer.sha256},
                "max_length": max_length,
                "length_unit": "pivot tokens of the rendered text, add_special_tokens=False",
                "on_long": on_long,
                "skip_invalid": skip_invalid,
                "limit": limit,
                "counts": job.counts.as_dict(),
                "inputs": [dict(s.describe(), format=job.formats.get(s.name)) for s in sources],
                # Every reader checks the file against this (a flipped bit in its text can still decode).
                "files": {FILE: {"bytes": tmp.stat().st_size, "sha256": sha256_file(tmp)}},
            }
            # Only now is the old output given up: incomplete while the file is swapped, complete right after.
            write_manifest(out, head, complete=False)
            os.replace(tmp, out / FILE)
            write_manifest(out, manifest, complete=True)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    c = job.counts
    log.info(
        "prepared %d conversations from %d records: %d truncated, %d dropped as too long (> %d tokens), "
        "%d invalid skipped %s",
        c.kept,
        c.read,
        c.truncated,
        c.dropped_too_long,
        max_length,
        sum(c.skipped.values()),
        dict(c.skipped) or "",
    )
    return out


def _already_done(out: Path) -> bool:
    try:
        read_manifest(out, stage=STAGE)
    except FusechatError:
        return False
    return (out / FILE).is_file()


class _Job:
    """One run of the stage: the record loop, the length rule, ids, and the Parquet writer."""

    def __init__(self, tokenizer, renderer, max_length, on_long, skip_invalid, fmt, limit) -> None:
        self.tok, self.renderer = counting_tokenizer(tokenizer), renderer
        self.added = frozenset(self.tok.get_added_tokens_decoder())
        self.max_length, self.on_long, self.skip_invalid = max_length, on_long, skip_invalid
        self.fmt, self.limit = fmt, limit
        self.counts = _Counts()
        self.formats: dict[str, str] = {}
        self.fingerprint = hashlib.sha256()
        self.ids: set[str] = set()
        self.rows: list[dict] = []

    def run(self, sources: list[Source], tmp: Path) -> None:
        writer = pq.ParquetWriter(tmp, conversations_schema(), compression="zstd")
        try:
            bar = tqdm(desc="prepare", unit=" conv", disable=None)
            for source in sources:
                if not self._source(source, writer, bar):
                    break
            bar.close()
            self._write(writer, final=True)
        finally:
            writer.close()
        if self.counts.kept == 0:
            names = ", ".join(s.name for s in sources)
            raise FusechatError(
                f"{names}: no conversation kept from {self.counts.read} records "
                f"(invalid: {dict(self.counts.skipped)}, too long: {self.counts.dropped_too_long}); "
                "check the inputs and --max-length"
            )

    def _source(self, source: Source, writer: pq.ParquetWriter, bar: tqdm) -> bool:
        """Process one source; False once the limit is reached."""
        fmt = None if self.fmt == "auto" else self.fmt
        pending: list[_Item] = []
        for raw in source.records():
            self.counts.read += 1
            bar.update()
            try:
                conv = normalise(raw, fmt)
                try:
                    rendered = self.renderer.render(conv.messages)
                except TemplateRefused as e:
                    fix = "fix the record, pass --skip-invalid, or give --chat-template"
                    raise BadRecord(
                        raw.source, raw.record, "template_refused", f"the chat template refused it: {e}", fix
                    ) from None
            except BadRecord as e:
                if not self.skip_invalid:
                    raise
                self.counts.skipped[e.reason] += 1
                log.debug("skipped: %s", e)
                continue
            if fmt is None:
                fmt = detect_format(raw.data)
                self.formats[source.name] = fmt
            pending.append(_Item(conv, rendered))
            room = None if self.limit is None else self.limit - self.counts.kept
            if len(pending) >= min(BATCH, room or BATCH):
                self._fit(pending, writer)
                pending = []
                if self.limit is not None and self.counts.kept >= self.limit:
                    return False
        self._fit(pending, writer)
        self.formats.setdefault(source.name, fmt or self.fmt)
        return self.limit is None or self.counts.kept < self.limit

    def _fit(self, items: list[_Item], writer: pq.ParquetWriter) -> None:
        """Apply the length rule to a batch, then add the kept ones as rows."""
        if not items:
            return
        first = self.max_length * CHARS_PER_TOKEN
        encodings = self.tok.encode_batch([it.rendered.text[:first] for it in items], add_special_tokens=False)
        for it, enc in zip(items, encodings, strict=True):
            seen = len(it.rendered.text)
            if seen > first:
                seen, enc = self._measure(it.rendered.text, enc)
            if seen < len(it.rendered.text) or len(enc) > self.max_length:
                if self.on_long == "drop" or (turns := self._turns_within(it.rendered, enc, seen)) == 0:
                    self.counts.dropped_too_long += 1
                    continue
                it.rendered = it.rendered.truncated(turns)
                it.conv.messages = _first_turns(it.conv.messages, turns)
                self.counts.truncated += 1
            self._add(it)
        self._write(writer)

    def _measure(self, text: str, enc) -> tuple[int, Any]:
        """How much of a text longer than `max_length * CHARS_PER_TOKEN` characters must be tokenised to know
        whether it fits: the length of a prefix that already holds more than `max_length` tokens, or the whole
        text, with that prefix's encoding. `enc` encodes the first prefix tried.

        Tokenising costs about 160 bytes of memory per character, so a 20 MB message tokenised whole took
        3.6 GB. A prefix is enough: the tokens that end `MARGIN` characters or more before the cut are the
        whole text's tokens too (pre-tokenizers and merges act within a few characters), so a prefix holding
        more than `max_length` of them proves the text too long. The prefix grows fourfold while it proves
        nothing (text of very few tokens per character), up to the whole text."""
        n = self.max_length * CHARS_PER_TOKEN
        while n < len(text):
            if enc is None:
                enc = self.tok.encode(text[:n], add_special_tokens=False)
            if sum(1 for _, end in enc.offsets if end <= n - MARGIN) > self.max_length:
                return n, enc
            n, enc = n * 4, None
        return len(text), self.tok.encode(text, add_special_tokens=False)

    def _turns_within(self, rendered: Rendered, enc, seen: int) -> int:
        """How many leading assistant turns fit in max_length tokens (0 if not even the first). `enc` encodes
        `rendered.text[:seen]`; a cut at or past `seen` cannot fit (that prefix already holds too many)."""
        starts = [s for s, _ in enc.offsets]
        ids = enc.ids
        turns = len(rendered.cuts) - 1
        while turns > 0:
            end = rendered.cuts[turns - 1]
            if end < seen or seen == len(rendered.text):
                if prefix_tokens(self.tok, rendered.text, end, starts, ids, self.added) <= self.max_length:
                    return turns
            turns -= 1
        return 0

    def _add(self, it: _Item) -> None:
        conv, r = it.conv, it.rendered
        self.counts.kept += 1
        self.counts.trailing_user_trimmed += conv.trimmed_trailing_user
        self.counts.leading_assistant_trimmed += conv.trimmed_leading_assistant
        base = conv.own_id or conv.content_id()
        cid, k = base, 2
        while cid in self.ids:
            cid, k = f"{base}#{k}", k + 1
        self.counts.ids_renamed += cid != base
        self.ids.add(cid)
        spans = [[s, e] for s, e in r.spans]
        self.fingerprint.update(json.dumps([cid, r.text, spans], ensure_ascii=False).encode())
        self.rows.append(
            {
                "id": cid,
                "text": r.text,
                "spans": spans,
                "messages": json.dumps(conv.messages, ensure_ascii=False),
                "source": conv.source,
                "record": conv.record,
            }
        )

    def _write(self, writer: pq.ParquetWriter, final: bool = False) -> None:
        if self.rows and (final or len(self.rows) >= ROW_GROUP):
            writer.write_table(pa.Table.from_pylist(self.rows, schema=conversations_schema()))
            self.rows = []


def counting_tokenizer(tokenizer: Any) -> Any:
    """The pivot's Rust tokenizer with truncation and padding off: counts the tokens of `tokenizer(text,
    add_special_tokens=False)` without building Python lists of ids and offsets for every text."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def prefix_tokens(tok: Any, text: str, end: int, starts: list[int], ids: list[int], added: frozenset) -> int:
    """The number of tokens of `text[:end]`, given the whole text's encoding (`starts` of each token's
    characters, sorted, and `ids`) and the ids of the tokenizer's added tokens.

    When an added token (a template marker such as `<|im_start|>`) starts exactly at `end`, the prefix is
    tokenized exactly as in the whole text: a tokenizer splits its input at added tokens first and encodes the
    pieces between them independently, so the count is read off the whole encoding. Otherwise the prefix is
    encoded alone, since the characters before the cut may be split differently without what follows.
    """
    i = bisect.bisect_left(starts, end)
    if i < len(ids) and starts[i] == end and ids[i] in added:
        return i
    return len(tok.encode(text[:end], add_special_tokens=False))


def _first_turns(messages: list[dict], turns: int) -> list[dict]:
    """The messages up to and including the `turns`-th assistant message."""
    seen = 0
    for i, m in enumerate(messages):
        seen += m["role"] == "assistant"
        if seen == turns:
            return messages[: i + 1]
    return messages
