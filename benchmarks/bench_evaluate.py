"""Evaluation cost per model at the demo's sizes, and each fast path against its plain form, side by side.

Measures, with one real model (default SmolLM2-135M-Instruct):
  1. the time of each suite task through `evaluate` (fresh cache), and of the same call again (all cached);
  2. bits per byte through the teacher's supervised-rows-only head vs a plain full-logits forward pass, on the
     same conversations and batches: time, and the size of the largest logits tensor each builds;
  3. batched left-padded greedy generation vs one prompt at a time, on the same GSM-Symbolic prompts.
The machine is shared and noisy: compare the ratios, measured in the same run, more than the absolute times.

    python benchmarks/bench_evaluate.py --conversations DIR [--n-conv 100 --n-gsm 50 --n-hhh 221]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _plain_bpb(model, tokenizer, texts, spans, batch_tokens: int) -> tuple[float, int]:
    """Full logits for every position, log-softmax, gather the gold tokens: the obvious way. Returns nll, peak."""
    from fusechat.teacher.teach import encode, make_batches

    items = encode(tokenizer, texts, spans)
    total, largest = 0.0, 0
    for batch in make_batches(items, batch_tokens, 32):
        length = max(len(e.input_ids) for e in batch)
        ids = torch.zeros((len(batch), length), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, e in enumerate(batch):
            ids[b, : len(e.input_ids)] = torch.from_numpy(e.input_ids.astype(np.int64))
            mask[b, : len(e.input_ids)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            largest = max(largest, logits.numel() * 4)
            logp = torch.log_softmax(logits, -1)
            for b, e in enumerate(batch):
                pos = torch.from_numpy(e.positions.astype(np.int64))
                total -= float(logp[b, pos, ids[b, pos + 1]].double().sum())
    return total, largest


def bench_bpb(loaded, conv, n: int, batch_tokens: int, repeats: int = 3) -> dict:
    from fusechat.evaluate.likelihood import span_logprobs

    texts, spans = conv.texts[:n], conv.spans[:n]
    t_fast = t_plain = float("inf")
    for _ in range(repeats):  # alternate the two, keep each one's best: the load on a shared machine drifts
        t0 = time.perf_counter()
        fast = span_logprobs(
            loaded.backbone, loaded.head, loaded.tokenizer, texts, spans, 10**6, batch_tokens, progress=False
        )
        t_fast = min(t_fast, time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain_nll, plain_bytes = _plain_bpb(loaded.model, loaded.tokenizer, texts, spans, batch_tokens)
        t_plain = min(t_plain, time.perf_counter() - t0)
    fast_nll = -sum(s.logprob for s in fast)
    vocab = loaded.head.projection.weight.shape[0]
    return {
        "conversations": n,
        "repeats": repeats,
        "tokens": sum(s.n_tokens for s in fast),
        "fast_s": round(t_fast, 2),
        "plain_s": round(t_plain, 2),
        "speedup": round(t_plain / t_fast, 2),
        "relative_nll_difference": abs(fast_nll - plain_nll) / plain_nll,
        "plain_largest_logits_MiB": round(plain_bytes / 2**20, 1),
        "fast_largest_logits_MiB_upper_bound": round(min(1024, sum(s.n_tokens for s in fast)) * vocab * 4 / 2**20, 1),
    }


def bench_generation(loaded, n: int, max_new_tokens: int, batch_size: int) -> dict:
    from fusechat.evaluate.datasets import gsm_symbolic_problems
    from fusechat.evaluate.exact_match import math_prompt
    from fusechat.evaluate.generation import generate_ids

    prompts = [math_prompt(loaded.tokenizer, p) for p in gsm_symbolic_problems(n)]
    t0 = time.perf_counter()
    batched = generate_ids(loaded.model, loaded.tokenizer, prompts, max_new_tokens, batch_size, progress=False)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = generate_ids(loaded.model, loaded.tokenizer, prompts, max_new_tokens, 1, progress=False)
    t_single = time.perf_counter() - t0
    same = sum(a == b for a, b in zip(batched, single, strict=True))
    return {
        "prompts": n,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "new_tokens": sum(len(x) for x in batched),
        "batched_s": round(t_batched, 2),
        "one_at_a_time_s": round(t_single, 2),
        "speedup": round(t_single / t_batched, 2),
        "identical_outputs": f"{same}/{n}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--conversations", required=True)
    ap.add_argument("--n-conv", type=int, default=100)
    ap.add_argument("--n-gsm", type=int, default=50)
    ap.add_argument("--n-hhh", type=int, default=221)
    ap.add_argument("--suite", default="bpb,gsm,hhh")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ratio-conv", type=int, default=16, help="conversations for the bpb fast-vs-plain ratio")
    ap.add_argument("--ratio-gen", type=int, default=8, help="prompts for the batched-vs-single ratio")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: suite,ratios")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from fusechat.data.conversations import Conversations
    from fusechat.evaluate.suite import evaluate, load_for_eval
    from fusechat.evaluate.tasks import EvalOptions
    from fusechat.models.load import resolve_model_dir

    model_dir = resolve_model_dir(args.model)
    report: dict = {"model": args.model, "threads": args.threads}
    skip = set(args.skip.split(","))
    if "suite" not in skip:
        limits = {"bpb": args.n_conv, "gsm": args.n_gsm, "hhh": args.n_hhh, "asdiv": args.n_gsm, "mtbench": 8}
        with tempfile.TemporaryDirectory() as tmp:
            opts = {
                "conversations": args.conversations,
                "limits": {k: v for k, v in limits.items() if k in args.suite.split(",")},
                "max_new_tokens": args.max_new_tokens,
                "batch_size": args.batch_size,
                "cache_dir": Path(tmp) / "cache",
                "progress": False,
            }
            t0 = time.perf_counter()
            scores = evaluate({"m": model_dir}, args.suite, Path(tmp) / "a", **opts)["m"]
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            evaluate({"m": model_dir}, args.suite, Path(tmp) / "b", **opts)
            cached = time.perf_counter() - t0
        report["suite"] = {
            t: {"n": r["n"], "value": round(r["value"], 4), "stderr": r["stderr"], "seconds": r["seconds"]}
            for t, r in scores.items()
        }
        report["suite_total_s"] = round(first, 1)
        report["cached_rerun_s"] = round(cached, 2)
        report["cached_speedup"] = round(first / cached, 1)
        print(json.dumps(report, indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x))
    if "ratios" not in skip:
        loaded = load_for_eval("m", model_dir, EvalOptions(progress=False))
        report["bpb_fast_vs_plain"] = bench_bpb(loaded, Conversations(args.conversations), args.ratio_conv, 4096)
        print(json.dumps(report["bpb_fast_vs_plain"], indent=2))
        if args.ratio_gen > 0:
            report["generation_batched_vs_single"] = bench_generation(loaded, args.ratio_gen, 128, args.batch_size)
            print(json.dumps(report["generation_batched_vs_single"], indent=2))
    print("RESULT " + json.dumps(report, default=str))


if __name__ == "__main__":
    main()
