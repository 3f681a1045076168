"""The report renders from synthetic scores: table layout, best marks, deltas, claims, plots."""

from __future__ import annotations

import json
import math

import pytest

from fusechat.evaluate.report import build_table, claims, varm_by_layer, write_report


def _r(metric, value, se, n=100, **extra):
    return {"metric": metric, "value": value, "stderr": se, "n": n, **extra}


SCORES = {
    "qwen": {"bpb": _r("bits_per_byte", 0.90, 0.01), "gsm": _r("exact_match", 0.30, 0.05)},
    "gemma": {"bpb": _r("bits_per_byte", 1.10, 0.01), "gsm": _r("exact_match", 0.02, 0.01)},
    "smol": {"bpb": _r("bits_per_byte", 1.00, 0.01), "gsm": _r("exact_match", 0.10, 0.03)},
    "clm": {"bpb": _r("bits_per_byte", 0.98, 0.01), "gsm": _r("exact_match", 0.12, 0.03)},
    "t-qwen": {"bpb": _r("bits_per_byte", 0.95, 0.01), "gsm": _r("exact_match", 0.16, 0.04)},
    "t-gemma": {"bpb": _r("bits_per_byte", 0.99, 0.01), "gsm": _r("exact_match", 0.11, 0.03)},
    "multi": {"bpb": _r("bits_per_byte", 0.96, 0.01), "gsm": _r("exact_match", 0.14, 0.03)},
    "linear": {"bpb": _r("bits_per_byte", 0.955, 0.01), "gsm": _r("exact_match", 0.15, 0.03)},
    "varm": {
        "bpb": _r("bits_per_byte", 0.94, 0.01),
        "gsm": _r("exact_match", 0.17, 0.04),
        "mtbench": _r("answered", 80.0, math.nan, 80, judged=False),
    },
}
ROWS = [
    {"model": "varm", "group": "merge", "label": "VaRM", "method": "varm"},
    {"model": "qwen", "group": "source"},
    {"model": "gemma", "group": "source"},
    {"model": "smol", "group": "pivot"},
    {"model": "clm", "group": "clm", "label": "CLM only"},
    {"model": "t-qwen", "group": "pairwise"},
    {"model": "t-gemma", "group": "pairwise"},
    {"model": "multi", "group": "multi"},
    {"model": "linear", "group": "merge", "label": "Linear"},
]


def test_table_layout_best_and_deltas():
    header, body, info = build_table(SCORES, ROWS)
    assert header == ["model", "role", "bpb", "gsm", "mtbench"]
    assert [b[0] for b in body] == ["qwen", "gemma", "smol", "CLM only", "t-qwen", "t-gemma", "multi", "VaRM", "Linear"]
    by = {b[0]: b for b in body}
    assert by["qwen"][2].startswith("**0.900")  # lowest bits per byte is best
    assert by["qwen"][3].startswith("**0.300")  # highest exact match is best
    assert "(-0.030)" in by["t-qwen"][2] and "(+0.040)" in by["t-qwen"][3]
    assert "(" not in by["CLM only"][2]  # no delta against itself
    assert by["VaRM"][4] == "80 answered, not judged" and by["qwen"][4] == "–"


def test_claims_name_the_failures():
    lines = claims(SCORES, ROWS)
    assert any(line.startswith("✗ t-gemma vs CLM only on bpb") for line in lines)
    assert any(line.startswith("✓ t-qwen vs CLM only on gsm: +0.0400") for line in lines)
    assert any(line.startswith("✓ VaRM vs Linear on bpb: +0.0150") for line in lines)
    z = next(line for line in lines if line.startswith("✓ VaRM vs Linear on bpb"))
    assert "+1.1 combined SE" in z  # 0.015 / hypot(0.01, 0.01): no per-item results given


def _items(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_paired_errors_come_from_per_item_differences(tmp_path):
    """The paired error equals a plain delta-method computation on the per-item differences, and is far smaller
    than the rows' errors combined when two models move together item by item."""
    import random

    from fusechat.evaluate.paired import paired_difference, read_items

    rng = random.Random(0)
    nbytes = [rng.randint(100, 2000) for _ in range(40)]
    clm = [b * rng.uniform(0.3, 0.9) for b in nbytes]  # nats, very different per item
    fused = [x - b * rng.uniform(0.0, 0.01) for x, b in zip(clm, nbytes, strict=True)]  # a little better everywhere
    _items(
        tmp_path / "clm" / "bpb.jsonl",
        [{"id": f"c{i}", "nll_nats": x, "n_bytes": b} for i, (x, b) in enumerate(zip(clm, nbytes, strict=True))],
    )
    _items(
        tmp_path / "t-qwen" / "bpb.jsonl",
        [{"id": f"c{i}", "nll_nats": x, "n_bytes": b} for i, (x, b) in enumerate(zip(fused, nbytes, strict=True))],
    )
    diff, se, n = paired_difference(
        read_items(tmp_path / "t-qwen" / "bpb.jsonl"), read_items(tmp_path / "clm" / "bpb.jsonl")
    )
    d = [(f - c) / math.log(2) for f, c in zip(fused, clm, strict=True)]
    ratio = sum(d) / sum(nbytes)
    ref_se = math.sqrt(sum((di - ratio * b) ** 2 for di, b in zip(d, nbytes, strict=True)) / (40 * 39)) / (
        sum(nbytes) / 40
    )
    assert n == 40 and diff == pytest.approx(ratio) and se == pytest.approx(ref_se) and diff < 0
    _items(tmp_path / "clm" / "gsm.jsonl", [{"id": i, "correct": i % 3 == 0} for i in range(30)])
    _items(tmp_path / "t-qwen" / "gsm.jsonl", [{"id": i, "correct": i % 3 == 0 or i == 1} for i in range(30)])
    g = paired_difference(read_items(tmp_path / "t-qwen" / "gsm.jsonl"), read_items(tmp_path / "clm" / "gsm.jsonl"))
    assert g[0] == pytest.approx(1 / 30) and g[2] == 30
    lines = claims(SCORES, ROWS, items_dir=tmp_path)
    line = next(x for x in lines if x.startswith("✓ t-qwen vs CLM only on bpb"))
    assert f"{-ratio:+.4f}" in line and "paired SE, n = 40" in line
    assert any(x.startswith("✓ t-qwen vs CLM only on gsm: +0.0333") and "paired SE, n = 30" in x for x in lines)
    assert any("t-gemma vs CLM only on bpb" in x and "combined SE" in x for x in lines)  # no items: fallback


def test_varm_by_layer():
    weights = {
        "model.layers.0.self_attn.q_proj.weight": [0.2, 0.8],
        "model.layers.0.mlp.up_proj.weight": [0.4, 0.6],
        "model.layers.1.mlp.up_proj.weight": [0.5, 0.5],
        "model.embed_tokens.weight": [0.9, 0.1],
    }
    layers, means = varm_by_layer(weights)
    assert layers == [0, 1]
    assert means[0] == pytest.approx([0.3, 0.7]) and means[1] == pytest.approx([0.5, 0.5])


def test_write_report_renders_everything(tmp_path):
    state = tmp_path / "trainer_state.json"
    history = [{"step": s, "loss": 2.0 / (1 + s / 10)} for s in range(1, 40, 3)] + [{"step": 39, "eval_loss": 1.5}]
    state.write_text(json.dumps({"log_history": history}))
    weights = tmp_path / "varm.json"
    weights.write_text(
        json.dumps({f"model.layers.{i}.mlp.up_proj.weight": [0.3 + 0.02 * i, 0.7 - 0.02 * i] for i in range(12)})
    )
    extras = {
        "title": "Demo",
        "notes": "Synthetic numbers.",
        "loss_curves": {"t-qwen": state, "clm": state},
        "selection_share": {"t-qwen": {"pivot": 0.45, "qwen": 0.55}, "t-gemma": {"pivot": 0.7, "gemma": 0.3}},
        "varm_weights": weights,
        "varm_models": ["t-qwen", "t-gemma"],
        "settings": {"seed": 1},
    }
    md_path = write_report(SCORES, ROWS, tmp_path / "report", extras)
    md = md_path.read_text()
    html = (tmp_path / "report" / "report.html").read_text()
    for name in ("metrics.png", "loss_curves.png", "selection.png", "varm_weights.png"):
        png = tmp_path / "report" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"({name})" in md and f"src='{name}'" in html
    assert "| CLM only | pivot + CLM only (baseline) |" in md
    assert "<b>0.900 ± 0.010 (-0.080)</b>" in html and "Does the paper's ordering hold here?" in md


def test_unknown_group_is_refused(tmp_path):
    with pytest.raises(ValueError, match="group"):
        write_report(SCORES, [{"model": "qwen", "group": "teacher"}], tmp_path)


def test_claims_compare_within_a_seed_and_summarise_across_seeds():
    scores, rows = {}, []
    for seed, (clm, tq, varm, lin) in enumerate([(0.98, 0.95, 0.94, 0.955), (0.97, 0.96, 0.95, 0.94)]):
        tag = f"-s{seed}"
        for name, group, value in (("clm", "clm", clm), ("t-qwen", "pairwise", tq), ("varm", "merge", varm)):
            scores[name + tag] = {"bpb": _r("bits_per_byte", value, 0.01)}
            rows.append({"model": name + tag, "group": group, "label": name + tag, "name": name, "seed": seed})
        scores["linear" + tag] = {"bpb": _r("bits_per_byte", lin, 0.01)}
        rows.append({"model": "linear" + tag, "group": "merge", "name": "linear", "seed": seed, "method": "linear"})
    lines = claims(scores, rows)
    assert not any("-s0 vs" in x and "-s1" in x.split(" vs ")[1] for x in lines)  # never across seeds
    assert any(x.startswith("✓ t-qwen-s1 vs clm-s1 on bpb: +0.0100") for x in lines)
    assert "✓ t-qwen vs clm on bpb: +0.0200 (+0.0300, +0.0100)" in lines
    assert "± varm vs linear on bpb: +0.0025 (+0.0150, -0.0100)" in lines  # the seeds disagree
