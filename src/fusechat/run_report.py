"""The report of a whole run: gathers scores, loss curves, MinCE selection shares and VaRM weights from the run
directory that `plan.py` lays out, and hands them to `report.write_report`.
"""

from __future__ import annotations

import json
from pathlib import Path

from fusechat.manifest import fingerprint, write_manifest
from fusechat.plan import target_names
from fusechat.recipe import Recipe


def report_rows(recipe: Recipe, work: Path) -> list[dict]:
    """The table's rows in the paper's order: sources, pivot, CLM-only, pairwise, Multi, merges (per seed)."""
    rows = [{"model": s.name, "group": "source", "label": f"source: {s.name}"} for s in recipe.sources]
    rows.append({"model": "pivot", "group": "pivot", "label": "pivot"})
    for seed in recipe.train.seeds:
        tag = f"-s{seed}"
        same = {"seed": seed}
        if recipe.train.clm_baseline:
            rows.append({"model": f"clm{tag}", "group": "clm", "label": f"CLM only{tag}", "name": "CLM only", **same})
        for t in target_names(recipe):
            group = "multi" if t == "multi" else "pairwise"
            rows.append({"model": f"{t}{tag}", "group": group, "label": f"{t}{tag}", "name": t, **same})
        for m in recipe.merge.methods:
            merged = {"model": f"{m.method}{tag}", "group": "merge", "label": f"{m.method}{tag}", "name": m.method}
            rows.append({**merged, "method": m.method, **same})
    return rows


def _selection(work: Path) -> dict[str, dict[str, float]]:
    shares = {}
    for manifest in sorted((work / "fuse").glob("*/manifest.json")):
        counts = json.loads(manifest.read_text()).get("selection", {}).get("conversations", {})
        total = sum(counts.values())
        if total:
            shares[manifest.parent.name] = {k: v / total for k, v in counts.items()}
    return shares


def write_run_report(recipe: Recipe, work: Path) -> Path:
    from fusechat.report import write_report

    scores = json.loads((work / "eval" / "scores.json").read_text())
    scores = scores.get("scores", scores)
    rows = [r for r in report_rows(recipe, work) if r["model"] in scores]
    extras: dict = {
        "title": f"fusechat run `{recipe.name}`",
        "settings": {
            "pivot": recipe.pivot,
            "sources": ", ".join(f"{s.name} ({s.model})" for s in recipe.sources),
            "fusion": recipe.fuse.method,
            "lambda": recipe.train.lam,
            "alignment": f"{recipe.align.alignment} / {recipe.align.vocab_map}",
            "seeds": recipe.train.seeds,
        },
        "loss_curves": {p.parent.name: str(p) for p in sorted((work / "train").glob("*/trainer_state.json"))},
        "selection_share": _selection(work),
        "items_dir": str(work / "eval"),
    }
    varm = sorted((work / "merge").glob("varm-*/explain/varm_weights.json"))
    if varm:
        data = json.loads(varm[0].read_text())
        extras["varm_weights"] = data["weights"]
        extras["varm_models"] = [Path(m).name for m in data["models"]]
    out = work / "report"
    report = write_report(scores, rows, out, extras)
    write_manifest(out, {"stage": "report", "fingerprint": fingerprint(scores)}, complete=True)
    return Path(report).parent
