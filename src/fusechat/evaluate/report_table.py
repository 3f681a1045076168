"""A plain-text table of scores.json for the terminal (the full report with plots is `fusechat.evaluate.report`)."""

from __future__ import annotations

from fusechat.evaluate.compare import fmt


def format_scores(scores: dict[str, dict]) -> str:
    """One row per model, one column per task: value ± stderr (n)."""
    tasks = list(dict.fromkeys(t for per_model in scores.values() for t in per_model))
    header = ["model", *tasks]
    rows = [header]
    for model, per_model in scores.items():
        row = [model]
        for t in tasks:
            r = per_model.get(t)
            if r is None:
                row.append("-")
            elif t == "mtbench" and not r.get("judged"):
                row.append(f"{r['n']} answered")
            else:
                se = r.get("stderr")
                row.append(fmt(r["value"], se if isinstance(se, float) else None))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
