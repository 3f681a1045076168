"""`evaluate`: scores.json, per-item files, the cache (a second call loads no model), and early errors."""

from __future__ import annotations

import json
import os

import pytest

from fusechat.errors import FusechatError
from fusechat.evaluate import evaluate, suite
from fusechat.evaluate.cache import checkpoint_fingerprint


def _opts(tiny, tmp_path):
    return {
        "conversations": tiny["conv"],
        "limits": {"gsm": 2, "csqa": 3},
        "max_new_tokens": 6,
        "cache_dir": tmp_path / "cache",
        "progress": False,
    }


def test_scores_and_cache(tiny, tmp_path, monkeypatch):
    models = {"llama": tiny["llama"], "gpt2": tiny["gpt2"]}
    calls = []
    real_load = suite.load_for_eval
    monkeypatch.setattr(suite, "load_for_eval", lambda *a: calls.append(a[0]) or real_load(*a))
    scores = evaluate(models, "bpb,gsm,csqa", tmp_path / "out", **_opts(tiny, tmp_path))
    assert calls == ["llama", "gpt2"]  # each model loaded once for all its tasks
    assert set(scores) == {"llama", "gpt2"}
    for per_model in scores.values():
        assert per_model["bpb"]["metric"] == "bits_per_byte" and per_model["bpb"]["value"] > 0
        assert per_model["bpb"]["n"] == 10 and per_model["bpb"]["stderr"] > 0
        assert per_model["gsm"]["n"] == 2 and 0 <= per_model["gsm"]["value"] <= 1
        assert per_model["csqa"]["n"] == 3
    assert scores["llama"]["gsm"]["prompt_format"] == "chat_template"
    assert scores["gpt2"]["gsm"]["prompt_format"] == "plain"
    out = tmp_path / "out"
    assert json.loads((out / "scores.json").read_text()) == scores
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    assert len((out / "llama" / "gsm.jsonl").read_text().splitlines()) == 2

    # Second call, other output dir: everything from the cache, no model loaded, same numbers.
    calls.clear()
    monkeypatch.setattr(suite, "load_model", lambda *a, **k: pytest.fail("a cached evaluation loaded a model"))
    again = evaluate(models, "bpb,gsm,csqa", tmp_path / "out2", **_opts(tiny, tmp_path))
    assert calls == [] and again == scores

    # A changed setting recomputes only that task.
    monkeypatch.setattr(suite, "load_model", _real_load())
    opts = _opts(tiny, tmp_path) | {"limits": {"gsm": 3, "csqa": 3}}
    third = evaluate({"llama": tiny["llama"]}, "bpb,gsm,csqa", tmp_path / "out3", **opts)
    assert calls == ["llama"] and third["llama"]["gsm"]["n"] == 3
    assert third["llama"]["bpb"] == scores["llama"]["bpb"] and third["llama"]["csqa"] == scores["llama"]["csqa"]


def _real_load():
    from fusechat.models.load import load_model

    return load_model


def test_checkpoint_fingerprint_follows_the_weights(tiny, tmp_path):
    import shutil

    copy = shutil.copytree(tiny["llama"], tmp_path / "copy")
    fp = checkpoint_fingerprint(copy)
    assert checkpoint_fingerprint(copy) == fp
    (copy / "README.md").write_text("a model card does not change the model")
    assert checkpoint_fingerprint(copy) == fp
    config = json.loads((copy / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5
    (copy / "config.json").write_text(json.dumps(config))
    assert checkpoint_fingerprint(copy) != fp
    fp2 = checkpoint_fingerprint(copy, hash_weights=True)
    weights = copy / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert checkpoint_fingerprint(copy, hash_weights=True) == fp2  # content hash ignores the time


def test_errors_before_any_model_is_loaded(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "load_for_eval", lambda *a: pytest.fail("loaded a model before checking input"))
    with pytest.raises(FusechatError, match="unknown task 'bogus'"):
        evaluate({"m": tiny["llama"]}, "bpb,bogus", tmp_path / "o1", progress=False)
    with pytest.raises(FusechatError, match="--conversations"):
        evaluate({"m": tiny["llama"]}, "bpb", tmp_path / "o2", progress=False)
    with pytest.raises(FusechatError, match="no such model directory"):
        evaluate({"m": tmp_path / "missing"}, "gsm", tmp_path / "o3", progress=False)
    with pytest.raises(FusechatError, match="gsm_n"):
        evaluate({"m": tiny["llama"]}, "gsm", tmp_path / "o4", gsm_n=3)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()


def test_gsm_solution_bpb_equals_plain_computation(tiny, tmp_path):
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fusechat.evaluate.datasets import gsm_symbolic_problems
    from fusechat.evaluate.exact_match import math_prompt

    scores = evaluate(
        {"m": tiny["llama"]}, "gsm_bpb", tmp_path / "o", limits={"gsm_bpb": 3}, progress=False, cache_dir=tmp_path / "c"
    )["m"]["gsm_bpb"]
    tok = AutoTokenizer.from_pretrained(tiny["llama"])
    model = AutoModelForCausalLM.from_pretrained(tiny["llama"]).eval()
    bits = nbytes = 0.0
    for p in gsm_symbolic_problems(3):
        prompt = math_prompt(tok, p)
        text = prompt + p.solution
        enc = tok(text, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"][:512], enc["offset_mapping"][:512]  # the model's 512 positions
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        for t, (s, e) in enumerate(offsets):
            if t and e > len(prompt) and e > s:
                bits -= float(logp[t - 1, ids[t]]) / math.log(2)
        nbytes += len(text[len(prompt) : max(e for _, e in offsets)].encode())
    assert scores["n"] == 3 and scores["value"] == pytest.approx(bits / nbytes, rel=1e-5)


def test_code_bpb_scores_only_the_reference_body(tiny, tmp_path):
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fusechat.evaluate.datasets import humaneval_problems
    from fusechat.evaluate.prompts import render

    scores = evaluate(
        {"m": tiny["llama"]}, "code_bpb", tmp_path / "o", limits={"code_bpb": 64}, progress=False, cache_dir=tmp_path
    )["m"]["code_bpb"]
    tok = AutoTokenizer.from_pretrained(tiny["llama"])
    model = AutoModelForCausalLM.from_pretrained(tiny["llama"]).eval()
    bits = nbytes = 0.0
    for p in humaneval_problems("heldout"):  # the tiny model reads 512 tokens: only a few bodies start within
        user, reply = p.messages()
        text = render(tok, [user]) + reply["content"]
        start = text.rindex(p.solution)
        end = start + len(p.solution)
        enc = tok(text, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"][:512], enc["offset_mapping"][:512]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        for t, (s, e) in enumerate(offsets):
            if t and e > start and s < end and e > s:
                bits -= float(logp[t - 1, ids[t]]) / math.log(2)
        covered = min(end, max(e for _, e in offsets))
        nbytes += len(text[start:covered].encode())
    assert nbytes > 0 and scores["n"] == 64 and scores["value"] == pytest.approx(bits / nbytes, rel=1e-5)
