"""What `fusechat prepare` must do with a file of generated cases (malformed.py), and the check that it did.

`write_file` puts cases into one file of a given kind; `expected` says the required outcome with and without
`--skip-invalid`; `run_prepare` runs the prepare entry point and asserts every part of that outcome: one error
line naming the file and the first bad record, or exactly the good records kept with the right counts.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.faults.malformed import FATAL, KEEP, LONG, Case


@dataclass
class Expected:
    """What prepare must do with a file: `error_record` (its error names this record), or keep `kept`."""

    error_record: int | None
    kept: list[list[dict]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    too_long: int = 0
    truncated: int = 0


def expected(cases_: list[Case], skip_invalid: bool) -> Expected:
    good = [c for c in cases_ if c.outcome == KEEP]
    for i, c in enumerate(cases_):
        if c.outcome == FATAL or (not skip_invalid and c.outcome not in (KEEP, LONG)):
            return Expected(error_record=i)
    skipped = Counter(c.outcome for c in cases_ if c.outcome not in (KEEP, LONG))
    too_long = sum(c.outcome == LONG for c in cases_)
    truncated = sum(c.truncated for c in good)
    return Expected(None, [c.messages for c in good if c.messages is not None], skipped, too_long, truncated)


def write_file(path: Path, container: str, cases_: list[Case], bom: bool = False) -> bool:
    """Write the cases as one file (text files starting with a byte-order mark if `bom`); False if the container
    cannot hold them (mixed Parquet column types)."""
    if container == "parquet":
        if any(c.raw is not None or not isinstance(c.record, dict) for c in cases_):
            return False
        # Parquet columns have one type: ids of other types (free in JSON) are left out of these files.
        rows = [{k: v for k, v in c.record.items() if k != "id" or isinstance(v, str)} for c in cases_]
        columns = list(dict.fromkeys(k for r in rows for k in r))  # from_pylist would keep row 0's keys only
        rows = [{k: r.get(k) for k in columns} for r in rows]
        try:
            table = pa.Table.from_pylist(rows)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return False
        pq.write_table(table, path)
        return True
    parts = [c.raw if c.raw is not None else json.dumps(c.record, ensure_ascii=False).encode() for c in cases_]
    head = b"\xef\xbb\xbf" if bom else b""
    if container == "jsonl":
        path.write_bytes(head + b"".join(p + b"\n" for p in parts))
    else:
        path.write_bytes(head + b"[\n" + b",\n".join(parts) + b"\n]\n")
    return True


def run_prepare(
    path: Path, cases_: list[Case], pivot: Path, template: Path, out: Path, skip_invalid: bool, max_length: int = 4096
) -> str:
    """Run the prepare entry point in-process on one generated file and check the outcome against `expected`;
    returns how it ended: an error (one clear line naming the file, and the record) or 'ok'. Any other
    exception escapes: a bug."""
    from fusechat.data.conversations import Conversations
    from fusechat.data.prepare import prepare
    from fusechat.errors import FusechatError

    want = expected(cases_, skip_invalid)
    no_good = want.error_record is None and not want.kept
    try:
        prepare([path], pivot, out, max_length=max_length, skip_invalid=skip_invalid, chat_template=template)
    except FusechatError as e:
        msg = str(e)
        assert "\n" not in msg and "\r" not in msg, f"error is not one line: {msg!r}"
        assert msg.startswith(f"{path}: "), f"error does not name the file first: {msg}"
        if want.error_record is not None:
            assert msg.startswith(f"{path}: record {want.error_record}: "), (want.error_record, msg)
            return "error naming the record"
        assert no_good and "no conversation kept" in msg, msg
        return "error: no conversation kept"
    assert want.error_record is None, f"accepted, but record {want.error_record} is bad"
    assert not no_good, "succeeded with no good record"
    conv = Conversations(out)
    kept = [conv.messages(i) for i in range(len(conv))]
    assert kept == want.kept, f"kept {str(kept)[:400]}, but the good records are {str(want.kept)[:400]}"
    for i, messages in enumerate(kept):
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        spans = [conv.texts[i][s:e] for s, e in conv.spans[i]]
        assert len(spans) == len(replies) and all(r in s for r, s in zip(replies, spans, strict=True)), i
    counts = conv.manifest["counts"]
    assert counts["skipped_invalid"] == dict(sorted(want.skipped.items())), (counts, want.skipped)
    assert counts["dropped_too_long"] == want.too_long and counts["truncated"] == want.truncated, counts
    assert counts["read"] == len(cases_), counts
    return "ok"
