"""The Python API: `from fusechat import prepare, teach, align, fuse, train, merge, evaluate, run`."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import fusechat
from tests.tiny_models import byte_bpe_tokenizer, sample_chats, save_llama

SRC = str(Path(__file__).resolve().parents[1] / "src")
FUNCTIONS = {
    "prepare": "fusechat.data.prepare",
    "teach": "fusechat.teacher.teach",
    "align": "fusechat.align.stage",
    "fuse": "fusechat.fuse.stage",
    "train": "fusechat.train.api",
    "merge": "fusechat.merge.engine",
    "evaluate": "fusechat.evaluate.suite",
    "run": "fusechat.run.api",
}


def test_import_fusechat_stays_light():
    heavy = ("torch", "transformers", "pyarrow", "numpy", "fusechat.train.api")
    code = f"import sys, fusechat; from fusechat import __version__; print([m for m in {heavy} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": SRC})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_each_name_is_its_stage_function(name):
    target = getattr(importlib.import_module(FUNCTIONS[name]), name)
    api = getattr(fusechat, name)
    assert callable(api) and name in fusechat.__all__ and name in dir(fusechat)
    assert inspect.signature(api) == inspect.signature(target)
    assert api is target or api.__wrapped__ is target  # six are packages that call their function
    exec(f"from fusechat import {name} as again", (scope := {}))
    assert scope["again"] is api


def test_a_stage_package_stays_callable_after_its_submodules_are_imported(tmp_path):
    import fusechat.train.api  # sets fusechat.train to the package: which must still train
    from fusechat import train
    from fusechat.errors import FusechatError

    assert train is sys.modules["fusechat.train"] and train.api.train is fusechat.train.api.train
    with pytest.raises(FusechatError, match="--lambda 2.0: input should be less than or equal to 1"):
        train("pivot", "targets", tmp_path / "out", lam=2.0)  # the call reaches the function's own checks
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fusechat.nope  # noqa: B018


def test_a_tiny_recipe_through_run(tmp_path, monkeypatch):
    """`fusechat.run(recipe)` runs every stage and returns the run directory; a second call redoes nothing."""
    monkeypatch.setenv("FUSECHAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pivot = save_llama(tmp_path / "pivot", byte_bpe_tokenizer(400), seed=0)
    source = save_llama(tmp_path / "src", byte_bpe_tokenizer(330), seed=2)
    chats = sample_chats(8)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats[:6]))
    (tmp_path / "held.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats[6:]))
    recipe = {
        "name": "api",
        "workdir": "run",
        "pivot": str(pivot),
        "sources": [{"name": "a", "model": str(source)}],
        "data": {
            "train": [{"kind": "file", "path": "train.jsonl"}],
            "heldout": [{"kind": "file", "path": "held.jsonl"}],
            "max_length": 128,
        },
        "teach": {"top_k": 4},
        "fuse": {"multi": False},
        "train": {"max_steps": 1, "batch_size": 2, "clm_baseline": False},
        "evaluate": {"suite": ["bpb"]},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    lines: list[str] = []
    run_dir = fusechat.run(path, echo=lines.append)
    assert run_dir == tmp_path / "run"
    scores = json.loads((run_dir / "eval" / "scores.json").read_text())
    assert {"pivot", "a", "pair-a-s0"} <= set(scores.get("scores", scores))
    assert (run_dir / "report" / "report.md").is_file()
    again: list[str] = []
    fusechat.run(path, echo=again.append)
    assert any(": running" in line for line in lines)
    assert again and all(": up to date" in line for line in again)


@pytest.mark.slow  # about 20 s: seven stages in a fresh interpreter
def test_the_documented_example_runs(tmp_path):
    """docs/api.md's stage-by-stage block, verbatim but for the step count, on tiny models laid out in a hub
    cache under the hub ids it names (the hub offline)."""
    import gzip
    import os

    from tests.tiny_models import hub_cache_layout

    doc = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    block = doc.split("## One fusion, stage by stage", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert "max_steps=100" in block
    block = block.replace("max_steps=100", "max_steps=2")
    hub = tmp_path / "hub"
    hub_cache_layout(
        save_llama(tmp_path / "p", byte_bpe_tokenizer(400), seed=0), hub, "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    hub_cache_layout(
        save_llama(tmp_path / "s", byte_bpe_tokenizer(330), seed=2), hub, "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    )
    chats = sample_chats(8)
    (tmp_path / "chats.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps({"messages": c}) + "\n" for c in chats[:6]).encode())
    )
    (tmp_path / "heldout.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats[6:]))
    (tmp_path / "example.py").write_text(block)
    env = dict(os.environ, PYTHONPATH=SRC, HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["FUSECHAT_CACHE"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.strip().splitlines()[-1]) > 0  # the merged model's bits per byte
    assert (tmp_path / "work" / "merged" / "model.safetensors").is_file()
