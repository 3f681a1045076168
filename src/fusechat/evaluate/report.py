"""The result page: the paper's table (sources, pivot, CLM-only baseline, targets, merges) with plots, as Markdown
and as one self-contained HTML file.

A reader should understand the outcome from this page alone: each metric says what it measures and which way is
better, each cell carries its standard error and its difference from its seed's CLM-only baseline (with the
paired error of that difference), digits follow the errors, the best cell of a column is marked, and the claims
the paper rests on are stated in words with their margins in standard errors, marked only where significant.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from fusechat.evaluate import plots
from fusechat.evaluate.compare import (
    NEGLIGIBLE,
    Comparer,
    Z,
    baselines,
    cell,
    claims,
    fmt,
    gains,
    kept_gains,
    lower_is_better,
    ordered,
    tasks_of,
)
from fusechat.evaluate.plots import GROUP_LABEL
from fusechat.evaluate.tasks import TASKS
from fusechat.manifest import atomic_write_bytes

CLAIMS_TEXT = (
    f"Each line tests one claim of the paper: a fused target beats the CLM-only baseline of its seed; VaRM beats "
    f"each other merge and each fused target. Margins are in the better direction, with their standard error: "
    f"paired over the items both models scored where the per-item results are at hand, else the two rows' errors "
    f"combined. ✓: the claim holds by at least {Z:g} SE; ✗: the reverse holds by at least {Z:g} SE; "
    f"≈: within {Z:g} SE, this evaluation cannot tell them apart; =: beyond {Z:g} SE but smaller than "
    f"{NEGLIGIBLE:.1%} of what fine-tuning itself changed on that task (CLM-only against the pivot): too small "
    f"to matter."
)

KEPT_HEADING = "How much of each target's gain the merges keep, and VaRM's weights"


def build_table(
    scores: dict, rows: list[dict], items_dir: Path | None = None
) -> tuple[list[str], list[list[str]], dict]:
    """Header and cells of the result table (text with `**` marking the best), and the raw numbers behind it.

    A cell: value ± SE, then in brackets the difference from the same seed's CLM-only baseline (± its paired SE
    when `items_dir` holds both models' per-item results).
    """
    rows = ordered(rows)
    tasks = tasks_of(scores, rows)
    base = baselines(rows)
    comparer = Comparer(scores, items_dir)
    best: dict[str, float] = {}
    for t in tasks:
        values = [c[0] for r in rows if (c := cell(scores, r["model"], t))]
        if values:
            best[t] = min(values) if lower_is_better(scores, t) else max(values)
    header = ["model", "role", *tasks]
    body = []
    for r in rows:
        line = [r.get("label", r["model"]), GROUP_LABEL[r["group"]]]
        b = base.get(r.get("seed"), base.get(None))
        for t in tasks:
            c = cell(scores, r["model"], t)
            if c is None:
                n = scores.get(r["model"], {}).get(t, {}).get("n")
                line.append(f"{n} answered, not judged" if t == "mtbench" and n else "–")
                continue
            text = fmt(c[0], c[1])
            if c[0] == best.get(t):
                text = f"**{text}**"
            diff = comparer.raw(r["model"], b, t) if b and r["model"] != b else None
            if diff is not None:
                text += f" ({fmt(diff[0], diff[1] if diff[2].startswith('paired') else None, signed=True)})"
            line.append(text)
        body.append(line)
    return header, body, {"tasks": tasks, "baseline": base.get(None), "best": best}


def target_quality_table(quality: dict[str, dict]) -> list[str]:
    """Markdown rows: per training target, each candidate's and the fused target's bits per byte."""
    columns = ["candidates (bits per byte)", "fused", "best single teacher", "fused − best", "gold token given 0"]
    lines = ["| target | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for t, q in quality.items():
        cands = q.get("candidates") or {}
        if not cands:
            continue
        best_name = min(cands, key=cands.get)
        fused = q.get("fused")
        each = ", ".join(f"{n} {v:.4f}" for n, v in cands.items())
        delta = f"{fused - cands[best_name]:+.4f}" if fused is not None else "–"
        fused_text = f"{fused:.4f} ({q.get('method')})" if fused is not None else "–"
        missed = q.get("gold_not_kept") or {}
        missed_text = ", ".join(f"{n} {v:.1%}" for n, v in missed.items()) or "–"
        lines.append(f"| {t} | {each} | {fused_text} | {best_name} {cands[best_name]:.4f} | {delta} | {missed_text} |")
    return lines


def varm_spread(weights: dict[str, list[float]], models: list[str]) -> list[str]:
    """One line per merged target: the spread of its VaRM weight over the merged matrices (linear averaging gives
    every matrix 1/n), so a reader sees whether VaRM differed from plain averaging at all."""
    rows = np.array([w for w in weights.values() if w], dtype=np.float64)
    if rows.ndim != 2 or not len(rows):
        return []
    n = rows.shape[1]
    names = models if len(models) == n else [f"target {j + 1}" for j in range(n)]
    lines = []
    for j, name in enumerate(names):
        lo, q1, med, q3, hi = np.percentile(rows[:, j], [0, 25, 50, 75, 100])
        far = float(np.mean(np.abs(rows[:, j] - 1.0 / n) > 0.05))
        lines.append(
            f"{name}: median {med:.3f}, quartiles {q1:.3f}–{q3:.3f}, range {lo:.3f}–{hi:.3f} over {len(rows)} "
            f"matrices; {far:.0%} of them more than 0.05 from the linear average's {1.0 / n:.3f}"
        )
    return lines


def write_report(scores: dict, rows: list[dict], out: Path, extras: dict | None = None) -> Path:
    """Write report.md, report.html and PNG plots into `out`; return the path of report.md.

    `rows`: [{"model": key in scores, "group": source|pivot|clm|pairwise|multi|merge, "label"?, "method"?}].
    `extras` (all optional): "title"; "notes" (markdown paragraph); "settings" (dict shown as a list);
    "loss_curves" {label: trainer_state.json path}; "selection_share" {target: {model: share}};
    "varm_weights" {tensor: [w..]} or a JSON path, with "varm_models" [names in weight order];
    "items_dir": the evaluation directory holding MODEL/TASK.jsonl, for paired errors;
    "target_quality" {target: {"candidates": {name: bits per byte}, "fused": bits per byte, "method": name,
    "gold_not_kept"?: {name or "fused": share of positions}}}.
    """
    extras = extras or {}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items_dir = Path(extras["items_dir"]) if extras.get("items_dir") else None
    header, body, info = build_table(scores, rows, items_dir)
    gained = gains(scores, rows, items_dir)
    shown: list[tuple[str, Path]] = []
    if p := plots.plot_scores(scores, ordered(rows), info["tasks"], out / "metrics.png"):
        shown.append(("Scores by model", p))
    if gained and (p := plots.plot_gains(gained, out / "gains.png")):
        shown.append(("Gains over the CLM-only baseline, per task", p))
    if extras.get("loss_curves") and (p := plots.plot_losses(extras["loss_curves"], out / "loss_curves.png")):
        shown.append(("Training loss curves", p))
    if extras.get("selection_share") and (p := plots.plot_selection(extras["selection_share"], out / "selection.png")):
        shown.append(("MinCE selection share", p))
    if extras.get("target_quality") and (
        p := plots.plot_target_quality(extras["target_quality"], out / "target_quality.png")
    ):
        shown.append(("Fusion-target quality", p))
    weights = extras.get("varm_weights")
    if isinstance(weights, str | Path):
        weights = json.loads(Path(weights).read_text())
    if weights and (p := plots.plot_varm(weights, list(extras.get("varm_models", [])), out / "varm_weights.png")):
        shown.append(("VaRM weights by layer", p))
    checks = claims(scores, rows, items_dir)
    kept = kept_gains(gained, rows)
    if weights and (spread := varm_spread(weights, list(extras.get("varm_models", [])))):
        kept += ["VaRM's per-matrix weights, " + line for line in spread]
    plots_ = shown
    md = _markdown(extras, header, body, info, checks, kept, plots_, scores, rows)
    atomic_write_bytes(out / "report.md", md.encode())
    atomic_write_bytes(
        out / "report.html", _html(extras, header, body, info, checks, kept, plots_, scores, rows).encode()
    )
    return out / "report.md"


def _metric_lines(info: dict, scores: dict, rows: list[dict]) -> list[str]:
    lines = []
    for t in info["tasks"]:
        ns = {scores[r["model"]][t].get("n") for r in rows if t in scores.get(r["model"], {})}
        n = "/".join(str(x) for x in sorted(x for x in ns if x is not None))
        lines.append(f"{t}: {TASKS[t].description if t in TASKS else t}; n = {n}")
    return lines


def _markdown(extras, header, body, info, checks, kept, plots, scores, rows) -> str:
    title = extras.get("title", "FuseChat result")
    parts = [f"# {title}", ""]
    if extras.get("notes"):
        parts += [extras["notes"], ""]
    parts += [
        "Each cell: value ± standard error, then (in brackets) the difference from the same seed's CLM-only "
        "baseline, ± its paired standard error where per-item results are at hand. **Bold**: best in its column.",
        "",
    ]
    parts.append("| " + " | ".join(header) + " |")
    parts.append("|" + "|".join("---" for _ in header) + "|")
    parts += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in body]
    parts += ["", "## Metrics", ""] + [f"- {m}" for m in _metric_lines(info, scores, rows)]
    if checks:
        parts += ["", "## Does the paper's ordering hold here?", ""]
        parts += [CLAIMS_TEXT, ""] + [f"- {c}" for c in checks]
    if kept:
        parts += ["", f"## {KEPT_HEADING}", ""] + [f"- {k}" for k in kept]
    if extras.get("target_quality"):
        parts += ["", "## Fusion-target quality on the training chats", ""]
        parts += [
            "Bits per byte of the supervised text, before any training: each candidate teacher, and the fused "
            "target its fusion function builds (MinCE's premise: below every single teacher). Last column: the "
            "share of supervised positions where each distribution gives the pivot's gold token no mass (not kept "
            "in its top-k, or no aligned source token); there the fusion term trains away from the text.",
            "",
            *target_quality_table(extras["target_quality"]),
        ]
    if extras.get("settings"):
        parts += ["", "## Settings", ""] + [f"- {k}: {v}" for k, v in extras["settings"].items()]
    for caption, path in plots:
        parts += ["", f"## {caption}", "", f"![{caption}]({path.name})"]
    return "\n".join(parts) + "\n"


def _html(extras, header, body, info, checks, kept, plots, scores, rows) -> str:
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
        "<p>Each cell: value ± standard error, then the difference from the same seed's CLM-only baseline, ± its "
        "paired standard error where per-item results are at hand. <b>Bold</b>: best in its column.</p><table><tr>"
    )
    out += [f"<th>{html.escape(h)}</th>" for h in header] + ["</tr>"]
    out += ["<tr>" + "".join(cell(c) for c in line) + "</tr>" for line in body]
    out.append("</table><h2>Metrics</h2><ul>")
    out += [f"<li>{html.escape(m)}</li>" for m in _metric_lines(info, scores, rows)] + ["</ul>"]
    if checks:
        out.append(f"<h2>Does the paper's ordering hold here?</h2><p>{html.escape(CLAIMS_TEXT)}</p><ul>")
        out += [f"<li>{html.escape(c)}</li>" for c in checks] + ["</ul>"]
    if kept:
        out.append(f"<h2>{html.escape(KEPT_HEADING)}</h2><ul>")
        out += [f"<li>{html.escape(k)}</li>" for k in kept] + ["</ul>"]
    if extras.get("target_quality"):
        out.append("<h2>Fusion-target quality on the training chats</h2><table>")
        for i, line in enumerate(target_quality_table(extras["target_quality"])):
            if i == 1:
                continue  # the Markdown rule line
            tag = "th" if i == 0 else "td"
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            out.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
        out.append("</table>")
    if extras.get("settings"):
        out.append("<h2>Settings</h2><ul>")
        out += [f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in extras["settings"].items()]
        out.append("</ul>")
    for caption, path in plots:  # embedded, so the page is one file that can be mailed or uploaded alone
        data = base64.b64encode(path.read_bytes()).decode()
        out.append(
            f"<h2>{html.escape(caption)}</h2><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
        )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


__all__ = ["write_report", "build_table", "claims", "target_quality_table", "varm_spread"]
