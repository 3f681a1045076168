"""The report of a whole run: gathers scores, loss curves, MinCE selection shares and VaRM weights from the
paths the plan gives it, and hands them to `evaluate.report.write_report`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fusechat.manifest import (
    clear_output,
    fingerprint,
    locked,
    prepare_output_dir,
    settings_check,
    write_manifest,
)

STAGE = "report"


@dataclass
class ReportInputs:
    """What the report reads, every path named by the plan (the report never lays out the run directory itself)."""

    title: str
    settings: dict
    rows: list[dict]  # the table's rows in the paper's order (see `plan.report_rows`)
    scores: Path  # the evaluation's scores.json
    fuse: dict[str, Path]  # target name -> its fuse output (its manifest holds MinCE's selection counts)
    train: dict[str, Path]  # run label -> its checkpoint directory (trainer_state.json holds the loss curve)
    varm_explain: Path | None  # the first seed's VaRM merge explanation, when VaRM is among the merges


def _from_fuse(fuse: dict[str, Path]) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
    """MinCE's selection shares and the fusion-target quality, per target, from the fuse manifests."""
    shares, quality = {}, {}
    for name, out in sorted(fuse.items()):
        manifest = out / "manifest.json"
        if not manifest.is_file():
            continue
        body = json.loads(manifest.read_text())
        counts = body.get("selection", {}).get("conversations", {})
        total = sum(counts.values())
        if total:
            shares[name] = {k: v / total for k, v in counts.items()}
        if bits := body.get("bits_per_byte"):
            quality[name] = {"candidates": bits["candidates"], "fused": bits.get("fused"), "method": body["method"]}
            if missed := body.get("gold_not_kept"):
                n = max(missed["positions"], 1)
                quality[name]["gold_not_kept"] = {
                    **{k: v / n for k, v in missed["candidates"].items()},
                    "fused": missed["fused"] / n,
                }
    return shares, quality


def write_run_report(inputs: ReportInputs, out: Path) -> Path:
    from fusechat.evaluate.report import write_report

    scores = json.loads(inputs.scores.read_text())
    scores = scores.get("scores", scores)
    rows = [r for r in inputs.rows if r["model"] in scores]
    shares, quality = _from_fuse(inputs.fuse)
    extras: dict = {
        "title": inputs.title,
        "settings": inputs.settings,
        "loss_curves": {
            label: str(d / "trainer_state.json")
            for label, d in sorted(inputs.train.items())
            if (d / "trainer_state.json").is_file()
        },
        "selection_share": shares,
        "target_quality": quality,
        "items_dir": str(inputs.scores.parent),
    }
    weights = inputs.varm_explain / "varm_weights.json" if inputs.varm_explain else None
    if weights is not None and weights.is_file():
        data = json.loads(weights.read_text())
        extras["varm_weights"] = data["weights"]
        extras["varm_models"] = [Path(m).name for m in data["models"]]
    fp = fingerprint(scores)
    out = prepare_output_dir(out, STAGE)  # never into a folder of the user's own
    with locked(out):
        # The page is cheap and only the run writes it: an older page of this run is replaced, not refused.
        if settings_check(out, STAGE, fp, overwrite=True) == "replace":
            clear_output(out)
        write_manifest(out, {"stage": STAGE, "fingerprint": fp}, complete=False)
        report = write_report(scores, rows, out, extras)
        write_manifest(out, {"stage": STAGE, "fingerprint": fp}, complete=True)
    return Path(report).parent
