"""bf16: fusechat computes in fp32 and casts once at the end; mergekit's bf16 arithmetic on request."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fusechat.merge import merge
from fusechat.merge.methods.sce import sce
from fusechat.merge.methods.task_arithmetic import Sparsify, task_arithmetic
from tests.merge.checkpoints import GOLDEN, INPUTS, load_weights
from tests.merge.make_golden import BF16_CASES, substitute


def exact(case: str) -> dict[str, torch.Tensor]:
    """The merge in float64 from the bf16-rounded inputs: what every bf16 output should approximate."""
    base, a, b = (
        {k: v.to(torch.bfloat16).double() for k, v in load_weights(GOLDEN / "inputs" / d).items()}
        for d in ("base", "a", "b")
    )
    out = {}
    for name in base:
        if case.startswith("ties"):
            out[name] = task_arithmetic(
                base[name],
                [a[name], b[name]],
                [0.25, 0.5],
                densities=[0.5, 0.5],
                sparsify=Sparsify.MAGNITUDE,
                sign_election=True,
                normalize=True,
            )
        elif case.startswith("task_arithmetic"):
            out[name] = task_arithmetic(base[name], [a[name], b[name]], [0.25, 0.5])
        else:
            out[name] = sce(base[name], [a[name], b[name]], 0.1)
    return out


def delta_error(result: dict, reference: dict, base: dict) -> float:
    """Median relative error of the merged task vector (result − base) against the exact one."""
    errs = []
    for n in reference:
        d_ref = reference[n] - base[n]
        d = result[n].double() - base[n]
        scale = d_ref.abs().mean()
        if scale > 0:
            errs.append(float((d - d_ref).abs().mean() / scale))
    return float(torch.tensor(errs).median())


@pytest.mark.parametrize("case", sorted(BF16_CASES))
def test_mergekit_arithmetic_reproduces_mergekit_bf16(case, tmp_path):
    config = substitute(yaml.safe_load((GOLDEN / "configs" / f"{case}.yml").read_text()), INPUTS)
    ours = load_weights(merge(config, tmp_path / "out", mergekit_arithmetic=True))
    golden = load_file(str(GOLDEN / f"{case}.safetensors"))
    same = sum(int((ours[n] == golden[n]).sum()) for n in golden)
    total = sum(golden[n].numel() for n in golden)
    assert ours["model.norm.weight"].dtype == torch.bfloat16
    assert same / total > 0.99, f"{same}/{total} entries equal"


@pytest.mark.parametrize("case", sorted(BF16_CASES))
def test_fp32_arithmetic_is_closer_to_exact_than_mergekit(case, tmp_path):
    config = substitute(yaml.safe_load((GOLDEN / "configs" / f"{case}.yml").read_text()), INPUTS)
    ours = load_weights(merge(config, tmp_path / "out"))
    golden = load_file(str(GOLDEN / f"{case}.safetensors"))
    reference = exact(case)
    base = {k: v.to(torch.bfloat16).double() for k, v in load_weights(GOLDEN / "inputs" / "base").items()}
    for n in reference:  # fp32 arithmetic, one rounding at the end: within one bf16 rounding of exact
        torch.testing.assert_close(ours[n].double(), reference[n].to(torch.bfloat16).double(), atol=2e-2, rtol=1e-2)
    assert delta_error(ours, reference, base) < delta_error(golden, reference, base)


def test_out_dtype_and_bf16_inputs(tmp_path):
    from tests.merge.checkpoints import make_family

    base, a, b = make_family(tmp_path / "in", seed=3, dtype=torch.bfloat16)
    config = {
        "merge_method": "ties",
        "base_model": str(base),
        "out_dtype": "float32",
        "models": [{"model": str(m), "parameters": {"weight": 0.5, "density": 0.5}} for m in (a, b)],
    }
    out = load_weights(merge(config, tmp_path / "out"))
    assert all(t.dtype == torch.float32 for t in out.values())
    config.pop("out_dtype")
    out16 = load_weights(merge(config, tmp_path / "out16"))
    assert all(t.dtype == torch.bfloat16 for t in out16.values())
    for n in out:  # the bf16 output is the fp32 result rounded once
        assert torch.equal(out16[n], out[n].to(torch.bfloat16))
