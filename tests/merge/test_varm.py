"""VaRM against a hand computation of the paper's formula, at every granularity and both measures."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from fusechat.merge import merge, simple_config
from fusechat.merge.methods.varm import varm_element, varm_matrix, weights_from_variations


def load(d):
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def hand_group(name: str, granularity: str) -> str:
    """The groups written out by hand for Llama names: model.layers.N.<module>.<matrix>.weight."""
    parts = name.split(".")
    in_layer = parts[:2] == ["model", "layers"]
    if granularity == "model":
        return ""
    if granularity == "matrix":
        return name
    if not in_layer:
        return ".".join(parts[:-1])
    return ".".join(parts[:3] if granularity == "layer" else parts[:4])


def hand_varm(base, targets, granularity, measure):
    def var(d):
        return d.pow(2) if measure == "squared" else d.abs()

    if granularity == "element":
        out = {}
        for name, b in base.items():
            v = torch.stack([var(t[name].double() - b.double()) for t in targets])
            total = v.sum(0)
            w = torch.where(total > 0, v / torch.where(total > 0, total, 1), 1.0 / len(targets))
            out[name] = (w * torch.stack([t[name].double() for t in targets])).sum(0)
        return out
    sums: dict[str, list[float]] = {}
    for name, b in base.items():
        g = hand_group(name, granularity)
        row = sums.setdefault(g, [0.0] * len(targets))
        for j, t in enumerate(targets):
            row[j] += float(var(t[name].double() - b.double()).sum())
    out = {}
    for name in base:
        s = sums[hand_group(name, granularity)]
        w = [x / sum(s) for x in s] if sum(s) > 0 else [1 / len(s)] * len(s)
        out[name] = sum(wj * t[name].double() for wj, t in zip(w, targets, strict=True))
    return out


@pytest.mark.parametrize("granularity", ["model", "layer", "module", "matrix", "element"])
@pytest.mark.parametrize("measure", ["squared", "absolute"])
def test_varm_matches_hand_computation(family, tmp_path, granularity, measure):
    base, a, b = family
    cfg = simple_config("varm", base, [a, b], parameters={"granularity": granularity, "variation": measure})
    ours = load(merge(cfg, tmp_path / "out"))
    expected = hand_varm(load(base), [load(a), load(b)], granularity, measure)
    assert sorted(ours) == sorted(expected)
    for name, e in expected.items():
        torch.testing.assert_close(ours[name].double(), e, atol=1e-6, rtol=1e-6, msg=name)


def test_varm_is_not_a_uniform_average(family, tmp_path):
    """The released script's VaRM was a plain average; ours must weigh the more-moved target more."""
    base, a, b = family
    ours = load(merge(simple_config("varm", base, [a, b]), tmp_path / "out"))
    ta, tb = load(a), load(b)
    name = "model.layers.1.mlp.up_proj.weight"
    assert not torch.allclose(ours[name], (ta[name] + tb[name]) / 2, atol=1e-5)


def test_uniform_fallback_when_nothing_moved(family, tmp_path):
    base, a, b = family  # layers.0.input_layernorm is unchanged in both targets
    name = "model.layers.0.input_layernorm.weight"
    out = merge(simple_config("varm", base, [a, b]), tmp_path / "out", explain_weights=True)
    weights = json.loads((out / "explain" / "varm_weights.json").read_text())["weights"]
    assert weights[name] == [0.5, 0.5]
    assert weights["model.layers.1.mlp.up_proj.weight"] != [0.5, 0.5]
    assert (out / "explain" / "varm_weights.png").stat().st_size > 1000
    assert name in (out / "explain" / "varm_weights.csv").read_text()


def test_pure_functions_by_hand():
    pivot = torch.tensor([1.0, 2.0, 3.0])
    t1 = torch.tensor([1.0, 2.0, 4.0])  # Δ = (0, 0, 1): Σ Δ² = 1
    t2 = torch.tensor([3.0, 2.0, 3.0])  # Δ = (2, 0, 0): Σ Δ² = 4
    merged, w = varm_matrix(pivot, [t1, t2])
    assert w == pytest.approx([0.2, 0.8])
    torch.testing.assert_close(merged, 0.2 * t1 + 0.8 * t2)
    merged, _ = varm_element(pivot, [t1, t2])
    torch.testing.assert_close(merged, torch.tensor([3.0, 2.0, 4.0]))  # each entry from the target that moved
    assert weights_from_variations([0.0, 0.0, 0.0]) == [1 / 3] * 3
