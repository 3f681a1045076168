"""The loss head alone: time and peak memory of one forward + backward, fusion vs CLM-only vs dense (vs Liger).

Variants on the same (N, H) hidden states and (V, H) head (bf16 on a GPU, fp32 on CPU unless --dtype):
  fusion  - fusechat's chunked loss, lam 0.9, top-10 sparse targets, each piece's elementwise work eager
  clm     - the same loss with lam 1 (CLM only, no targets)
  fusion_compiled, clm_compiled - the same two with that work compiled (torch.compile; `kernel="compiled"`,
            what `auto` runs on CUDA); the warm-up round includes the compilation, whose time is printed apart
  dense   - fusechat's dense reference: full fp32 logits, dense targets, autograd (what reference scripts do)
  liger   - Liger-Kernel's fused linear cross-entropy (CLM only), where `liger_kernel` is importable
  fusion@REV, clm@REV - the same with `fusechat.train` as it was at git revision REV (`--against REV`), for an
            old-vs-new comparison in one run; the old tree is extracted to a temporary directory, never committed
Steps of all variants alternate within each round (so a loaded machine slows all alike); the first round warms
up; medians are printed, then ratios. Peak memory is the CUDA allocator's peak beyond the inputs (GPU only); on
CPU the process's CPU time is printed beside wall time (far less sensitive to other jobs on the machine).

    python benchmarks/bench_loss.py --small                   # CPU: N 1024, V 32,000 x H 256
    python benchmarks/bench_loss.py --small --against HEAD~1  # the same, old loss beside the new one
    python benchmarks/bench_loss.py                           # GPU: N 16,384 at the issue's four shapes
    python benchmarks/bench_loss.py --shapes 262144x4096 --variants fusion_compiled,clm_compiled --chunk-memory 256,1024
    python benchmarks/bench_loss.py --piece 128                # one piece's elementwise work, eager vs compiled
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GPU_SHAPES = "49152x2048,128256x2048,151936x4096,262144x4096"
K = 10


def load_fusechat(rev: str | None, tmp: Path):
    """(fusion_loss, Head, dense_fusion_loss) from this checkout or from git revision `rev`."""
    if rev is None:
        sys.path.insert(0, str(ROOT / "src"))
        importlib.invalidate_caches()
        loss, dense = importlib.import_module("fusechat.train.loss"), importlib.import_module("fusechat.train.dense")
        return loss.fusion_loss, loss.Head, dense.dense_fusion_loss
    tree = tmp / "old"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src/fusechat/train"], capture_output=True)
    if archive.returncode:
        raise SystemExit(f"--against {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    # Loaded under another package name, so the old and the new loss live in one process side by side.
    pkg = tree / "fusechat_old"
    (tree / "src" / "fusechat" / "train").rename(pkg)
    for f in pkg.glob("*.py"):
        f.write_text(f.read_text().replace("fusechat.train.", "fusechat_old."))
    sys.path.insert(0, str(tree))
    loss = importlib.import_module("fusechat_old.loss")
    return loss.fusion_loss, loss.Head, None


def make_inputs(v: int, h: int, n: int, dtype, device):
    g = torch.Generator(device=device).manual_seed(0)
    hidden = (torch.randn(n, h, device=device, generator=g) * 0.5).to(dtype).requires_grad_(True)
    weight = (torch.randn(v, h, device=device, generator=g) * h**-0.5).to(dtype).requires_grad_(True)
    labels = torch.randint(0, v, (n,), device=device, generator=g)
    tid = torch.randint(0, v, (n, K), device=device, generator=g)
    tlp = torch.log_softmax(torch.randn(n, K, device=device, generator=g), -1).to(torch.float16)
    return hidden, weight, labels, tid, tlp


def make_step(variant: str, impls: dict, inputs, chunk_memory: int | None):
    hidden, weight, labels, tid, tlp = inputs
    name, _, rev = variant.partition("@")
    name, _, compiled = name.partition("_")
    fusion_loss, head_cls, dense = impls[rev or None]
    kw = {} if chunk_memory is None or rev else {"chunk_memory": chunk_memory}
    if not rev and name in ("fusion", "clm"):
        kw["kernel"] = "compiled" if compiled else "eager"
    liger = None
    if name == "liger":
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss()

    def step() -> float:
        head = head_cls(weight=weight)
        if name == "fusion":
            loss = fusion_loss(hidden, head, labels, tid, tlp, lam=0.9, **kw).loss
        elif name == "clm":
            loss = fusion_loss(hidden, head, labels, lam=1.0, **kw).loss
        elif name == "dense":
            loss = dense(hidden, head, labels, tid, tlp, lam=0.9)
        else:
            loss = liger(weight, hidden, labels)
        loss.backward()
        hidden.grad = weight.grad = None
        return float(loss.detach())

    return step


def measure(steps: dict, rounds: int, device) -> dict:
    """Median seconds and (CUDA) peak extra bytes of each variant's step, steps alternating within rounds."""
    cuda = device.type == "cuda"
    times: dict[str, list[float]] = {v: [] for v in steps}
    cpu: dict[str, list[float]] = {v: [] for v in steps}
    peaks: dict[str, int] = {}
    losses: dict[str, float] = {}
    first: dict[str, float] = {}
    for r in range(rounds + 1):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for v in order:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            t, c = time.perf_counter(), time.process_time()
            losses[v] = steps[v]()
            if cuda:
                torch.cuda.synchronize()
                peaks[v] = max(peaks.get(v, 0), torch.cuda.max_memory_allocated() - base)
            if r:  # round 0 warms up (and compiles)
                times[v].append(time.perf_counter() - t)
                cpu[v].append(time.process_time() - c)
            else:
                first[v] = time.perf_counter() - t

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    return {
        v: {
            "s": median(ts),
            "cpu_s": median(cpu[v]),
            "peak": peaks.get(v),
            "loss": losses[v],
            "all_s": ts,
            "first_s": first[v],
        }
        for v, ts in times.items()
    }


def bench_pieces(shapes: str, rows: int, dtype, device, rounds: int) -> None:
    """The elementwise work of one piece alone (softmax statistics, both terms, the gradient written in `dtype`),
    eager against compiled, on fp32 logits (rows x V) as the logits matmul leaves them; no matmul is timed.
    Prints the time a piece, and the memory bandwidth it would take if the piece were one read of the fp32
    logits and one write of the gradient (against the device's peak: how close to a single pass it is)."""
    sys.path.insert(0, str(ROOT / "src"))
    from fusechat.train import chunked, fused

    fns = {"eager": chunked.piece_loss_and_grad, "compiled": fused.piece_loss_and_grad}
    for shape in shapes.split(","):
        v = int(shape.split("x")[0])
        g = torch.Generator(device=device).manual_seed(0)
        z0 = torch.randn(rows, v, device=device, generator=g) * 3
        z = torch.empty_like(z0)
        labels = torch.randint(0, v, (rows,), device=device, generator=g)
        ids = torch.randint(0, v, (rows, K), device=device, generator=g)
        q = torch.softmax(torch.randn(rows, K, device=device, generator=g), -1)
        valid = torch.ones(rows, K, dtype=torch.bool, device=device)
        out = torch.empty(rows, v, dtype=dtype, device=device)
        cfg = (0.9, 1.0, 1.0, None, 1.0 / 16384)
        times: dict[str, list[float]] = {name: [] for name in fns}
        for r in range(rounds + 1):
            for name, fn in fns.items():
                for _ in range(10):
                    z.copy_(z0)  # the eager piece overwrites its logits
                    target = z if dtype == torch.float32 else out
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    t = time.perf_counter()
                    fn(z, labels, ids, valid, q, None, cfg, target)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    if r:  # round 0 warms up (and compiles)
                        times[name].append(time.perf_counter() - t)
        med = {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}
        print(f"piece {rows} x V {v}, gradient in {dtype}, {device.type}:")
        one_pass = rows * v * (4 + out.element_size())
        for name, t in med.items():
            print(f"  {name:9s} {1000 * t:8.3f} ms a piece, as one pass {one_pass / t / 1e9:7.1f} GB/s")
        print(f"  time compiled/eager: {med['compiled'] / med['eager']:.3f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="a CPU-sized shape: N 1024, 32000x256")
    p.add_argument("--shapes", help="VxH,... (default: the issue's four on a GPU)")
    p.add_argument("--n", type=int, help="supervised positions (default 16384; 1024 with --small)")
    p.add_argument("--variants", default="fusion,fusion_compiled,clm,clm_compiled,dense,liger")
    p.add_argument("--against", help="git revision whose loss runs beside this one (fusion@REV, clm@REV)")
    p.add_argument("--chunk-memory", default="", help="MiB per chunk, comma-separated to sweep (default: auto)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="default bf16 on GPU, fp32 on CPU")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--piece", type=int, metavar="ROWS", help="time only one piece's elementwise work (ROWS x V)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    ]
    shapes = args.shapes or ("32000x256" if args.small or device.type != "cuda" else GPU_SHAPES)
    n = args.n or (1024 if args.small or device.type != "cuda" else 16384)
    if args.piece:
        return bench_pieces(shapes, args.piece, dtype, device, args.rounds)
    variants = args.variants.split(",")
    if args.against:
        variants += [f"{v}@{args.against}" for v in ("fusion", "clm") if v in variants]
    budgets = [int(x) << 20 for x in args.chunk_memory.split(",") if x] or [None]
    with tempfile.TemporaryDirectory() as tmp:
        impls = {None: load_fusechat(None, Path(tmp))}
        if args.against:
            impls[args.against] = load_fusechat(args.against, Path(tmp))
        if "liger" in variants and importlib.util.find_spec("liger_kernel") is None:
            print("liger: liger_kernel not importable; left out")
            variants.remove("liger")
        rows = []
        for shape in shapes.split(","):
            v, h = (int(x) for x in shape.split("x"))
            inputs = make_inputs(v, h, n, dtype, device)
            for budget in budgets:
                names = [x for x in variants if budget is None or x.split("@")[0].split("_")[0] in ("fusion", "clm")]
                steps = {x: make_step(x, impls, inputs, budget) for x in names}
                res = measure(steps, args.rounds, device)
                label = "auto" if budget is None else f"{budget >> 20} MiB"
                print(f"V {v} x H {h}, N {n}, {dtype}, {device.type}, chunk memory {label}:")
                if any("compiled" in x for x in res) and importlib.import_module("fusechat.train.fused").failed():
                    print("  NOTE: compiling failed (the warning above): the *_compiled variants ran eagerly")
                for x, r in res.items():
                    mem = "" if r["peak"] is None else f", peak extra {r['peak'] / 2**30:.3f} GiB"
                    mem += "" if device.type == "cuda" else f", CPU time {1000 * r['cpu_s']:9.1f} ms"
                    first = f"  (first call {r['first_s']:.1f} s, with compilation)" if "compiled" in x else ""
                    print(f"  {x:16s} {1000 * r['s']:9.1f} ms{mem}  loss {r['loss']:.4f}{first}")
                ratios = [("fusion_compiled", "fusion"), ("clm_compiled", "clm"), ("fusion", "clm")]
                ratios += [("fusion_compiled", "clm_compiled"), ("fusion_compiled", "liger"), ("fusion", "liger")]
                ratios += [("clm_compiled", "liger"), ("fusion_compiled", "dense"), ("fusion", "dense")]
                if args.against:
                    ratios += [(f"fusion@{args.against}", "fusion"), (f"clm@{args.against}", "clm")]
                for a, b in ratios:
                    if a in res and b in res:
                        line = f"  time {a}/{b}: {res[a]['s'] / res[b]['s']:.3f}"
                        if device.type != "cuda":
                            line += f" (CPU time {res[a]['cpu_s'] / res[b]['cpu_s']:.3f})"
                        if res[a]["peak"] is not None and res[b]["peak"]:
                            line += f", peak memory {a}/{b}: {res[a]['peak'] / res[b]['peak']:.3f}"
                        print(line, flush=True)
                rows.append({"V": v, "H": h, "N": n, "dtype": str(dtype), "chunk_memory": budget, "results": res})
            del inputs
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
