"""Teacher-pass figures, side by side in one run: disk per supervised token, accuracy, speed, memory.

- Disk: bytes per supervised token of our store against the authors' layout re-created on the same scores
  (top-10 fp16 logits and int64 ids for every position of every sequence padded to its batch's longest, in Arrow).
- Accuracy: largest difference between stored top-k log-probs and a float32 forward pass.
- Speed: tokens/s of the whole teacher pass (tokenize, score, write) over a bare `model(input_ids)` forward on
  the same length-sorted batches, alternated so load on the machine hits both alike.
- Memory: peak RSS of a pass at batch 4 x 512 in a fresh process, against the bare forward (full logits).
- bf16 fidelity (`--fidelity-n N`): a bf16 pass against a float32 pass of the same model over N conversations
  (top-k id agreement, largest and mean log-prob difference rank by rank), with the head's product in float32
  (what `fusechat teach` does) and, for comparison, in bf16 (what a bf16 forward alone would give).

Usage: python benchmarks/bench_teach.py [--model smollm2-135m-instruct] [--n 40] [--memory-model gemma-3-270m]
       [--no-memory] [--fidelity-n 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch


def prepared(pivot: str, n: int, max_length: int, work: Path) -> Path:
    from fusechat.data.assets import sharegpt_path
    from fusechat.data.prepare import prepare

    out = work / f"conv-{n}-{max_length}"
    return prepare([sharegpt_path()], pivot=pivot, out=out, max_length=max_length, limit=n, skip_invalid=True)


def reference_bytes(store, batch: int = 8) -> int:
    """Size of the authors' layout for the same scores: every position padded to the batch max, fp16 + int64."""
    records = list(store)
    ids_rows, logit_rows = [], []
    k = store.k
    for s in range(0, len(records), batch):
        group = records[s : s + batch]
        longest = max(len(r.input_ids) for r in group)
        for _ in group:
            ids_rows.append(np.zeros(longest * k, np.int64))
            logit_rows.append(np.zeros(longest * k, np.float16))
    table = pa.table({"topk_ids": ids_rows, "topk_logits": logit_rows})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().size


def bare_forward_seconds(model, batches) -> tuple[float, int]:
    tokens, t0 = 0, time.perf_counter()
    with torch.inference_mode():
        for ids, mask in batches:
            model(input_ids=ids, attention_mask=mask, use_cache=False)
            tokens += int(mask.sum())
    return time.perf_counter() - t0, tokens


def speed_and_accuracy(model_name: str, conv: Path, work: Path, rounds: int) -> dict:
    from fusechat.data.conversations import Conversations
    from fusechat.models.load import load_model, load_tokenizer
    from fusechat.store.format import TopKStore
    from fusechat.teacher.teach import encode, make_batches, teach

    tok = load_tokenizer(model_name)
    model = load_model(model_name).eval()
    c = Conversations(conv)
    items = encode(tok, c.texts, c.spans)
    batches = []
    for b in make_batches(items, 4096, 32):
        length = max(len(e.input_ids) for e in b)
        ids = torch.zeros((len(b), length), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, e in enumerate(b):
            ids[j, : len(e.input_ids)] = torch.from_numpy(e.input_ids.astype(np.int64))
            mask[j, : len(e.input_ids)] = 1
        batches.append((ids, mask))
    bare, ours = [], []
    store_dir = work / "store"
    for _ in range(rounds):
        secs, tokens = bare_forward_seconds(model, batches)
        bare.append(tokens / secs)
        shutil.rmtree(store_dir, ignore_errors=True)
        t0 = time.perf_counter()
        teach(model_name, conv, store_dir, top_k=10, progress=False)
        ours.append(tokens / (time.perf_counter() - t0))
    store = TopKStore(store_dir)
    worst = 0.0
    with torch.inference_mode():
        for rec in list(store)[:8]:
            ids = torch.from_numpy(rec.input_ids.astype(np.int64))[None]
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)[rec.positions]
            ref = logp.gather(-1, torch.from_numpy(rec.topk_ids.astype(np.int64)))
            worst = max(worst, float((ref - torch.from_numpy(rec.topk_logprobs.astype(np.float32))).abs().max()))
    counts = store.manifest["counts"]
    return {
        "model": model_name,
        "conversations": counts["conversations"],
        "supervised_tokens": counts["supervised_positions"],
        "tokens": counts["tokens"],
        "store_bytes_per_supervised_token": counts["bytes"] / counts["supervised_positions"],
        "reference_bytes_per_supervised_token": reference_bytes(store) / counts["supervised_positions"],
        "max_abs_logprob_error_vs_fp32": worst,
        "bare_forward_tok_s": float(np.median(bare)),
        "teacher_pass_tok_s": float(np.median(ours)),
        "speed_ratio": float(np.median(ours) / np.median(bare)),
    }


def bf16_fidelity(model_name: str, conv: Path, work: Path) -> dict:
    """A bf16 pass against a float32 one, rank by rank; the bf16-head variant switches the float32 copy off."""
    from unittest import mock

    from fusechat.store.format import TopKStore
    from fusechat.teacher.teach import teach

    def compare(a: TopKStore, b: TopKStore) -> dict:
        same, diff, gold = [], [], []
        for x, y in zip(a, b, strict=True):
            same.append(x.topk_ids == y.topk_ids)
            diff.append(np.abs(x.topk_logprobs.astype(np.float32) - y.topk_logprobs.astype(np.float32)).ravel())
            gold.append(np.abs(x.gold_logprob.astype(np.float32) - y.gold_logprob.astype(np.float32)))
        d, g = np.concatenate(diff), np.concatenate(gold)
        top1 = np.concatenate([s[:, 0] for s in same])
        return {
            "topk_id_agreement": float(np.concatenate([s.ravel() for s in same]).mean()),
            "top1_id_agreement": float(top1.mean()),
            "max_abs_logprob_diff": float(d.max()),
            "mean_abs_logprob_diff": float(d.mean()),
            "max_abs_gold_logprob_diff": float(g.max()),
            "mean_abs_gold_logprob_diff": float(g.mean()),
        }

    ref = TopKStore(teach(model_name, conv, work / "fp32", top_k=10, dtype="float32", progress=False))
    bf16 = TopKStore(teach(model_name, conv, work / "bf16", top_k=10, dtype="bfloat16", progress=False))
    with mock.patch("fusechat.teacher.teach.float32_head", lambda *a: False):
        plain = TopKStore(teach(model_name, conv, work / "bf16-head", top_k=10, dtype="bfloat16", progress=False))
    return {
        "positions": ref.manifest["counts"]["supervised_positions"],
        "bf16_forward_float32_head": compare(ref, bf16) | {"head_dtype": bf16.manifest["head_dtype"]},
        "bf16_forward_bf16_head": compare(ref, plain) | {"head_dtype": plain.manifest["head_dtype"]},
    }


def peak_rss_child(code: str) -> float:
    """Peak RSS (GiB) of a fresh Python process running `code`."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return float(done.stdout.strip().splitlines()[-1])


MEM_OURS = """
import resource, sys
from fusechat.teacher.teach import teach
teach({model!r}, {conv!r}, {out!r}, top_k=10, batch_tokens=2048, max_batch=4, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""
MEM_BARE = """
import resource, torch
from fusechat.models.load import load_model
m = load_model({model!r}).eval()
with torch.inference_mode():
    logits = m(input_ids=torch.randint(0, 1000, (4, 512))).logits
    torch.log_softmax(logits.float(), -1).topk(10, -1)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--memory-model", default="gemma-3-270m")
    ap.add_argument("--n", type=int, default=40, help="ShareGPT conversations")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory comparison")
    ap.add_argument("--fidelity-n", type=int, default=0, help="conversations for the bf16 comparison (0: skip)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = (
            speed_and_accuracy(args.model, prepared(args.model, args.n, 1024, work), work, args.rounds)
            if args.n
            else {}
        )
        if args.fidelity_n:
            fid_conv = prepared(args.model, args.fidelity_n, 512, work)
            result["bf16_vs_float32"] = bf16_fidelity(args.model, fid_conv, work / "fidelity")
        if args.no_memory:
            print(json.dumps(result, indent=2))
            return
        mem_conv = prepared(args.model, 8, 512, work)
        result["memory_model"] = args.memory_model
        result["peak_rss_gib_teacher_pass_4x512"] = peak_rss_child(
            MEM_OURS.format(model=args.memory_model, conv=str(mem_conv), out=str(work / "mem"))
        )
        result["peak_rss_gib_bare_forward_full_logits_4x512"] = peak_rss_child(MEM_BARE.format(model=args.memory_model))
    result["this_process_peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
