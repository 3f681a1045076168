"""Training-step memory and speed: the chunked fusion loss vs CLM only vs the reference's dense approach.

Each variant runs in a fresh subprocess (so one variant's freed memory cannot hide another's peak): load the
model, build AdamW's state, then run `--steps` full training steps (forward, loss, backward, optimiser step)
on the same batch. Peak memory is sampled from /proc/self/statm every 2 ms during the steps (and ru_maxrss is
reported beside it); "step peak" is that peak minus the resident memory just before the first step, i.e. what
a step adds on top of model + gradients + optimiser state. Ratios are printed from one run, side by side.

Variants: `fusion` (lam 0.9, top-10 sparse targets, chunked loss: what `fusechat train` runs), `clm` (lam 1,
the same chunked path), `reference` (full (B, L, V) logits from the model's forward plus dense (B, L, V)
targets, autograd: what the reference scripts do).

    python benchmarks/bench_train.py                  # SmolLM2-135M if installed, else a same-shape config
    python benchmarks/bench_train.py --vocab-sweep    # tiny model, vocab 49k / 152k / 262k, writes a plot
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
REAL_PIVOT = Path.home() / ".cache" / "fusechat" / "models" / "smollm2-135m-instruct"


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakSampler(threading.Thread):
    """Samples this process's resident memory until stopped; keeps the maximum."""

    def __init__(self, every: float = 0.002):
        super().__init__(daemon=True)
        self.every, self.peak, self._halt = every, rss(), threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(self.every)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return max(self.peak, rss())


def build_model(spec: dict):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from fusechat.models.load import load_model

    if spec.get("pivot"):
        return load_model(spec["pivot"])
    config = LlamaConfig(
        vocab_size=spec["vocab"],
        hidden_size=spec["hidden"],
        intermediate_size=spec["intermediate"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        num_key_value_heads=spec["kv_heads"],
        max_position_embeddings=max(2048, spec["length"]),
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def make_batch(vocab: int, batch: int, length: int, k: int, seed: int = 0) -> dict:
    """Random tokens, about 60% of them supervised in four assistant spans per row; sparse top-k targets."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    labels = torch.full_like(ids, -100)
    for b in range(batch):
        for start in range(length // 8, length, length // 4):  # four spans, ~60% of the tokens
            end = min(length, start + int(length * 0.15))
            labels[b, start:end] = ids[b, start:end]
    n = int((labels[:, 1:] != -100).sum())
    target_ids = torch.stack([torch.randperm(vocab, generator=g)[:k] for _ in range(n)])
    target_lp = torch.log_softmax(torch.randn(n, k, generator=g) * 3, -1).sort(-1, descending=True).values
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "target_ids": target_ids,
        "target_logprobs": target_lp.half().float(),
    }


def step_loss(variant: str, model, batch: dict, lam: float):
    from fusechat.train.dense import dense_loss_from_logits
    from fusechat.train.head import final_hidden, head_of
    from fusechat.train.loss import fusion_loss

    labels = batch["labels"]
    sup = labels[:, 1:] != -100
    if variant == "reference":
        import torch

        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        k = batch["target_ids"].shape[1]
        ids = torch.full((*sup.shape, k), -1, dtype=torch.long)
        lps = torch.full((*sup.shape, k), float("-inf"))
        ids[sup], lps[sup] = batch["target_ids"], batch["target_logprobs"]
        return dense_loss_from_logits(logits, labels[:, 1:], ids, lps, lam=lam)
    hidden = final_hidden(model, batch)[:, :-1][sup]
    lam = 1.0 if variant == "clm" else lam
    tids = None if variant == "clm" else batch["target_ids"]
    tlps = None if variant == "clm" else batch["target_logprobs"]
    return fusion_loss(hidden, head_of(model), labels[:, 1:][sup], tids, tlps, lam=lam).loss


def child(spec: dict) -> dict:
    """Run one variant in this (fresh) process; return its figures."""
    import torch

    torch.set_num_threads(spec["threads"])
    model = build_model(spec)
    model.config.use_cache = False
    if spec.get("checkpointing"):
        model.gradient_checkpointing_enable()
    model.train()
    vocab = model.get_output_embeddings().weight.shape[0]
    batch = make_batch(vocab, spec["batch"], spec["length"], spec["k"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    for p in model.parameters():  # build the optimiser state (and gradient buffers) before measuring
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=False)
    base = rss()
    sampler = PeakSampler()
    sampler.start()
    times = []
    for _ in range(spec["steps"]):
        t0 = time.perf_counter()
        loss = step_loss(spec["variant"], model, batch, spec["lam"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        times.append(time.perf_counter() - t0)
    peak = sampler.stop()
    timed = times[1:] if len(times) > 1 else times  # the first step warms up
    tokens = spec["batch"] * spec["length"]
    return {
        "variant": spec["variant"],
        "vocab": vocab,
        "base_mb": base / 2**20,
        "peak_mb": peak / 2**20,
        "step_peak_mb": (peak - base) / 2**20,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "step_s": sorted(timed)[len(timed) // 2],
        "tokens_per_s": tokens / sorted(timed)[len(timed) // 2],
        "loss": float(loss),
    }


def alternate(spec: dict) -> dict:
    """Throughput side by side in one process: fusion and CLM-only steps alternate on the same model, so
    load from other processes hits both alike. Returns the median step time of each."""
    import torch

    torch.set_num_threads(spec["threads"])
    model = build_model(spec)
    model.config.use_cache = False
    model.train()
    vocab = model.get_output_embeddings().weight.shape[0]
    batch = make_batch(vocab, spec["batch"], spec["length"], spec["k"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    times: dict[str, list[float]] = {"fusion": [], "clm": []}
    cpu: dict[str, list[float]] = {"fusion": [], "clm": []}
    for r in range(spec["rounds"] + 1):
        order = ("fusion", "clm") if r % 2 == 0 else ("clm", "fusion")
        for variant in order:
            t0, c0 = time.perf_counter(), time.process_time()
            step_loss(variant, model, batch, spec["lam"]).backward()
            opt.step()
            opt.zero_grad(set_to_none=False)
            if r > 0:  # round 0 warms up
                times[variant].append(time.perf_counter() - t0)
                cpu[variant].append(time.process_time() - c0)

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    return {
        "wall": {v: median(t) for v, t in times.items()},
        "cpu": {v: median(t) for v, t in cpu.items()},
        "all_wall": times,
        "all_cpu": cpu,
    }


def run_variant(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    src = Path(__file__).resolve().parents[1] / "src"
    env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    r = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"variant {spec['variant']} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main_pivot(args) -> None:
    spec = dict(batch=args.batch, length=args.length, k=10, lam=0.9, steps=args.steps, threads=args.threads)
    spec["checkpointing"] = args.checkpointing
    if REAL_PIVOT.is_dir() and not args.random:
        spec["pivot"] = str(REAL_PIVOT)
        what = "SmolLM2-135M-Instruct (real weights)"
    else:
        spec.update(vocab=49152, hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3)
        what = "SmolLM2-135M-shaped Llama, random weights"
    print(f"{what}; batch {args.batch} x {args.length} tokens, fp32, {args.threads} threads, {args.steps} steps")
    results = {}
    for variant in args.order.split(","):
        r = run_variant(dict(spec, variant=variant))
        results.setdefault(variant, []).append(r)
        print(
            f"  {variant:9s} peak {r['peak_mb']:8.0f} MB (step adds {r['step_peak_mb']:7.0f} MB, base "
            f"{r['base_mb']:6.0f}, maxrss {r['maxrss_mb']:6.0f})  {r['tokens_per_s']:6.1f} tok/s  "
            f"loss {r['loss']:.3f}",
            flush=True,
        )

    def med(v, key):
        xs = sorted(r[key] for r in results[v])
        return xs[len(xs) // 2]

    print("ratios (same run):")
    for a, b in (("fusion", "clm"), ("fusion", "reference")):
        if a in results and b in results:
            print(
                f"  peak memory {a}/{b}: {med(a, 'peak_mb') / med(b, 'peak_mb'):.3f} (whole process), "
                f"{med(a, 'step_peak_mb') / med(b, 'step_peak_mb'):.3f} (what a step adds)"
            )
    if "fusion" in results and "clm" in results:
        print(f"  throughput fusion/clm: {med('fusion', 'tokens_per_s') / med('clm', 'tokens_per_s'):.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def main_sweep(args) -> None:
    vocabs = [49152, 151936, 262144]
    spec = dict(batch=1, length=args.length, k=10, lam=0.9, steps=2, threads=args.threads)
    spec.update(hidden=256, intermediate=512, layers=2, heads=4, kv_heads=2)
    rows = []
    print(f"tiny Llama (hidden 256, 2 layers, tied), batch 1 x {args.length}, fp32; step peak above base (MB)")
    for v in vocabs:
        row = {"vocab": v}
        for variant in ("fusion", "clm", "reference"):
            row[variant] = run_variant(dict(spec, vocab=v, variant=variant))["step_peak_mb"]
        rows.append(row)
        print(
            f"  vocab {v:6d}: fusion {row['fusion']:7.0f}  clm {row['clm']:7.0f}  "
            f"reference {row['reference']:7.0f}"
            f"  fusion/reference {row['fusion'] / row['reference']:.3f}",
            flush=True,
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, style in (("reference", "o-"), ("fusion", "s-"), ("clm", "^--")):
        ax.plot([r["vocab"] / 1000 for r in rows], [r[variant] for r in rows], style, label=variant)
    ax.set_xlabel("vocabulary size (thousands)")
    ax.set_ylabel("memory a training step adds (MB)")
    ax.set_title(f"Training step peak memory vs vocabulary (1 x {args.length} tokens)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--steps", type=int, default=3, help="steps per variant (the first is not timed)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--order", default="fusion,clm,reference,fusion,clm", help="variants, in the order run")
    p.add_argument("--random", action="store_true", help="use the same-shape random config, not the real pivot")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (the paper's setting)")
    p.add_argument("--alternate", type=int, metavar="ROUNDS", help="throughput: alternate fusion/CLM steps")
    p.add_argument("--vocab-sweep", action="store_true")
    p.add_argument("--plot", default="docs/train_memory_vs_vocab.png")
    p.add_argument("--json", help="also write the raw figures here")
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's fusechat
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
    elif args.alternate:
        spec = dict(batch=args.batch, length=args.length, k=10, lam=0.9, threads=args.threads, rounds=args.alternate)
        if REAL_PIVOT.is_dir() and not args.random:
            spec["pivot"] = str(REAL_PIVOT)
        else:
            spec.update(vocab=49152, hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3)
        r = alternate(spec)
        tokens = args.batch * args.length
        print(f"alternating fusion / CLM-only steps, {args.alternate} rounds, {tokens} tokens a step")
        for kind in ("wall", "cpu"):
            f, c = r[kind]["fusion"], r[kind]["clm"]
            steps = r["all_" + kind]
            print(f"  {kind} seconds a step: fusion {steps['fusion']}, clm {steps['clm']}")
            print(f"  {kind}: fusion {tokens / f:.1f} tok/s, clm {tokens / c:.1f} tok/s, fusion/clm {c / f:.3f}")
    elif args.vocab_sweep:
        main_sweep(args)
    else:
        main_pivot(args)


if __name__ == "__main__":
    main()
