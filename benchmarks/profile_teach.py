"""Where the teacher pass's host-side time per token goes: torch.profiler over a whole pass on a tiny model.

A tiny model makes the forward cheap, so what is left is the per-token cost the host adds around it
(tokenizing, batching, copying scores back, assembling rows, Parquet writing, hashing): on a GPU that cost is
what leaves the device idle unless it overlaps the next batch's forward. The pass marks its phases with
`torch.profiler.record_function` (`teach.*`); this prints each phase's wall time and microseconds per token.

Usage: python benchmarks/profile_teach.py [--conversations 400] [--hidden 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    from tiny_models import byte_bpe_tokenizer, sample_chats, save_llama, write_conversations

    from fusechat.store.format import TopKStore
    from fusechat.teacher.teach import teach

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=400)
    ap.add_argument("--shard-rows", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok = byte_bpe_tokenizer()
        model = save_llama(root / "m", tok)
        conv = write_conversations(root / "c", sample_chats(args.conversations), tok)
        teach(str(model), conv, root / "warm", top_k=10, shard_rows=args.shard_rows, progress=False)
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            out = teach(str(model), conv, root / "s", top_k=10, shard_rows=args.shard_rows, progress=False)
        wall = time.perf_counter() - t0
        tokens = TopKStore(out).manifest["counts"]["tokens"]
    rows = [e for e in prof.key_averages() if e.key.startswith("teach.")]
    print(f"{tokens} tokens in {wall:.2f} s under the profiler: {1e6 * wall / tokens:.1f} us/token")
    print(f"{'phase':<24}{'calls':>7}{'total s':>10}{'us/token':>10}{'share':>8}")
    for e in sorted(rows, key=lambda e: -e.cpu_time_total):
        secs = e.cpu_time_total / 1e6
        print(f"{e.key:<24}{e.count:>7}{secs:>10.3f}{1e6 * secs / tokens:>10.1f}{secs / wall:>8.1%}")


if __name__ == "__main__":
    main()
