"""The shipped demo recipe, shrunk to its smallest size, run through `fusechat run` on the real models.

Everything but the sizes comes from `demo.yaml` itself (models, data kinds, fusion, λ, merges, evaluation suite),
so a change that breaks the demo on real checkpoints and tokenizers fails here in minutes, not after half an hour.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.real

SRC = str(Path(__file__).resolve().parents[1] / "src")


def smallest_demo(path: Path) -> dict:
    recipe = yaml.safe_load((importlib.resources.files("fusechat") / "recipes" / "demo.yaml").read_text())
    for source in recipe["data"]["train"]:
        source["limit"] = 4
    for source in recipe["data"]["heldout"]:
        source["limit"] = 4
    recipe["train"] |= {"max_steps": 2, "seeds": [0]}
    recipe["evaluate"]["limit"] = 3
    recipe["workdir"] = "run"
    path.write_text(yaml.safe_dump(recipe))
    return recipe


def test_demo_recipe_at_its_smallest_size_on_the_real_models(tmp_path):
    recipe = smallest_demo(tmp_path / "demo.yaml")
    env = dict(os.environ, PYTHONPATH=SRC)
    cmd = [sys.executable, "-m", "fusechat", "run", str(tmp_path / "demo.yaml")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    run = tmp_path / "run"
    scores = json.loads((run / "eval" / "scores.json").read_text())
    scores = scores.get("scores", scores)
    merges = {f"{m['method']}-s0" for m in recipe["merge"]["methods"]}
    expected = {"pivot", "qwen", "gemma", "clm-s0", "pair-qwen-s0", "pair-gemma-s0", "multi-s0"} | merges
    assert expected <= set(scores)
    for model in expected:
        for task in recipe["evaluate"]["suite"]:
            assert 0.05 < scores[model][task]["value"] < 5, (model, task, scores[model][task])
    # Real sources score the same held-out bytes: the bigger coder model is not worse than the 135M pivot.
    assert scores["qwen"]["gsm_bpb"]["value"] < scores["pivot"]["gsm_bpb"]["value"]
    report = (run / "report" / "report.md").read_text()
    assert "varm-s0" in report and "paired SE" in report
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    status = subprocess.run([*cmd[:3], "status", cmd[-1]], capture_output=True, text=True, env=env, timeout=600)
    assert status.returncode == 0, status.stderr
    assert not any(w in status.stdout for w in ("stale", "partial", "todo", "missing")), status.stdout
