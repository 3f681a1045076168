"""The result page's plots (matplotlib, drawn to PNG): scores by model, gains over the CLM-only baseline per task,
training curves, MinCE's selection shares, fusion-target quality, and VaRM's weights by layer.

Each function takes plain numbers and a path, draws one figure, and returns the path (None when there is nothing
to draw), so the page decides what to show and the plots never read files of the run.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from fusechat.evaluate.compare import GROUPS, Margin, cell, combine, decimals, lower_is_better

GROUP_LABEL = {
    "source": "source",
    "pivot": "pivot",
    "clm": "pivot + CLM only (baseline)",
    "pairwise": "pairwise target",
    "multi": "Multi target",
    "merge": "merged",
}
GROUP_COLOR = {
    "source": "#9e9e9e",
    "pivot": "#616161",
    "clm": "#d62728",
    "pairwise": "#1f77b4",
    "multi": "#9467bd",
    "merge": "#2ca02c",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scores(scores: dict, rows: list[dict], tasks: list[str], path: Path) -> Path | None:
    plt = _pyplot()
    tasks = [t for t in tasks if any(cell(scores, r["model"], t) for r in rows)]
    if not tasks:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(4.0, 3.4 * len(tasks)), 3.8 + 0.12 * len(rows)), squeeze=False)
    for ax, t in zip(axes[0], tasks, strict=True):
        shown = [(r, c) for r in rows if (c := cell(scores, r["model"], t))]
        ys = range(len(shown))
        ax.barh(
            list(ys),
            [c[0] for _, c in shown],
            xerr=[0 if math.isnan(c[1]) else c[1] for _, c in shown],
            color=[GROUP_COLOR[r["group"]] for r, _ in shown],
            capsize=2,
        )
        ax.set_yticks(list(ys), [r.get("label", r["model"]) for r, _ in shown], fontsize=8)
        for y, (_, c) in zip(ys, shown, strict=True):
            end = c[0] + (0 if math.isnan(c[1]) else c[1])
            ax.annotate(
                f"{c[0]:.{decimals(c[1])}f}",
                (end, y),
                xytext=(3, 0),
                textcoords="offset points",
                fontsize=7,
                va="center",
            )
        ax.invert_yaxis()
        base = next((c for r, c in shown if r["group"] == "clm"), None)
        if base:
            ax.axvline(base[0], color=GROUP_COLOR["clm"], linestyle="--", linewidth=1)
        values = [c[0] for _, c in shown]
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.5 or abs(hi) * 0.05 or 0.05
        ax.set_xlim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
        arrow = "lower is better" if lower_is_better(scores, t) else "higher is better"
        ax.set_title(f"{t} ({arrow})", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        if ax is not axes[0][0]:
            ax.set_yticklabels([])
    handles = [plt.Rectangle((0, 0), 1, 1, color=GROUP_COLOR[g]) for g in GROUPS if any(r["group"] == g for r in rows)]
    labels = [GROUP_LABEL[g] for g in GROUPS if any(r["group"] == g for r in rows)]
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    fig.suptitle("Scores (error bars: ±1 standard error; dashed: CLM-only baseline)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * math.ceil(len(labels) / 3), 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_losses(curves: dict[str, str | Path], path: Path) -> Path | None:
    """Training curves: the total loss, or, when the trainer logged them, its CLM and fusion terms side by side
    (the CLM term is what the CLM-only baseline also minimises, so it is the fair curve to compare)."""
    plt = _pyplot()
    histories = {label: json.loads(Path(state).read_text()).get("log_history", []) for label, state in curves.items()}
    split = any("clm_loss" in h for hist in histories.values() for h in hist)
    panels = [("clm_loss", "CLM term (per token)"), ("fusion_loss", "fusion term (per token)")] if split else []
    panels = panels or [("loss", "training loss (λ·CLM + (1−λ)·fusion)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    drawn = 0
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        for label, history in histories.items():
            points = [(h["step"], h[key]) for h in history if key in h and "step" in h]
            evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
            if points:
                (line,) = ax.plot(*zip(*points, strict=True), label=label, linewidth=1.2)
                drawn += 1
                if evals and key == "loss":
                    ax.plot(*zip(*evals, strict=True), "o--", color=line.get_color(), label=f"{label} (eval)", ms=3)
        ax.set_xlabel("optimizer step")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if not drawn:
        plt.close(fig)
        return None
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_selection(shares: dict[str, dict[str, float]], path: Path) -> Path | None:
    plt = _pyplot()
    if not shares:
        return None
    candidates = list(dict.fromkeys(c for s in shares.values() for c in s))
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(shares) + 1.6))
    left = [0.0] * len(shares)
    for c in candidates:
        widths = [shares[t].get(c, 0.0) for t in shares]
        bars = ax.barh(list(shares), widths, left=left, label=c)
        for bar, w in zip(bars, widths, strict=True):
            if w >= 0.06:
                ax.text(
                    bar.get_x() + w / 2,
                    bar.get_y() + bar.get_height() / 2,
                    f"{w:.0%}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white",
                )
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("share of training sequences whose target distribution came from each model (MinCE)")
    ax.set_title("Which model's distribution MinCE picked", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def varm_by_layer(weights: dict[str, list[float]]) -> tuple[list[int], list[list[float]]]:
    """Mean VaRM weight of each model per transformer layer (tensors with a layer index in their name).

    `weights` is {tensor_name: [w_1..w_n]}; returns the sorted layer indices and, per layer, the n mean weights.
    """
    sums: dict[int, list[float]] = {}
    counts: dict[int, int] = {}
    for name, ws in weights.items():
        m = _LAYER.search(name)
        if not m:
            continue
        layer = int(m.group(1))
        acc = sums.setdefault(layer, [0.0] * len(ws))
        sums[layer] = [a + float(w) for a, w in zip(acc, ws, strict=True)]
        counts[layer] = counts.get(layer, 0) + 1
    layers = sorted(sums)
    return layers, [[v / counts[i] for v in sums[i]] for i in layers]


def plot_varm(weights: dict[str, list[float]], models: list[str], path: Path) -> Path | None:
    plt = _pyplot()
    layers, means = varm_by_layer(weights)
    if not layers:
        return None
    n = len(means[0])
    models = models if len(models) == n else [f"target {j + 1}" for j in range(n)]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for j in range(n):
        ax.plot(layers, [m[j] for m in means], marker="o", markersize=3, label=models[j])
    ax.axhline(1.0 / n, color="grey", linestyle=":", linewidth=1, label="uniform (linear average)")
    ax.set_xlabel("layer")
    ax.set_ylabel("mean VaRM weight of the layer's matrices")
    ax.set_ylim(0, 1)
    ax.set_title("VaRM merging weights by layer (weight ∝ mean squared change from the pivot)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_gains(gained: dict[str, dict[str, list[Margin]]], path: Path) -> Path | None:
    """Per task (domain), each trained or merged model's gain over its seed's CLM-only baseline (mean over seeds,
    in the better direction, error bars ±2 SE): what fusion added where, and what each merge kept of it."""
    plt = _pyplot()
    tasks = list(dict.fromkeys(t for per in gained.values() for t in per))
    models = list(gained)
    if not tasks or not models:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(4.0, 3.6 * len(tasks)), 1.6 + 0.32 * len(models)))
    axes = list(axes) if len(tasks) > 1 else [axes]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, t in zip(axes, tasks, strict=True):
        shown = [(m, combine(gained[m][t])) for m in models if t in gained[m]]
        ys = list(range(len(shown)))
        ax.barh(
            ys,
            [g.gain for _, g in shown],
            xerr=[2 * g.se if math.isfinite(g.se) else 0 for _, g in shown],
            color=[colors[models.index(m) % len(colors)] for m, _ in shown],
            capsize=2,
        )
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(ys, [m for m, _ in shown] if ax is axes[0] else [""] * len(ys), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(t, fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Gain over the CLM-only baseline (better direction; bars: ±2 SE; mean over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_target_quality(quality: dict[str, dict], path: Path) -> Path | None:
    """Per training target, the bits per byte of each candidate teacher on the training chats and of the fused
    target: MinCE's premise is that the fused target is below every single teacher."""
    plt = _pyplot()
    targets = [t for t, q in quality.items() if q.get("candidates")]
    if not targets:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 1.4 + 0.9 * len(targets)))
    y = 0.0
    ticks, labels = [], []
    for t in targets:
        q = quality[t]
        bars = [*q["candidates"].items()] + ([(f"fused ({q['method']})", q["fused"])] if q.get("fused") else [])
        for name, value in bars:
            fused = name.startswith("fused")
            ax.barh(y, value, color="#2ca02c" if fused else "#9e9e9e")
            ax.annotate(f"{value:.4f}", (value, y), xytext=(3, 0), textcoords="offset points", fontsize=7, va="center")
            ticks.append(y)
            labels.append(f"{t}: {name}")
            y += 1
        y += 0.6
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("bits per byte of the supervised text on the training chats (lower is better)")
    ax.set_title("Fusion-target quality, before any training", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
