"""Our merges equal mergekit 0.1.5's on the same inputs and configs (goldens from make_golden.py)."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fusechat.merge import merge
from tests.merge.checkpoints import GOLDEN, INPUTS, load_weights
from tests.merge.make_golden import CASES, substitute

TOLERANCE = {"slerp": 1e-5, "slerp_gradient": 1e-5}


@pytest.mark.parametrize("case", sorted(CASES))
def test_equals_mergekit(case, tmp_path):
    config = substitute(yaml.safe_load((GOLDEN / "configs" / f"{case}.yml").read_text()), INPUTS)
    out = merge(config, tmp_path / "out")
    ours = load_weights(out)
    golden = load_file(str(GOLDEN / f"{case}.safetensors"))
    assert sorted(ours) == sorted(golden)
    tol = TOLERANCE.get(case, 1e-6)
    for name, expected in golden.items():
        assert ours[name].dtype == expected.dtype, name
        torch.testing.assert_close(ours[name], expected, atol=tol, rtol=tol, msg=lambda m, n=name: f"{n}: {m}")


def test_goldens_are_not_trivial():
    """Each golden differs from the base: a test against it can fail."""
    base = load_weights(GOLDEN / "inputs" / "base")
    for case in CASES:
        golden = load_file(str(GOLDEN / f"{case}.safetensors"))
        moved = sum(float((golden[n] - base[n]).abs().max()) > 1e-4 for n in golden)
        assert moved > len(golden) // 2, case
