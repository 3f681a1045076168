"""Produce golden merge outputs with mergekit 0.1.5 itself, for tests/merge/test_golden.py.

Run with the project's venv; mergekit runs from its own venv (MERGEKIT_VENV, default /work/venv-mergekit:
`python -m venv V && V/bin/pip install torch==2.13.0 && V/bin/pip install mergekit==0.1.5`):

    python tests/merge/make_golden.py

It writes tiny input checkpoints (fixed seeds) under golden/inputs/, one YAML config per case under
golden/configs/, and mergekit's merged tensors as golden/<case>.safetensors. The tests run the same configs
with fusechat and compare. Keep everything tiny: the whole directory stays well under 1 MB.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
from tests.merge.checkpoints import make_family  # noqa: E402

GOLDEN = HERE / "golden"
BASE, A, B = "BASE", "A", "B"  # placeholders replaced by the input directories

SLERP_T = [
    {"filter": "self_attn", "value": [0.0, 0.5, 1.0]},
    {"filter": "mlp", "value": [1.0, 0.5, 0.0]},
    {"value": 0.25},
]

CASES: dict[str, dict] = {
    "linear": {
        "merge_method": "linear",
        "models": [
            {"model": A, "parameters": {"weight": 1.0}},
            {"model": B, "parameters": {"weight": 2.0}},
            {"model": BASE, "parameters": {"weight": 0.5}},
        ],
    },
    "linear_no_normalize": {
        "merge_method": "linear",
        "models": [{"model": A, "parameters": {"weight": 0.3}}, {"model": B, "parameters": {"weight": 0.2}}],
        "parameters": {"normalize": False},
    },
    "slerp": {
        "merge_method": "slerp",
        "base_model": BASE,
        "models": [{"model": BASE}, {"model": B}],
        "parameters": {"t": 0.3},
    },
    "slerp_gradient": {
        "merge_method": "slerp",
        "base_model": BASE,
        "models": [{"model": BASE}, {"model": A}],
        "parameters": {"t": SLERP_T},
    },
    "task_arithmetic": {
        "merge_method": "task_arithmetic",
        "base_model": BASE,
        "models": [{"model": A, "parameters": {"weight": 0.25}}, {"model": B, "parameters": {"weight": 0.5}}],
    },
    "task_arithmetic_lambda": {
        "merge_method": "task_arithmetic",
        "base_model": BASE,
        "models": [{"model": A, "parameters": {"weight": 0.7}}, {"model": B, "parameters": {"weight": -0.3}}],
        "parameters": {"lambda": 1.5, "normalize": True},
    },
    "ties": {
        "merge_method": "ties",
        "base_model": BASE,
        "models": [
            {"model": A, "parameters": {"weight": 0.25, "density": 0.5}},
            {"model": B, "parameters": {"weight": 0.5, "density": 0.5}},
        ],
    },
    "ties_gradient_density": {
        "merge_method": "ties",
        "base_model": BASE,
        "models": [
            {"model": A, "parameters": {"weight": 1.0, "density": [0.2, 0.9]}},
            {"model": B, "parameters": {"weight": 1.0, "density": 0.3}},
        ],
        "parameters": {"rescale": True},
    },
    "dare_linear_density1": {
        "merge_method": "dare_linear",
        "base_model": BASE,
        "models": [
            {"model": A, "parameters": {"weight": 0.25, "density": 1.0}},
            {"model": B, "parameters": {"weight": 0.5, "density": 1.0}},
        ],
    },
    "dare_ties_density1": {
        "merge_method": "dare_ties",
        "base_model": BASE,
        "models": [
            {"model": A, "parameters": {"weight": 0.25, "density": 1.0}},
            {"model": B, "parameters": {"weight": 0.5, "density": 1.0}},
        ],
    },
    "sce": {
        "merge_method": "sce",
        "base_model": BASE,
        "models": [{"model": A}, {"model": B}],
        "parameters": {"select_topk": 0.1},
    },
    "sce_all": {"merge_method": "sce", "base_model": BASE, "models": [{"model": A}, {"model": B}]},
}

# mergekit does these in bf16 arithmetic (`dtype: bfloat16`); fusechat matches them only with
# mergekit_arithmetic=True and is closer to the exact result by default (tests/merge/test_dtypes.py).
BF16_CASES: dict[str, dict] = {
    "ties_bf16": {**CASES["ties"], "dtype": "bfloat16"},
    "task_arithmetic_bf16": {**CASES["task_arithmetic"], "dtype": "bfloat16"},
    "sce_bf16": {**CASES["sce"], "dtype": "bfloat16"},
}


def substitute(obj, mapping: dict[str, str]):
    if isinstance(obj, dict):
        return {k: substitute(v, mapping) for k, v in obj.items()}
    if isinstance(obj, list):
        return [substitute(v, mapping) for v in obj]
    return mapping.get(obj, obj) if isinstance(obj, str) else obj


def main() -> None:
    venv = Path(os.environ.get("MERGEKIT_VENV", "/work/venv-mergekit"))
    mergekit = venv / "bin" / "mergekit-yaml"
    if not mergekit.exists():
        sys.exit(f"{mergekit} not found; install mergekit==0.1.5 in a separate venv (see this file's docstring)")
    if GOLDEN.exists():
        shutil.rmtree(GOLDEN)
    (GOLDEN / "configs").mkdir(parents=True)
    base, a, b = make_family(GOLDEN / "inputs", seed=1234)
    mapping = {BASE: str(base), A: str(a), B: str(b)}
    for name, case in {**CASES, **BF16_CASES}.items():
        (GOLDEN / "configs" / f"{name}.yml").write_text(yaml.safe_dump(case, sort_keys=False))
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "config.yml"
            cfg.write_text(yaml.safe_dump(substitute(case, mapping), sort_keys=False))
            out = Path(tmp) / "out"
            cmd = [
                str(mergekit),
                str(cfg),
                str(out),
                "--no-copy-tokenizer",
                "--no-write-model-card",
                "--quiet",
                "--random-seed",
                "0",
            ]
            subprocess.run(cmd, check=True)
            tensors = {}
            for f in sorted(out.glob("*.safetensors")):
                tensors.update(load_file(str(f)))
            save_file(tensors, str(GOLDEN / f"{name}.safetensors"), metadata={"mergekit": "0.1.5"})
        print(f"{name}: {len(tensors)} tensors")
    total = sum(f.stat().st_size for f in GOLDEN.rglob("*") if f.is_file())
    print(f"golden: {total / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
