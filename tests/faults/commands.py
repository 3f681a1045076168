"""The shortest real command line of each stage, writing `out` from the fault suite's shared inputs (`world`,
conftest.py); keyword arguments replace an input (a damaged copy) or a setting. stages.py puts them in its table.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from tests.faults.common import fusechat
from tests.tiny_models import sample_chats

STEPS = 24  # the train stage's steps: a checkpoint every other step, so a kill resumes from a recent one


def _chats(path: Path, chats: list) -> Path:
    if not path.is_file():
        path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats))
    return path


def write_recipe(directory: Path, world: dict, workdir: str = "run") -> Path:
    """A whole tiny recipe in `directory` (its data beside it, named by relative paths): two sources, held-out
    data, a short training, one merge and bpb."""
    chats = sample_chats(14)
    _chats(directory / "train.jsonl", chats[:10])
    _chats(directory / "heldout.jsonl", chats[10:])
    recipe = {
        "name": "faults",
        "workdir": workdir,
        "pivot": str(world["pivot"]),
        "sources": [{"name": "a", "model": str(world["source"])}, {"name": "b", "model": str(world["pivot"])}],
        "data": {
            "train": [{"kind": "file", "path": "train.jsonl"}],
            "heldout": [{"kind": "file", "path": "heldout.jsonl"}],
            "max_length": 256,
        },
        "teach": {"top_k": 4},
        "train": {"lambda": 0.9, "max_steps": 3, "batch_size": 2, "learning_rate": 1e-3},
        "merge": {"methods": [{"method": "linear"}]},
        "evaluate": {"suite": ["bpb"]},
    }
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def merge_config(path: Path, base: Path, models: list[Path]) -> Path:
    body = {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [{"model": str(m), "parameters": {"weight": 0.5, "density": 0.5}} for m in models],
        "dtype": "float32",
    }
    path.write_text(yaml.safe_dump(body))
    return path


def prepare_command(w: dict, out: Path, data: Path | None = None, max_length: int = 256) -> list[str]:
    data = data or _chats(w["root"] / "chats-24.jsonl", sample_chats(24))
    return fusechat("prepare", data, "--pivot", w["pivot"], "--out", out, "--max-length", max_length)


def teach_command(w: dict, out: Path, conversations: Path | None = None, model: Path | None = None, top_k: int = 4):
    return fusechat(
        "teach", "--model", model or w["pivot"], "--conversations", conversations or w["conv"], "--out", out,
        "--top-k", top_k, "--shard-rows", 4, "--batch-tokens", 64, "--no-progress",
    )  # fmt: skip


def align_command(w: dict, out: Path, pivot_store: Path | None = None, vocab_map: str = "exact") -> list[str]:
    pivot = pivot_store or w["pivot_store"]
    return fusechat("align", "--pivot-store", pivot, "--source-store", w["source_store"], "--out", out,
                    "--vocab-map", vocab_map)  # fmt: skip


def fuse_command(w: dict, out: Path, aligned: Path | None = None, method: str = "mince") -> list[str]:
    aligned = aligned or w["aligned"]
    return fusechat("fuse", "--pivot-store", w["pivot_store"], "--aligned", aligned, "--out", out, "--method", method)


def train_command(w: dict, out: Path, targets: Path | None = None, seed: int = 0) -> list[str]:
    return fusechat(
        "train", "--pivot", w["pivot"], "--targets", targets or w["fused"], "--out", out, "--max-steps", STEPS,
        "--batch-size", 2, "--save-steps", 2, "--seed", seed, "--lr", "1e-3", "--report-to", "none",
        "--max-length", 256,
    )  # fmt: skip


def merge_command(w: dict, out: Path, config: Path | None = None) -> list[str]:
    if config is None:
        base, *models = w["merge_inputs"]
        config = merge_config(w["root"] / "ties.yml", base, models)
    return fusechat("merge", config, out, "--max-shard-size", "2e6")


def evaluate_command(w: dict, out: Path, models: str | None = None) -> list[str]:
    return fusechat("evaluate", models or f"p={w['pivot']}", "--suite", "bpb", "--conversations", w["conv"],
                    "--out", out, "--no-progress")  # fmt: skip


def run_command(w: dict, out: Path) -> list[str]:
    """`run` of a recipe whose workdir is `out` (absolute), the recipe kept apart from it in the world."""
    place = w["root"] / "recipes" / hashlib.sha256(str(out).encode()).hexdigest()[:16]
    place.mkdir(parents=True, exist_ok=True)
    return fusechat("run", write_recipe(place, w, workdir=str(out)))
