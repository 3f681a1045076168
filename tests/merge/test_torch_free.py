"""The merge's fast path runs without torch: dtype conversions equal torch's, and a merge never imports it.

`fusechat merge` used to spend 1.2-1.4 s importing torch before reading a byte; the engine now holds tensors
as numpy arrays with safetensors dtype codes (merge/dtypes.py) and imports torch only for what the kernels do
not cover. These tests hold the numpy conversions to torch's, bit for bit, and check the import stays out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fusechat.merge import dtypes, registry, torch_path
from tests.merge.checkpoints import make_family

SRC = Path(__file__).resolve().parents[2] / "src"


def edge_values() -> torch.Tensor:
    """Random floats over many magnitudes, plus halfway cases, subnormals, infinities, signed zeros."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g) * torch.exp2(torch.randint(-30, 30, (20000,), generator=g).float())
    halfway = (torch.arange(1, 1000, dtype=torch.int32) << 16 | 0x8000).view(torch.float32)  # bf16 ties
    specials = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 1e-40, -1e-40, 65504.0, 65520.0, 1e30])
    return torch.cat([x, halfway, -halfway, specials])


@pytest.mark.parametrize(("src", "dst"), [("F32", "BF16"), ("F32", "F16"), ("BF16", "F16"), ("F16", "BF16")])
def test_conversions_equal_torch(src, dst):
    values = edge_values().to(getattr(torch, dtypes.TORCH_NAMES[src]))
    array, code = dtypes.from_torch(values)
    assert code == src
    got = dtypes.to_torch(dtypes.convert(array, src, dst), dst)
    expected = values.to(getattr(torch, dtypes.TORCH_NAMES[dst]))
    assert torch.equal(got.view(torch.int16), expected.view(torch.int16))


def test_float32_round_trip_and_nan():
    x = np.array([1.0, np.nan, -np.inf], dtype=np.float32)
    bits = dtypes.convert(x, "F32", "BF16")
    back = dtypes.to_float32(bits, "BF16")
    assert back[0] == 1.0 and np.isnan(back[1]) and back[2] == -np.inf


def test_every_method_names_functions_that_exist():
    """The registry is the one list: each entry's reference (and kernel, when it has one) resolves, and the
    kernel drivers and torch adapters are exactly those the registry names."""
    from fusechat.merge.fast import run as fast_run

    references = {spec.reference.partition(":")[2] for spec in registry.METHODS.values()}
    kernels = {spec.kernel.partition(":")[2] for spec in registry.METHODS.values() if spec.kernel}
    for spec in registry.METHODS.values():
        assert callable(spec.torch_function()) and (spec.kernel is None or callable(spec.kernel_function()))
    assert all(getattr(torch_path, name).__module__ == torch_path.__name__ for name in references)
    assert all(getattr(fast_run, name).__module__ == fast_run.__name__ for name in kernels)
    assert registry.WEIGHTED == ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties")


@pytest.mark.parametrize("method", ["ties", "linear", "varm"])
def test_a_merge_does_not_import_torch(tmp_path, method):
    base, a, b = make_family(tmp_path, seed=1, dtype=torch.bfloat16)
    code = (
        "import sys; from fusechat.merge import merge, simple_config; "
        f"cfg = simple_config({method!r}, {str(base) if method != 'linear' else None!r}, [{str(a)!r}, {str(b)!r}], "
        f"weights={[1, 1] if method != 'varm' else None}, densities={[0.5, 0.5] if method == 'ties' else None}, "
        "parameters={'granularity': 'layer'} if " + repr(method) + " == 'varm' else None); "
        f"merge(cfg, {str(tmp_path / 'out')!r}); print('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_without_numba_the_torch_path_merges_the_same_bytes(tmp_path):
    """numba is what makes merges fast, not what makes them right: where it cannot be imported, every tensor
    takes the torch path and the checkpoint is identical."""
    base, a, b = make_family(tmp_path, seed=2, dtype=torch.bfloat16)
    outs = {}
    for label, block in (("kernels", ""), ("torch", "sys.modules['numba'] = None; ")):
        out = tmp_path / label
        code = (
            f"import sys; {block}from fusechat.merge import merge, simple_config; "
            f"cfg = simple_config('ties', {str(base)!r}, [{str(a)!r}, {str(b)!r}], weights=[1, 1], "
            f"densities=[0.5, 0.5]); merge(cfg, {str(out)!r}); print('numba' in sys.modules and "
            "sys.modules['numba'] is not None)"
        )
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == str(label == "kernels")
        outs[label] = {p.name: p.read_bytes() for p in out.glob("*.safetensors")}
    assert outs["kernels"] and outs["kernels"] == outs["torch"]
