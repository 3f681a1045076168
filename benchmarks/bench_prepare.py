"""Prepare-stage figures, side by side in one run, on the real ShareGPT file and the real SmolLM2 tokenizer.

- Reading: the streaming JSON reader against `json.loads` of the same text (the complete records, closed with
  `]`, since `json.loads` cannot read the cut file at all): seconds and peak RSS, each in a fresh process.
- Truncation: counting the tokens of a turn-boundary prefix by reading it off the whole text's encoding (when
  an added token starts at the cut) against encoding every prefix alone, on the same long conversations.
- Throughput: conversations and characters per second of `prepare` over the first N records.

Usage: python benchmarks/bench_prepare.py [--pivot smollm2-135m-instruct] [--n 2000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Peak RSS is read from /proc (VmHWM, reset by exec); getrusage's ru_maxrss carries the parent's peak over.
PEAK = "int(next(x for x in open('/proc/self/status') if x.startswith('VmHWM')).split()[1])"
READ_STREAM = f"""
import sys, time
from fusechat.data.jsonstream import JsonRecords
t = time.perf_counter(); n = sum(1 for _ in JsonRecords(sys.argv[1]))
print(n, time.perf_counter() - t, {PEAK})
"""
READ_WHOLE = f"""
import json, sys, time
import fusechat.data.jsonstream
t = time.perf_counter(); n = len(json.loads(open(sys.argv[1], encoding="utf-8").read()))
print(n, time.perf_counter() - t, {PEAK})
"""
BASELINE = f"import fusechat.data.jsonstream; print({PEAK})"


def child(code: str, *args: str) -> list[float]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": src},
    )
    return [float(x) for x in out.stdout.split()]


def reading(work: Path) -> None:
    from fusechat.data.assets import sharegpt_path
    from fusechat.data.jsonstream import JsonRecords

    path = sharegpt_path()
    reader = JsonRecords(path)
    for _ in reader:
        pass
    assert reader.cut is not None
    closed = work / "closed.json"
    with open(path, encoding="utf-8") as f:
        text = f.read(reader.cut.char)
    closed.write_text(text.rstrip().rstrip(",") + "\n]\n", encoding="utf-8")
    base = child(BASELINE)[0]
    rows = []
    for _ in range(2):  # alternate, so load on the shared machine hits both alike
        rows.append(("stream", child(READ_STREAM, str(closed))))
        rows.append(("json.loads", child(READ_WHOLE, str(closed))))
    best = {}
    for name, (n, secs, rss) in rows:
        prev = best.get(name)
        best[name] = (n, min(secs, prev[1]) if prev else secs, rss)
    (n1, s1, r1), (n2, s2, r2) = best["stream"], best["json.loads"]
    assert n1 == n2 == reader.cut.complete_records
    size = closed.stat().st_size / 2**20
    print(f"read {n1:.0f} records, {size:.0f} MiB: stream {s1:.2f} s, json.loads {s2:.2f} s (ratio {s1 / s2:.2f})")
    print(
        f"  peak RSS above interpreter+imports ({base / 1024:.0f} MiB): stream {(r1 - base) / 1024:.0f} MiB, "
        f"json.loads {(r2 - base) / 1024:.0f} MiB (ratio {(r1 - base) / (r2 - base):.3f})"
    )


def truncation(pivot: str, n: int, max_length: int) -> None:
    from fusechat.data.assets import sharegpt_path
    from fusechat.data.formats import BadRecord, normalise
    from fusechat.data.prepare import counting_tokenizer, prefix_tokens
    from fusechat.data.readers import FileSource
    from fusechat.data.render import ChatRenderer
    from fusechat.models.load import load_tokenizer

    tok = load_tokenizer(pivot)
    fast, renderer = counting_tokenizer(tok), ChatRenderer(tok)
    added = frozenset(fast.get_added_tokens_decoder())
    long = []
    for raw in FileSource(sharegpt_path()).records():
        try:
            r = renderer.render(normalise(raw, "sharegpt").messages)
        except BadRecord:
            continue
        if len(r.cuts) > 1 and len(r.text) > 4 * max_length:
            long.append(r)
        if len(long) >= n:
            break
    encs = fast.encode_batch([r.text for r in long], add_special_tokens=False)
    cases = [(r, [s for s, _ in e.offsets], e.ids) for r, e in zip(long, encs, strict=True)]
    t0 = time.perf_counter()
    ours = [[prefix_tokens(fast, r.text, c, st, ids, added) for c in r.cuts[:-1]] for r, st, ids in cases]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = [[len(fast.encode(r.text[:c], add_special_tokens=False)) for c in r.cuts[:-1]] for r, _, _ in cases]
    t_plain = time.perf_counter() - t0
    assert ours == plain
    k = sum(map(len, ours))
    print(
        f"prefix counts at {k} turn cuts of {len(cases)} long chats: read off {t_ours * 1e3:.0f} ms, "
        f"encode each prefix {t_plain * 1e3:.0f} ms (ratio {t_ours / t_plain:.4f}); identical"
    )


def throughput(pivot: str, n: int, work: Path) -> None:
    from fusechat.data.assets import sharegpt_path
    from fusechat.data.conversations import Conversations
    from fusechat.data.prepare import prepare

    t0 = time.perf_counter()
    out = prepare([sharegpt_path()], pivot, work / "conv", skip_invalid=True, limit=n)
    secs = time.perf_counter() - t0
    conv = Conversations(out)
    chars = sum(map(len, conv.texts))
    counts = conv.manifest["counts"]
    print(
        f"prepare {counts['read']} records -> {counts['kept']} kept in {secs:.1f} s: "
        f"{counts['read'] / secs:.0f} records/s, {chars / secs / 1e6:.2f} M rendered chars/s "
        f"(truncated {counts['truncated']}, dropped {counts['dropped_too_long']})"
    )
    print("  counts:", json.dumps(counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pivot", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=2000, help="records for the throughput run")
    parser.add_argument("--long", type=int, default=200, help="long conversations for the truncation run")
    parser.add_argument("--max-length", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        reading(work)
        truncation(args.pivot, args.long, args.max_length)
        throughput(args.pivot, args.n, work)


if __name__ == "__main__":
    main()
