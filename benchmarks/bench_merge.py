"""Merging speed and memory against the disk floor and against mergekit, measured side by side in one run.

Builds three ~500M-parameter Llama-style bf16 checkpoints under /tmp (a pivot and two targets fine-tuned from
it, two shards each), measures this disk's read and write bandwidth, then for every method runs fusechat and
mergekit 0.1.5 (installed in its own venv, by this script if absent) on the same config, each in a fresh
process with the inputs evicted from the page cache first. Prints, per method: wall time, wall time over the
disk floor (bytes read / read bandwidth + bytes written / write bandwidth), CPU seconds, peak RSS, the load
average of the machine when the run ended, and the ratios. With --torch-path, fusechat also runs with its
compiled kernels off (the torch functions of merge/methods/), for the kernels' speed-up in the same run.

    python benchmarks/bench_merge.py [--methods ties,sce] [--skip-mergekit] [--torch-path]
        [--repeat 3] [--disk-runs 3] [--root /tmp/fusechat-bench-merge]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.merge.checkpoints import llama_config, tensor_shapes  # noqa: E402

MERGEKIT_VENV = Path(os.environ.get("MERGEKIT_VENV", "/work/venv-mergekit"))
CONFIG = llama_config(hidden=1024, intermediate=4096, layers=28, vocab=32000, heads=16, kv_heads=8)
METHODS = ("ties", "sce", "dare_ties", "task_arithmetic", "linear", "slerp", "dare_linear", "varm")


def build(root: Path) -> tuple[Path, Path, Path]:
    """The three checkpoints, built tensor by tensor (bf16, two shards each); reused when already there."""
    dirs = [root / n for n in ("pivot", "target_a", "target_b")]
    if all((d / "config.json").is_file() for d in dirs):
        return dirs[0], dirs[1], dirs[2]
    from safetensors.torch import save_file

    shapes = sorted(tensor_shapes(CONFIG).items())
    n_params = sum(torch.Size(s).numel() for _, s in shapes)
    print(f"building 3 checkpoints of {n_params / 1e6:.0f}M parameters in {root}", flush=True)
    halves = [shapes[: len(shapes) // 2], shapes[len(shapes) // 2 :]]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for s, part in enumerate(halves):
        out = [{}, {}, {}]
        for i, (name, shape) in enumerate(part):
            g = torch.Generator().manual_seed(s * 100_000 + i)
            base = torch.randn(shape, generator=g) * 0.02 + (1.0 if "norm" in name else 0.0)
            out[0][name] = base.to(torch.bfloat16)
            for j, scale in ((1, 2e-3), (2, 4e-3)):
                out[j][name] = (base + torch.randn(shape, generator=g) * scale).to(torch.bfloat16)
        for d, tensors in zip(dirs, out, strict=True):
            save_file(tensors, str(d / f"model-{s + 1:05d}-of-00002.safetensors"), metadata={"format": "pt"})
    for d in dirs:
        weight_map = {}
        for f in sorted(d.glob("*.safetensors")):
            from safetensors import safe_open

            with safe_open(str(f), "pt") as h:
                weight_map.update({k: f.name for k in h.keys()})  # noqa: SIM118
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        (d / "config.json").write_text(json.dumps({**CONFIG, "dtype": "bfloat16"}, indent=2))
    return dirs[0], dirs[1], dirs[2]


def set_manifests(dirs: list[Path], on: bool) -> None:
    """Give the inputs a manifest listing their weight files with sha256 (on), or remove it (off); with one, a
    merge checks every input byte against it. Also prints what hashing them in a pass of their own costs."""
    from fusechat import manifest

    for d in dirs:
        (d / manifest.MANIFEST).unlink(missing_ok=True)
        if on:
            names = sorted(p.name for p in d.glob("*.safetensors"))
            manifest.write_manifest(d, {"stage": "bench", "files": manifest.file_entries(d, names)}, complete=True)
    if on:
        files = [f for d in dirs for f in sorted(d.glob("*.safetensors"))]
        evict(files)
        code = "import sys; from fusechat.manifest import check_files; [check_files(d) for d in sys.argv[1:]]"
        wall, cpu, _ = run(
            [sys.executable, "-c", code, *map(str, dirs)], {**os.environ, "PYTHONPATH": str(REPO / "src")}
        )
        print(
            f"hashing the three inputs in a pass of their own (what a merge did before): {wall:.1f} s, {cpu:.1f} CPU-s"
        )


def evict(paths: list[Path]) -> None:
    """Drop these files' pages from the page cache, so the next read comes from disk (only our files)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def disk_bandwidth(root: Path, size: int = 1 << 30) -> dict[str, float]:
    """Read and write bytes/s, buffered and direct: 1 GiB written with fsync, evicted, read back; then the
    same with O_DIRECT (16 MiB aligned blocks, as the merge writes). The floor uses the faster of each, so
    that neither way of doing IO can beat it."""
    import numpy as np

    path = root / "bandwidth.tmp"
    block = os.urandom(1 << 24)
    out = {}
    start = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    out["write_buffered"] = size / (time.perf_counter() - start)
    evict([path])
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 24):
            pass
    out["read_buffered"] = size / (time.perf_counter() - start)
    path.unlink()
    raw = np.frombuffer(bytearray(len(block) + 4096), dtype=np.uint8)
    aligned = raw[-raw.ctypes.data % 4096 :][: len(block)]
    aligned[:] = np.frombuffer(block, dtype=np.uint8)
    view = memoryview(aligned)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT)
    for _ in range(size // len(block)):
        os.write(fd, view)
    os.fsync(fd)
    os.close(fd)
    out["write_direct"] = size / (time.perf_counter() - start)
    evict([path])
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    while os.readv(fd, [view]):
        pass
    os.close(fd)
    out["read_direct"] = size / (time.perf_counter() - start)
    path.unlink()
    return out


def config_for(method: str, pivot: Path, a: Path, b: Path) -> dict:
    two = [
        {"model": str(a), "parameters": {"weight": 0.25}},
        {"model": str(b), "parameters": {"weight": 0.5}},
    ]
    sparse = [{"model": m["model"], "parameters": {**m["parameters"], "density": 0.5}} for m in two]
    cfg = {
        "linear": {
            "models": [
                {"model": str(a), "parameters": {"weight": 1.0}},
                {"model": str(b), "parameters": {"weight": 2.0}},
            ]
        },
        "slerp": {
            "base_model": str(pivot),
            "models": [{"model": str(pivot)}, {"model": str(a)}],
            "parameters": {"t": 0.5},
        },
        "task_arithmetic": {"base_model": str(pivot), "models": two},
        "ties": {"base_model": str(pivot), "models": sparse},
        "dare_ties": {"base_model": str(pivot), "models": sparse},
        "dare_linear": {"base_model": str(pivot), "models": sparse},
        "sce": {
            "base_model": str(pivot),
            "models": [{"model": str(a)}, {"model": str(b)}],
            "parameters": {"select_topk": 0.1},
        },
        "varm": {"base_model": str(pivot), "models": [{"model": str(a)}, {"model": str(b)}]},
    }[method]
    return {"merge_method": method, **cfg, "dtype": "bfloat16"}


def run(cmd: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """Run `cmd` in a new process; returns (wall s, CPU s, peak RSS GB) of that process alone.

    Peak RSS is the kernel's high-water mark (VmHWM) of the process after exec, polled every 20 ms; rusage's
    ru_maxrss is not used because it keeps the forking parent's RSS from before the exec.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    status_path = Path(f"/proc/{proc.pid}/status")

    def poll() -> None:
        nonlocal peak
        while proc.returncode is None:
            try:
                for line in status_path.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
            except (FileNotFoundError, ProcessLookupError):
                return
            time.sleep(0.02)

    import threading

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    err = proc.stderr.read().decode() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, peak / 1e9


def ensure_mergekit() -> Path:
    exe = MERGEKIT_VENV / "bin" / "mergekit-yaml"
    if not exe.exists():
        print(f"installing mergekit 0.1.5 into {MERGEKIT_VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MERGEKIT_VENV)], check=True)
        pip = str(MERGEKIT_VENV / "bin" / "pip")
        subprocess.run([pip, "install", "-q", "torch==2.13.0"], check=True)  # first, so no CUDA build is pulled
        subprocess.run([pip, "install", "-q", "mergekit==0.1.5"], check=True)
    return exe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/fusechat-bench-merge"))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--skip-mergekit", action="store_true")
    ap.add_argument("--torch-path", action="store_true", help="also run fusechat with compiled=False")
    ap.add_argument("--repeat", type=int, default=1, help="run fusechat this many times; report the median")
    ap.add_argument("--disk-runs", type=int, default=3, help="disk measurements; the floor uses the best of each")
    ap.add_argument(
        "--manifests",
        action="store_true",
        help="give the inputs fusechat manifests with sha256 (as trained targets have), and time hashing them apart",
    )
    args = ap.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    pivot, a, b = build(args.root)
    set_manifests([pivot, a, b], args.manifests)
    mergekit = None if args.skip_mergekit else ensure_mergekit()
    runs = [disk_bandwidth(args.root) for _ in range(args.disk_runs)]  # the disk varies run to run here
    bw = {k: max(r[k] for r in runs) for k in runs[0]}  # the best of each: the strictest floor
    read_bw = max(bw["read_buffered"], bw["read_direct"])
    write_bw = max(bw["write_buffered"], bw["write_direct"])
    print(
        f"disk (best of {args.disk_runs} in this run), MB/s: " + ", ".join(f"{k} {v / 1e6:.0f}" for k, v in bw.items()),
        f"; floor uses read {read_bw / 1e6:.0f}, write {write_bw / 1e6:.0f}; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    rows = []
    for method in args.methods.split(","):
        cfg = config_for(method, pivot, a, b)
        path = args.root / f"{method}.yml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        inputs = {Path(m["model"]) for m in cfg["models"]} | (
            {Path(cfg["base_model"])} if "base_model" in cfg else set()
        )
        files = [f for d in sorted(inputs) for f in sorted(d.glob("*.safetensors"))]
        read_bytes = sum(f.stat().st_size for f in files)
        row = {"method": method}
        for tool in ("fusechat", "fusechat-torch", "mergekit"):
            if tool == "mergekit" and (mergekit is None or method == "varm"):
                continue
            if tool == "fusechat-torch" and not args.torch_path:
                continue
            runs = []
            for _ in range(args.repeat if tool == "fusechat" else 1):
                out = args.root / f"out-{tool}-{method}"
                shutil.rmtree(out, ignore_errors=True)
                evict(files)
                if tool == "fusechat":  # the command line, as users run it
                    cmd = [sys.executable, "-m", "fusechat", "merge", str(path), str(out)]
                elif tool == "fusechat-torch":  # the same call with the kernels off, and the CLI's quick exit
                    cmd = [
                        sys.executable,
                        "-c",
                        "import gc, sys; from fusechat.merge import merge; "
                        "merge(sys.argv[1], sys.argv[2], compiled=False); gc.freeze()",
                        str(path),
                        str(out),
                    ]
                else:
                    cmd = [
                        str(mergekit),
                        str(path),
                        str(out),
                        "--no-copy-tokenizer",
                        "--random-seed",
                        "0",
                        "--quiet",
                    ]
                wall, cpu, rss = run(cmd, env)
                written = sum(f.stat().st_size for f in out.glob("*.safetensors"))
                floor = read_bytes / read_bw + written / write_bw
                runs.append(
                    {
                        "wall_s": round(wall, 1),
                        "cpu_s": round(cpu, 1),
                        "floor_s": round(floor, 2),
                        "x_floor": round(wall / floor, 2),
                        "peak_rss_gb": round(rss, 2),
                        "load_avg_1min": round(os.getloadavg()[0], 1),
                    }
                )
                if tool.startswith("fusechat"):
                    runs[-1]["merge_s"] = json.loads((out / "manifest.json").read_text())["seconds"]
                    runs[-1]["merge_x_floor"] = round(runs[-1]["merge_s"] / floor, 2)
                shutil.rmtree(out, ignore_errors=True)
            row[tool] = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]  # the median run by wall time
            if len(runs) > 1:
                row[tool]["walls_s"] = [r["wall_s"] for r in runs]
            print(json.dumps({"method": method, tool: row[tool]}), flush=True)
        rows.append(row)
    print(
        "\n| method | floor s | fusechat wall s (merge only) | × floor | CPU s | mergekit wall s | × floor "
        "| CPU s | wall speed-up | CPU ratio | peak RSS GB fusechat / mergekit | RSS ratio | load avg |"
        + (" torch path wall s | CPU s | kernels' CPU speed-up |" if args.torch_path else "")
    )
    print("|---" * (13 + 3 * args.torch_path) + "|")
    for r in rows:
        f, m = r["fusechat"], r.get("mergekit")
        ours = f"{f['wall_s']} ({f['merge_s']}) | {f['x_floor']} ({f['merge_x_floor']}) | {f['cpu_s']}"
        if m:
            theirs = (
                f"{m['wall_s']} | {m['x_floor']} | {m['cpu_s']} | {m['wall_s'] / f['wall_s']:.1f}× | "
                f"{m['cpu_s'] / f['cpu_s']:.1f}× | {f['peak_rss_gb']} / {m['peak_rss_gb']} | "
                f"{f['peak_rss_gb'] / m['peak_rss_gb']:.2f}"
            )
        else:
            theirs = f"– | – | – | – | – | {f['peak_rss_gb']} / – | –"
        line = f"| {r['method']} | {f['floor_s']} | {ours} | {theirs} | {f['load_avg_1min']} |"
        if args.torch_path:
            t = r["fusechat-torch"]
            line += f" {t['wall_s']} | {t['cpu_s']} | {t['cpu_s'] / f['cpu_s']:.1f}× |"
        print(line)


if __name__ == "__main__":
    main()
