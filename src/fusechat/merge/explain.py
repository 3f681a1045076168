"""Where each part of a VaRM merge comes from: weights per tensor as a table and a plot by layer and module.

VaRM gives each target a weight per parameter group from how far that target moved; seeing those weights by
layer and module tells a user which source's knowledge dominates which part of the fused model.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusechat.merge.params import layer_index


def module_label(name: str) -> str:
    """A tensor's name without layer prefix and `.weight`: `self_attn.q_proj`, `mlp.down_proj`, `lm_head`."""
    parts = name.split(".")
    index = layer_index(name)
    if index is not None:
        parts = parts[parts.index(str(index)) + 1 :]
    if parts and parts[-1] in ("weight", "bias"):
        parts = parts[:-1]
    return ".".join(parts) or name


def write_explanation(
    directory: Path, rows: Sequence[tuple[str, list[float]]], models: list[str], parameters: dict[str, Any]
) -> None:
    """Write varm_weights.csv, .json and .png (one heat map per target) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "varm_weights.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tensor", "layer", "module", *models])
        for name, weights in rows:
            index = layer_index(name)
            w.writerow([name, "" if index is None else index, module_label(name), *(f"{x:.6g}" for x in weights)])
    (directory / "varm_weights.json").write_text(
        json.dumps({"models": models, "parameters": parameters, "weights": dict(rows)}, indent=1) + "\n"
    )
    plot_weights(directory / "varm_weights.png", rows, models)


def plot_weights(path: Path, rows: Sequence[tuple[str, list[float]]], models: list[str]) -> None:
    """Heat maps (layers × modules) of each target's weight; tensors outside the layers form a row 'other'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    modules = sorted({module_label(n) for n, _ in rows})
    layers = sorted({i for n, _ in rows if (i := layer_index(n)) is not None})
    row_of = {layer: r for r, layer in enumerate(layers)}
    other = len(layers)
    grid = np.full((len(models), len(layers) + 1, len(modules)), np.nan)
    for name, weights in rows:
        index = layer_index(name)
        r = row_of[index] if index is not None else other
        grid[:, r, modules.index(module_label(name))] = weights
    fig, axes = plt.subplots(
        1,
        len(models),
        figsize=(1.2 + 0.45 * len(modules) * len(models), 1.5 + 0.22 * (len(layers) + 1)),
        squeeze=False,
    )
    for k, ax in enumerate(axes[0]):
        im = ax.imshow(grid[k], vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(Path(models[k]).name or models[k], fontsize=9)
        ax.set_xticks(range(len(modules)), modules, rotation=90, fontsize=7)
        ax.set_yticks(range(len(layers) + 1), [str(x) for x in layers] + ["other"], fontsize=7)
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes[0].tolist(), label="VaRM weight")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
