"""The report renders from synthetic scores: table layout, best marks, deltas, digits, claims, plots."""

from __future__ import annotations

import base64
import json
import math

import pytest

from fusechat.evaluate.compare import Margin, fmt, gains, kept_gains
from fusechat.evaluate.plots import varm_by_layer
from fusechat.evaluate.report import build_table, claims, varm_spread, write_report


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


def test_claims_are_in_words_and_marked_only_when_significant():
    lines = claims(SCORES, ROWS)
    # margins well inside two combined SE: no verdict either way
    assert "≈ t-gemma beats CLM only on bpb: -0.0100 (-0.7 combined SE)" in lines
    assert "≈ t-qwen beats CLM only on gsm: +0.0400 (+0.8 combined SE)" in lines
    assert "≈ VaRM beats Linear on bpb: +0.0150 (+1.1 combined SE)" in lines  # 0.015 / hypot(0.01, 0.01)
    sharp = {m: {t: {**r, "stderr": r["stderr"] / 20} for t, r in per.items()} for m, per in SCORES.items()}
    lines = claims(sharp, ROWS)
    assert any(x.startswith("✗ t-gemma beats CLM only on bpb: -0.01000 (-14.1 combined SE)") for x in lines)
    assert any(x.startswith("✓ t-qwen beats CLM only on bpb: +0.03000 (+42.4 combined SE)") for x in lines)


def test_numbers_carry_the_digits_their_errors_call_for():
    assert fmt(0.488123, 0.0123) == "0.488 ± 0.012"
    assert fmt(0.488123, 0.00045) == "0.48812 ± 0.00045"
    assert fmt(-0.00037, None, signed=True) == "-0.00037"  # never "-0.000"
    assert fmt(0.0, None, signed=True) == "+0.000"
    assert Margin(0.00012, 0.00003, "paired SE, n = 9").text() == "+0.000120 (+4.0 paired SE, n = 9)"
    assert Margin(0.01, 0.02, "combined SE").mark() == "≈" and Margin(0.1, math.nan, "x").mark() == "?"
    # significant but below the negligible floor: "=", in either direction; at or above it the usual marks
    assert Margin(-0.000002, 0.0000007, "p", floor=0.0002).mark() == "="
    assert Margin(0.0001, 0.00001, "p", floor=0.0002).mark() == "="
    assert Margin(0.0003, 0.0001, "p", floor=0.0002).mark() == "✓"


def test_claims_call_a_significant_but_tiny_difference_negligible():
    scores = {
        "pivot": {"code": _r("bits_per_byte", 0.52, 0.01)},
        "clm": {"code": _r("bits_per_byte", 0.50, 0.01)},  # fine-tuning's own change: 0.02, so the floor is 0.00002
        "varm": {"code": _r("bits_per_byte", 0.480001, 0.0000001)},
        "linear": {"code": _r("bits_per_byte", 0.480000, 0.0000001)},
        "ties": {"code": _r("bits_per_byte", 0.481, 0.0000001)},
    }
    rows = [
        {"model": "pivot", "group": "pivot"},
        {"model": "clm", "group": "clm"},
        {"model": "varm", "group": "merge", "method": "varm"},
        {"model": "linear", "group": "merge", "method": "linear"},
        {"model": "ties", "group": "merge", "method": "ties"},
    ]
    lines = claims(scores, rows)
    assert next(c for c in lines if "beats linear" in c).startswith("= varm beats linear on code: -0.000001")
    assert next(c for c in lines if "beats ties" in c).startswith("✓ varm beats ties on code: +0.000999")


def test_gains_are_per_seed_and_kept_shares_follow_the_significant_ones():
    scores, rows = {}, []
    for seed in (0, 1):
        tag = f"-s{seed}"
        for name, group, code, chat in (
            ("clm", "clm", 0.50, 0.50),
            ("pair-coder", "pairwise", 0.40, 0.50),
            ("varm", "merge", 0.45, 0.50),
        ):
            scores[name + tag] = {"code": _r("bits_per_byte", code, 0.001), "chat": _r("bits_per_byte", chat, 0.001)}
            rows.append({"model": name + tag, "group": group, "name": name, "seed": seed, "method": name})
    gained = gains(scores, rows)
    assert [round(m.gain, 6) for m in gained["pair-coder"]["code"]] == [0.1, 0.1]  # lower bits per byte = gain
    assert "clm" not in gained
    # the chat task, where the target gained nothing, has no share to report
    assert kept_gains(gained, rows) == [
        "pair-coder's gain on code (+0.1000 (+100.0 SE over 2 seeds)): kept by varm 50%"
    ]


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
    line = next(x for x in lines if x.startswith("✓ t-qwen beats CLM only on bpb"))
    assert Margin(-diff, se, "").text().split(" (")[0] in line and "paired SE, n = 40" in line
    assert any(x.startswith("≈ t-qwen beats CLM only on gsm: +0.0333") and "paired SE, n = 30" in x for x in lines)
    assert any("t-gemma beats CLM only on bpb" in x and "combined SE" in x for x in lines)  # no items: fallback
    # the table's difference from the baseline carries the paired error too
    _, body, _ = build_table(SCORES, ROWS, items_dir=tmp_path)
    assert f"({fmt(diff, se, signed=True)})" in next(b for b in body if b[0] == "t-qwen")[2]


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


def test_varm_spread_states_how_far_from_linear():
    weights = {f"m{i}": [0.5 + 0.012 * i, 0.5 - 0.012 * i] for i in range(11)}  # 0.500 ... 0.620, complement
    first, second = varm_spread(weights, ["t-qwen", "t-gemma"])
    assert first.startswith("t-qwen: median 0.560, quartiles 0.530–0.590, range 0.500–0.620 over 11 matrices")
    assert first.endswith("55% of them more than 0.05 from the linear average's 0.500")  # 0.560 ... 0.620
    assert second.startswith("t-gemma: median 0.440") and varm_spread({}, []) == []


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
        "target_quality": {
            "pair-qwen": {
                "candidates": {"pivot": 0.95, "qwen": 0.90},
                "fused": 0.88,
                "method": "mince",
                "gold_not_kept": {"pivot": 0.035, "qwen": 0.188, "fused": 0.065},
            }
        },
    }
    md_path = write_report(SCORES, ROWS, tmp_path / "report", extras)
    md = md_path.read_text()
    html = (tmp_path / "report" / "report.html").read_text()
    names = ("metrics.png", "gains.png", "loss_curves.png", "selection.png", "target_quality.png", "varm_weights.png")
    for name in names:
        png = tmp_path / "report" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"({name})" in md
        # the HTML page is self-contained: every plot embedded, none referred to beside it
        assert base64.b64encode(png.read_bytes()).decode() in html and f"src='{name}'" not in html
    assert (
        "| pair-qwen | pivot 0.9500, qwen 0.9000 | 0.8800 (mince) | qwen 0.9000 | -0.0200 | pivot 3.5%, qwen 18.8%, "
        "fused 6.5% |" in md
    )
    assert "| CLM only | pivot + CLM only (baseline) |" in md
    assert "- VaRM's per-matrix weights, t-qwen: median 0.410, quartiles 0.355–0.465" in md
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
    assert not any("-s0 beats" in x and "-s1" in x.split(" beats ")[1] for x in lines)  # never across seeds
    assert any(x.startswith("≈ t-qwen-s1 beats clm-s1 on bpb: +0.0100") for x in lines)
    summary = next(x for x in lines if x.startswith(("✓", "≈")) and " t-qwen beats clm on bpb: +0.0200" in x)
    assert summary.endswith("each seed: +0.0300 (+2.1 combined SE), +0.0100 (+0.7 combined SE)")
    assert "≈ varm beats linear on bpb: +0.0025 (+0.3 SE over 2 seeds); each seed:" in " ".join(lines)  # disagree


def test_terminal_table_shows_the_digits_of_each_error():
    from fusechat.evaluate.report_table import format_scores

    text = format_scores(
        {"m": {"bpb": _r("bits_per_byte", 0.488123, 0.00045)}, "n": {"bpb": _r("bits_per_byte", 1, 0.1)}}
    )
    assert "0.48812 ± 0.00045" in text and "1.000 ± 0.100" in text
