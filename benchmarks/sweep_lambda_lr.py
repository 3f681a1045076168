"""Does the fusion term move the pivot? Retrain a pairwise target and the CLM-only baseline of a finished run at
several learning rates and λ, score them on the same held-out items, and print each target − baseline
difference with its paired standard error (docs/results.md, section 1).

    python benchmarks/sweep_lambda_lr.py RUN_DIR OUT [--target pair-qwen] [--lr 2e-5,1e-4] [--lam 0.9,0.5]

RUN_DIR is a `fusechat run` directory (the demo's: runs/demo) holding conversations/, fuse/TARGET; every
training run is one epoch at batch 4, seed 0, like the demo's, and is skipped when its output is complete.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from fusechat.evaluate.paired import paired_difference, read_items  # noqa: E402


def train(run: Path, out: Path, target: str, lr: float, lam: float | None, pivot: str) -> Path:
    if (out / "manifest.json").is_file() and json.loads((out / "manifest.json").read_text()).get("complete"):
        return out
    cmd = [sys.executable, "-m", "fusechat", "train", "--pivot", pivot, "--targets", str(run / "fuse" / target)]
    cmd += ["--out", str(out), "--epochs", "1", "--batch-size", "4", "--seed", "0", "--warmup", "0.03"]
    cmd += ["--logging-steps", "1", "--lr", str(lr)]
    cmd += ["--clm-only"] if lam is None else ["--lambda", str(lam)]
    print("training", out.name, flush=True)
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--target", default="pair-qwen")
    ap.add_argument("--pivot", default="smollm2-135m-instruct")
    ap.add_argument("--lr", default="2e-5,1e-4")
    ap.add_argument("--lam", default="0.9,0.5")
    ap.add_argument("--limit", default="30")
    args = ap.parse_args()
    lrs = [float(x) for x in args.lr.split(",")]
    lams = [float(x) for x in args.lam.split(",")]
    models = {}
    for lr in lrs:
        models[f"clm-lr{lr:g}"] = train(args.run, args.out / f"clm-lr{lr:g}", args.target, lr, None, args.pivot)
        for lam in lams:
            name = f"{args.target}-l{lam:g}-lr{lr:g}"
            models[name] = train(args.run, args.out / name, args.target, lr, lam, args.pivot)
    cmd = [sys.executable, "-m", "fusechat", "evaluate", "--suite", "bpb,gsm_bpb", "--limit", args.limit]
    cmd += ["--conversations", str(args.run / "conversations" / "heldout"), "--out", str(args.out / "eval")]
    cmd += ["--no-progress", *(f"{k}={v}" for k, v in models.items())]
    subprocess.run(cmd, check=True, capture_output=True)
    ev = args.out / "eval"
    print(f"{'lr':>8} {'lambda':>6} {'task':>8}  target - CLM-only (paired SE)")
    for lr in lrs:
        for lam in lams:
            for task in ("bpb", "gsm_bpb"):
                a = read_items(ev / f"{args.target}-l{lam:g}-lr{lr:g}" / f"{task}.jsonl")
                d = paired_difference(a, read_items(ev / f"clm-lr{lr:g}" / f"{task}.jsonl"))
                text = f"{d[0]:+.4f} ± {d[1]:.4f} ({d[0] / d[1]:+.1f} SE, n = {d[2]})" if d else "not paired"
                print(f"{lr:>8g} {lam:>6g} {task:>8}  {text}")


if __name__ == "__main__":
    main()
