"""The result page: the paper's table (sources, pivot, CLM-only baseline, targets, merges) with plots, as MD and HTML.

A reader should understand the outcome from this page alone: each metric says what it measures and which way is
better, each cell carries its standard error and its difference from the CLM-only baseline, the best cell of a
column is marked, and the checks the paper's claim rests on (every fused target beats the baseline; VaRM is at
least as good as the other merges and the pairwise targets) are stated with their margins in standard errors.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any

from fusechat.evaluate.paired import paired_difference, read_items
from fusechat.manifest import atomic_write_bytes

GROUPS = ("source", "pivot", "clm", "pairwise", "multi", "merge")
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
LOWER_IS_BETTER = {"bits_per_byte"}
METRIC_TEXT = {
    "bpb": "held-out bits per byte of assistant turns (lower is better; comparable across tokenizers)",
    "gsm": "GSM-Symbolic exact match of the final number, greedy, zero-shot (higher is better)",
    "gsm_bpb": "bits per byte of GSM-Symbolic reference solutions after their question (lower is better)",
    "asdiv": "ASDiv exact match of the final number, greedy, zero-shot (higher is better)",
    "hhh": "BIG-bench hhh_alignment accuracy, option log-likelihood per byte (higher is better)",
    "boolq": "BoolQ accuracy, option log-likelihood per byte (higher is better)",
    "csqa": "CommonsenseQA accuracy, option log-likelihood per byte (higher is better)",
    "mtbench": "MT-Bench single-answer judge score 1-10 (higher is better)",
}


def _cell(scores: dict, model: str, task: str) -> tuple[float, float] | None:
    r = scores.get(model, {}).get(task)
    if r is None or (task == "mtbench" and not r.get("judged")):
        return None
    value, se = r.get("value"), r.get("stderr")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value), float(se) if se is not None else float("nan")


def _lower_better(scores: dict, task: str) -> bool:
    metrics = {m.get(task, {}).get("metric") for m in scores.values()}
    return bool(metrics & LOWER_IS_BETTER)


def _ordered(rows: list[dict]) -> list[dict]:
    for r in rows:
        if r.get("group") not in GROUPS:
            raise ValueError(f"report row {r}: 'group' must be one of {', '.join(GROUPS)}")
    return sorted(rows, key=lambda r: GROUPS.index(r["group"]))


def build_table(scores: dict, rows: list[dict]) -> tuple[list[str], list[list[str]], dict]:
    """Header and cells of the result table (text with `**` marking the best), and the raw numbers behind it."""
    rows = _ordered(rows)
    tasks = list(dict.fromkeys(t for r in rows for t in scores.get(r["model"], {})))
    base = next((r["model"] for r in rows if r["group"] == "clm"), None)
    best: dict[str, float] = {}
    for t in tasks:
        values = [c[0] for r in rows if (c := _cell(scores, r["model"], t))]
        if values:
            best[t] = min(values) if _lower_better(scores, t) else max(values)
    header = ["model", "role", *tasks]
    body = []
    for r in rows:
        line = [r.get("label", r["model"]), GROUP_LABEL[r["group"]]]
        for t in tasks:
            c = _cell(scores, r["model"], t)
            if c is None:
                n = scores.get(r["model"], {}).get(t, {}).get("n")
                line.append(f"{n} answered, not judged" if t == "mtbench" and n else "–")
                continue
            text = f"{c[0]:.3f}" + (f" ± {c[1]:.3f}" if not math.isnan(c[1]) else "")
            if c[0] == best.get(t):
                text = f"**{text}**"
            b = _cell(scores, base, t) if base else None
            if b is not None and r["model"] != base:
                text += f" ({c[0] - b[0]:+.3f})"
            line.append(text)
        body.append(line)
    return header, body, {"tasks": tasks, "baseline": base, "best": best}


def claims(scores: dict, rows: list[dict], items_dir: Path | None = None) -> list[str]:
    """The paper's ordering, checked metric by metric, each margin with its standard error.

    Rows carrying a `seed` are compared within their seed (each target against the CLM-only baseline of the same
    seed; VaRM against the other merges and targets of that seed), and each comparison present in every seed is
    then summarised across seeds (mean, and every seed's margin: the spread that training noise gives).
    With `items_dir` (an evaluation output: ITEMS_DIR/MODEL/TASK.jsonl), the error is the paired one over the
    items both models scored, which is what can tell two fine-tunes of one pivot apart; otherwise (or where the
    items cannot be paired) it is the two rows' errors combined, a much looser bound.
    """
    rows = _ordered(rows)
    tasks = list(dict.fromkeys(t for r in rows for t in scores.get(r["model"], {})))
    seeds = list(dict.fromkeys(r.get("seed") for r in rows if r["group"] in ("clm", "pairwise", "multi", "merge")))
    lines: list[str] = []
    margins: dict[tuple[str, str, str], list[float]] = {}

    def compare(a: dict, b: dict, t: str) -> str | None:
        ca, cb = _cell(scores, a["model"], t), _cell(scores, b["model"], t)
        if ca is None or cb is None:
            return None
        sign = -1.0 if _lower_better(scores, t) else 1.0
        gain, se, kind = sign * (ca[0] - cb[0]), math.hypot(ca[1], cb[1]), "combined SE"
        if items_dir is not None:
            pair = paired_difference(
                read_items(items_dir / a["model"] / f"{t}.jsonl"), read_items(items_dir / b["model"] / f"{t}.jsonl")
            )
            if pair is not None:
                gain, se, kind = sign * pair[0], pair[1], f"paired SE, n = {pair[2]}"
        margins.setdefault((a.get("name", a["model"]), b.get("name", b["model"]), t), []).append(gain)
        z = f", {gain / se:+.1f} {kind}" if se and not math.isnan(se) else ""
        mark = "✓" if gain >= 0 else "✗"
        return f"{mark} {a.get('label', a['model'])} vs {b.get('label', b['model'])} on {t}: {gain:+.4f}{z}"

    for seed in seeds:
        group = [r for r in rows if r.get("seed") == seed]
        base = next((r for r in group if r["group"] == "clm"), None)
        fused = [r for r in group if r["group"] in ("pairwise", "multi")]
        merges = [r for r in group if r["group"] == "merge"]
        varm = next((r for r in merges if "varm" in (r.get("method") or r["model"]).lower()), None)
        for t in tasks:
            if base:
                lines += [c for r in fused if (c := compare(r, base, t))]
            if varm:
                lines += [c for r in merges + fused if r is not varm and (c := compare(varm, r, t))]
    if len(seeds) > 1:
        lines.append(f"Across the {len(seeds)} seeds (mean margin; each seed's margin):")
        for (a, b, t), gains in margins.items():
            if len(gains) == len(seeds):
                mean = sum(gains) / len(gains)
                mark = "✓" if all(g >= 0 for g in gains) else ("✗" if all(g < 0 for g in gains) else "±")
                each = ", ".join(f"{g:+.4f}" for g in gains)
                lines.append(f"{mark} {a} vs {b} on {t}: {mean:+.4f} ({each})")
    return lines


def _plot_bars(scores: dict, rows: list[dict], tasks: list[str], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in tasks if any(_cell(scores, r["model"], t) for r in rows)]
    if not tasks:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(4.0, 3.4 * len(tasks)), 3.8 + 0.12 * len(rows)), squeeze=False)
    for ax, t in zip(axes[0], tasks, strict=True):
        shown = [(r, c) for r in rows if (c := _cell(scores, r["model"], t))]
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
            ax.annotate(f"{c[0]:.3f}", (end, y), xytext=(3, 0), textcoords="offset points", fontsize=7, va="center")
        ax.invert_yaxis()
        base = next((c for r, c in shown if r["group"] == "clm"), None)
        if base:
            ax.axvline(base[0], color=GROUP_COLOR["clm"], linestyle="--", linewidth=1)
        values = [c[0] for _, c in shown]
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.5 or abs(hi) * 0.05 or 0.05
        ax.set_xlim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
        arrow = "lower is better" if _lower_better(scores, t) else "higher is better"
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


def _plot_losses(curves: dict[str, str | Path], path: Path) -> Path | None:
    """Training curves: the total loss, or, when the trainer logged them, its CLM and fusion terms side by side
    (the CLM term is what the CLM-only baseline also minimises, so it is the fair curve to compare)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def _plot_selection(shares: dict[str, dict[str, float]], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def _plot_varm(weights: dict[str, list[float]], models: list[str], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def write_report(scores: dict, rows: list[dict], out: Path, extras: dict | None = None) -> Path:
    """Write report.md, report.html and PNG plots into `out`; return the path of report.md.

    `rows`: [{"model": key in scores, "group": source|pivot|clm|pairwise|multi|merge, "label"?, "method"?}].
    `extras` (all optional): "title"; "notes" (markdown paragraph); "settings" (dict shown as a list);
    "loss_curves" {label: trainer_state.json path}; "selection_share" {target: {model: share}};
    "varm_weights" {tensor: [w..]} or a JSON path, with "varm_models" [names in weight order];
    "items_dir": the evaluation directory holding MODEL/TASK.jsonl, for paired errors in the ordering check.
    """
    extras = extras or {}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header, body, info = build_table(scores, rows)
    plots: list[tuple[str, Path]] = []
    p = _plot_bars(scores, _ordered(rows), info["tasks"], out / "metrics.png")
    if p:
        plots.append(("Scores by model", p))
    if extras.get("loss_curves") and (p := _plot_losses(extras["loss_curves"], out / "loss_curves.png")):
        plots.append(("Training loss curves", p))
    if extras.get("selection_share") and (p := _plot_selection(extras["selection_share"], out / "selection.png")):
        plots.append(("MinCE selection share", p))
    weights = extras.get("varm_weights")
    if isinstance(weights, str | Path):
        weights = json.loads(Path(weights).read_text())
    if weights and (p := _plot_varm(weights, list(extras.get("varm_models", [])), out / "varm_weights.png")):
        plots.append(("VaRM weights by layer", p))
    items_dir = extras.get("items_dir")
    checks = claims(scores, rows, Path(items_dir) if items_dir else None)
    md = _markdown(extras, header, body, info, checks, plots, scores, rows)
    atomic_write_bytes(out / "report.md", md.encode())
    atomic_write_bytes(out / "report.html", _html(extras, header, body, info, checks, plots, scores, rows).encode())
    return out / "report.md"


def _metric_lines(info: dict, scores: dict, rows: list[dict]) -> list[str]:
    lines = []
    for t in info["tasks"]:
        ns = {scores[r["model"]][t].get("n") for r in rows if t in scores.get(r["model"], {})}
        n = "/".join(str(x) for x in sorted(x for x in ns if x is not None))
        lines.append(f"{t}: {METRIC_TEXT.get(t, t)}; n = {n}")
    return lines


def _markdown(extras, header, body, info, checks, plots, scores, rows) -> str:
    title = extras.get("title", "FuseChat result")
    parts = [f"# {title}", ""]
    if extras.get("notes"):
        parts += [extras["notes"], ""]
    parts += [
        "Each cell: value ± standard error, then (in brackets) the difference from the CLM-only baseline. "
        "**Bold**: best in its column.",
        "",
    ]
    parts.append("| " + " | ".join(header) + " |")
    parts.append("|" + "|".join("---" for _ in header) + "|")
    parts += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in body]
    parts += ["", "## Metrics", ""] + [f"- {m}" for m in _metric_lines(info, scores, rows)]
    if checks:
        parts += ["", "## Does the paper's ordering hold here?", ""]
        parts += [
            "Margins are in the higher-is-better direction, each with its standard error: paired over the items both "
            "models scored where the per-item results are at hand, else the two rows' errors combined.",
            "",
        ] + [f"- {c}" for c in checks]
    if extras.get("settings"):
        parts += ["", "## Settings", ""] + [f"- {k}: {v}" for k, v in extras["settings"].items()]
    for caption, path in plots:
        parts += ["", f"## {caption}", "", f"![{caption}]({path.name})"]
    return "\n".join(parts) + "\n"


def _html(extras, header, body, info, checks, plots, scores, rows) -> str:
    def cell(text: str) -> str:
        bold = text.startswith("**")
        text = html.escape(text.replace("**", ""))
        return f"<td><b>{text}</b></td>" if bold else f"<td>{text}</td>"

    title = html.escape(extras.get("title", "FuseChat result"))
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{title}</title><style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}</style></head><body>",
        f"<h1>{title}</h1>",
    ]
    if extras.get("notes"):
        out.append(f"<p>{html.escape(extras['notes'])}</p>")
    out.append(
        "<p>Each cell: value ± standard error, then the difference from the CLM-only baseline. "
        "<b>Bold</b>: best in its column.</p><table><tr>"
    )
    out += [f"<th>{html.escape(h)}</th>" for h in header] + ["</tr>"]
    out += ["<tr>" + "".join(cell(c) for c in line) + "</tr>" for line in body]
    out.append("</table><h2>Metrics</h2><ul>")
    out += [f"<li>{html.escape(m)}</li>" for m in _metric_lines(info, scores, rows)] + ["</ul>"]
    if checks:
        out.append("<h2>Does the paper's ordering hold here?</h2><ul>")
        out += [f"<li>{html.escape(c)}</li>" for c in checks] + ["</ul>"]
    if extras.get("settings"):
        out.append("<h2>Settings</h2><ul>")
        out += [f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in extras["settings"].items()]
        out.append("</ul>")
    for caption, path in plots:
        out.append(f"<h2>{html.escape(caption)}</h2><img src='{html.escape(path.name)}' alt='{html.escape(caption)}'>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


__all__: list[Any] = ["write_report", "build_table", "claims", "varm_by_layer"]
