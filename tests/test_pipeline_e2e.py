"""The whole recipe on tiny models through `fusechat run`: every stage, the report, and a no-op rerun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.tiny_models import byte_bpe_tokenizer, metaspace_tokenizer, sample_chats, save_gpt2, save_llama

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_run_recipe_end_to_end(tmp_path):
    pivot = save_llama(tmp_path / "pivot", byte_bpe_tokenizer(400), seed=0)
    src_a = save_gpt2(tmp_path / "src-a", metaspace_tokenizer(300), seed=1)
    src_b = save_llama(tmp_path / "src-b", byte_bpe_tokenizer(330), seed=2)
    chats = sample_chats(16)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats[:12]))
    (tmp_path / "heldout.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats[12:]))
    recipe = {
        "name": "tiny",
        "workdir": "run",
        "pivot": str(pivot),
        "sources": [{"name": "a", "model": str(src_a)}, {"name": "b", "model": str(src_b)}],
        "data": {
            "train": [{"kind": "file", "path": "train.jsonl"}],
            "heldout": [{"kind": "file", "path": "heldout.jsonl"}],
            "max_length": 256,
        },
        "teach": {"top_k": 4},
        "train": {"lambda": 0.9, "max_steps": 2, "batch_size": 2, "learning_rate": 1e-3},
        "merge": {
            "methods": [
                {"method": "varm"},
                {"method": "linear"},
                {"method": "slerp", "parameters": {"t": 0.5}},
                {"method": "ties", "weights": [0.5, 0.5], "density": 0.5},
            ]
        },
        "evaluate": {"suite": ["bpb"]},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = dict(os.environ, PYTHONPATH=SRC, FUSECHAT_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "fusechat", "run", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    run = tmp_path / "run"
    scores = json.loads((run / "eval" / "scores.json").read_text())
    scores = scores.get("scores", scores)
    expected = {"pivot", "a", "b", "clm-s0", "pair-a-s0", "pair-b-s0", "multi-s0"}
    expected |= {"varm-s0", "linear-s0", "slerp-s0", "ties-s0"}
    assert expected <= set(scores)
    report = (run / "report" / "report.md").read_text()
    assert "CLM" in report and "varm" in report
    assert (run / "merge" / "varm-s0" / "explain" / "varm_weights.json").is_file()
    # Nothing changed: a rerun does no work.
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("up to date") == len([line for line in again.stdout.splitlines() if "] " in line])
