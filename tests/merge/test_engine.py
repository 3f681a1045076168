"""The streaming engine: equal to whole-model merging, shards in and out, tied embeddings, DARE's seed,
the files a checkpoint needs, and every bad input refused before anything is written."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file

from fusechat.errors import FusechatError
from fusechat.merge import merge, simple_config
from fusechat.merge.methods.sparsify import tensor_key
from fusechat.merge.methods.task_arithmetic import Sparsify, task_arithmetic
from tests.merge.checkpoints import llama_config, load_weights, make_family, write_checkpoint


def whole_model_ties(base, a, b, sparsify=Sparsify.MAGNITUDE, seed=0):
    """The reference: whole state dicts in memory, the method applied tensor by tensor."""
    tb, ta, tt = load_weights(base), load_weights(a), load_weights(b)
    out = {}
    for name in tb:
        gens = [tensor_key(seed, name, i) for i in range(2)] if sparsify is Sparsify.RANDOM else None
        out[name] = task_arithmetic(
            tb[name],
            [ta[name], tt[name]],
            [0.6, 0.4],
            densities=[0.5, 0.7],
            sparsify=sparsify,
            sign_election=True,
            normalize=sparsify is Sparsify.MAGNITUDE,
            rescale=sparsify is Sparsify.RANDOM,
            keys=gens,
        )
    return out


def ties_config(base, a, b, method="ties"):
    return simple_config(method, base, [a, b], weights=[0.6, 0.4], densities=[0.5, 0.7])


@pytest.mark.parametrize("method,sparsify", [("ties", Sparsify.MAGNITUDE), ("dare_ties", Sparsify.RANDOM)])
def test_streaming_equals_whole_model(tmp_path, method, sparsify):
    base, a, b = make_family(tmp_path / "in", seed=11, shards=(2, 3, 1))  # sharded inputs
    out = merge(ties_config(base, a, b, method), tmp_path / "out", max_shard_bytes=8_000, seed=5)
    files = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(files) > 1 and (out / "model.safetensors.index.json").is_file()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    ours = load_weights(out)
    assert set(index["weight_map"]) == set(ours)
    expected = whole_model_ties(base, a, b, sparsify, seed=5)
    assert sorted(ours) == sorted(expected)
    for name in expected:
        assert torch.equal(ours[name], expected[name]), name


def test_output_loads_in_transformers_with_files_and_card(tmp_path):
    from transformers import AutoModelForCausalLM

    base, a, b = make_family(tmp_path / "in", seed=2)
    (base / "generation_config.json").write_text('{"max_new_tokens": 7}')
    (base / "tokenizer.json").write_text("{}")
    (base / "chat_template.jinja").write_text("{{ messages }}")
    out = merge(simple_config("varm", base, [a, b], dtype="bfloat16"), tmp_path / "out")
    for f in (
        "generation_config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "README.md",
        "manifest.json",
    ):
        assert (out / f).is_file(), f
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    card = (out / "README.md").read_text()
    # inputs by name, never by this machine's paths (the config as given is in mergekit_config.yml beside it)
    assert "merge_method: varm" in card and f"- model: {a.name}" in card and str(a) not in card
    assert "# out" in card.splitlines()
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    model = AutoModelForCausalLM.from_pretrained(out)
    merged = load_weights(out)
    assert torch.equal(model.model.layers[1].mlp.up_proj.weight, merged["model.layers.1.mlp.up_proj.weight"])
    assert not list(tmp_path.glob(".out.partial*"))


def test_manifest_checksums_match_the_files_written(tmp_path):
    """Shards are hashed as they are written, not read back: the manifest must still equal the files' bytes."""
    base, a, b = make_family(tmp_path, seed=5)
    out = merge(simple_config("linear", None, [a, b], weights=[1, 2]), tmp_path / "out", max_shard_bytes=5_000)
    files = json.loads((out / "manifest.json").read_text())["files"]
    on_disk = sorted(p.name for p in out.iterdir() if p.suffix == ".safetensors" or p.name.endswith(".index.json"))
    assert len(on_disk) > 3 and sorted(files) == on_disk
    for name, entry in files.items():
        data = (out / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name


def test_tied_embeddings(tmp_path):
    base, a, b = make_family(tmp_path / "tied", config=llama_config(tie=True), seed=4)
    out = merge(simple_config("linear", None, [a, b], weights=[1, 1]), tmp_path / "out")
    merged = load_weights(out)
    assert "lm_head.weight" not in merged  # the output stays tied
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True

    # an untied base merged with a tied target: the target's lm_head is its embeddings
    ubase, ua, _ = make_family(tmp_path / "untied", seed=4)
    tensors = load_weights(ua)
    tensors.pop("lm_head.weight")
    tied = write_checkpoint(tmp_path / "tied_a", llama_config(tie=True), tensors)
    out = merge(simple_config("linear", None, [ubase, tied], weights=[1, 1]), tmp_path / "out2")
    merged, tb = load_weights(out), load_weights(ubase)
    expected = (tb["lm_head.weight"] + tensors["model.embed_tokens.weight"]) / 2
    torch.testing.assert_close(merged["lm_head.weight"], expected)


def test_dare_is_reproducible_with_a_seed(tmp_path):
    base, a, b = make_family(tmp_path / "in", seed=9)
    cfg = simple_config("dare_linear", base, [a, b], weights=[1, 1], densities=[0.3, 0.3])
    one, two, other = (load_weights(merge(cfg, tmp_path / n, seed=s)) for n, s in (("o1", 1), ("o2", 1), ("o3", 2)))
    name = "model.layers.2.mlp.down_proj.weight"
    assert all(torch.equal(one[n], two[n]) for n in one)
    assert not torch.equal(one[name], other[name])


def test_dare_statistics():
    g = tensor_key(0, "w", 0)
    base = torch.zeros(200_000)
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(1))
    out = task_arithmetic(base, [x], [1.0], densities=[0.3], sparsify=Sparsify.RANDOM, rescale=True, keys=[g])
    kept = float((out != 0).float().mean())
    assert abs(kept - 0.3) < 0.005
    assert float(out.abs().sum()) == pytest.approx(float(x.abs().sum()), rel=1e-5)  # L1 preserved


# ---- bad input: one clear error, nothing written ----


def assert_refused(tmp_path, config, match, **kw):
    with pytest.raises(FusechatError, match=match):
        merge(config, tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial*"))


def test_refuses_different_architectures(tmp_path):
    base, a, _ = make_family(tmp_path / "in", seed=1)
    cfg = json.loads((a / "config.json").read_text())
    (a / "config.json").write_text(
        json.dumps({**cfg, "model_type": "mistral", "architectures": ["MistralForCausalLM"]})
    )
    assert_refused(tmp_path, simple_config("ties", base, [a], weights=[1], densities=[0.5]), "model_type")


def test_refuses_different_shapes_and_vocabularies(tmp_path):
    base, _, _ = make_family(tmp_path / "in", seed=1)
    wide, _, _ = make_family(tmp_path / "wide", config=llama_config(intermediate=48), seed=1)
    assert_refused(tmp_path, simple_config("linear", None, [base, wide], weights=[1, 1]), "differ in architecture")
    vocab, _, _ = make_family(tmp_path / "vocab", config=llama_config(vocab=80), seed=1)
    assert_refused(tmp_path, simple_config("linear", None, [base, vocab], weights=[1, 1]), "vocabularies differ")


def test_refuses_missing_tensor(tmp_path):
    base, a, _ = make_family(tmp_path / "in", seed=1)
    tensors = load_weights(a)
    tensors.pop("model.layers.1.mlp.up_proj.weight")
    (a / "model.safetensors").unlink()
    save_file(tensors, str(a / "model.safetensors"))
    assert_refused(
        tmp_path, simple_config("linear", None, [base, a], weights=[1, 1]), "has no tensor model.layers.1.mlp"
    )


def test_refuses_bad_parameters(tmp_path):
    base, a, b = make_family(tmp_path / "in", seed=1)
    with pytest.raises(FusechatError, match="weights: 1 values for 2 models"):
        simple_config("ties", base, [a, b], weights=[1])
    with pytest.raises(FusechatError, match=r"models\[1\].parameters.density: must be in \(0, 1\], got 1.5"):
        simple_config("ties", base, [a, b], weights=[1, 1], densities=[0.5, 1.5])
    with pytest.raises(FusechatError, match=r"models\[0\].parameters.density: must be in \(0, 1\], got 0"):
        simple_config("dare_ties", base, [a, b], weights=[1, 1], densities=[0, 0.5])


def test_refuses_pickle_unless_allowed(tmp_path):
    base, a, _ = make_family(tmp_path / "in", seed=1)
    tensors = load_weights(a)
    (a / "model.safetensors").unlink()
    torch.save(tensors, a / "pytorch_model.bin")
    cfg = simple_config("linear", None, [base, a], weights=[1, 1])
    assert_refused(tmp_path, cfg, "pickled")
    merged = load_weights(merge(cfg, tmp_path / "out", allow_pickle=True))
    tb = load_weights(base)
    torch.testing.assert_close(
        merged["model.norm.weight"], (tb["model.norm.weight"] + tensors["model.norm.weight"]) / 2
    )


def test_refuses_existing_output_and_skips_a_finished_one(tmp_path):
    base, a, b = make_family(tmp_path / "in", seed=1)
    cfg = simple_config("varm", base, [a, b])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FusechatError, match="already exists"):
        merge(cfg, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    done = merge(cfg, tmp_path / "done")
    stamp = (done / "manifest.json").stat().st_mtime_ns
    assert merge(cfg, done, exist_ok=True) == done  # same config and inputs: already merged
    assert (done / "manifest.json").stat().st_mtime_ns == stamp
