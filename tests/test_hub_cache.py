"""Hub ids resolve as transformers resolves them: from the local Hugging Face cache, with the hub offline.

Each test runs the real command line in a fresh interpreter, since huggingface_hub reads HF_HUB_CACHE,
HF_HOME and HF_HUB_OFFLINE when it is imported: exactly what a user's shell gives it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.tiny_models import byte_bpe_tokenizer, hub_cache_layout, sample_chats, save_llama

SRC = str(Path(__file__).resolve().parents[1] / "src")


def fusechat(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        full.pop(key, None)
    full.update(env)
    return subprocess.run([sys.executable, "-m", "fusechat", *args], capture_output=True, text=True, env=full)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A hub cache holding two tiny Llama models of one family (same tokenizer), as `hf download` leaves them."""
    root = tmp_path_factory.mktemp("hub")
    tok = byte_bpe_tokenizer(400)
    snaps = {}
    for i, name in enumerate(("tiny-org/pivot", "tiny-org/other")):
        local = save_llama(root / "local" / name.split("/")[1], tok, seed=i)
        snaps[name] = hub_cache_layout(local, root / "home" / "hub", name)
    return root, snaps


def test_prepare_with_a_hub_id_from_the_cache(hub, tmp_path):
    root, snaps = hub
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": c}) + "\n" for c in sample_chats(4)))
    out = tmp_path / "prep"
    done = fusechat("prepare", str(chats), "--pivot", "tiny-org/pivot", "--out", str(out), HF_HOME=str(root / "home"))
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pivot"] == "tiny-org/pivot" and manifest["pivot_dir"] == str(snaps["tiny-org/pivot"])


def test_merge_config_with_hub_ids(hub, tmp_path):
    root, _ = hub
    config = tmp_path / "linear.yml"
    models = [{"model": m, "parameters": {"weight": 0.5}} for m in ("tiny-org/pivot", "tiny-org/other")]
    config.write_text(yaml.safe_dump({"merge_method": "linear", "models": models, "dtype": "float32"}))
    done = fusechat("merge", str(config), str(tmp_path / "out"), HF_HUB_CACHE=str(root / "home" / "hub"))
    assert done.returncode == 0, done.stderr
    from safetensors.torch import load_file

    merged = load_file(str(tmp_path / "out" / "model.safetensors"))
    a = load_file(str(root / "local" / "pivot" / "model.safetensors"))
    b = load_file(str(root / "local" / "other" / "model.safetensors"))
    name = "model.layers.0.mlp.up_proj.weight"
    assert (merged[name] - (a[name] + b[name]) / 2).abs().max() < 1e-6


def test_a_revision_and_a_model_not_in_the_cache(hub, tmp_path):
    root, snaps = hub
    commit = snaps["tiny-org/pivot"].name
    script = (
        "from fusechat.models.load import resolve_model_dir, load_model\n"
        f"print(resolve_model_dir('tiny-org/pivot@{commit}'))\n"
        "print(type(load_model('tiny-org/other')).__name__)\n"
    )
    env = dict(os.environ, PYTHONPATH=SRC, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(root / "home" / "hub"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(snaps["tiny-org/pivot"]), "LlamaForCausalLM"]

    chats = tmp_path / "c.jsonl"
    chats.write_text(json.dumps({"messages": sample_chats(1)[0]}) + "\n")
    missing = fusechat(
        "prepare", str(chats), "--pivot", "tiny-org/absent", "--out", str(tmp_path / "o"), HF_HOME=str(root / "home")
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    line = missing.stderr.strip()
    assert line.count("\n") == 0
    assert f"not in the Hugging Face cache {root / 'home' / 'hub'}" in line
    assert "hub is off" in line and "`hf download tiny-org/absent`" in line
    assert not (tmp_path / "o").exists()
