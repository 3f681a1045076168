"""`fusechat train` end to end on a tiny Llama-style pivot, and its refusals of bad input before compute."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from fusechat.errors import FusechatError
from fusechat.store.format import TopKStore
from fusechat.train.api import train
from fusechat.train.data import FusionCollator, TargetsDataset
from fusechat.train.head import final_hidden, head_of
from fusechat.train.loss import fusion_loss
from tests.train.helpers import CLI, cli_env, make_model, make_targets, make_tokenizer, read_json

FAST = ["--max-steps", "4", "--batch-size", "4", "--lr", "3e-3", "--warmup", "0", "--logging-steps", "1"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "train", *args], env=cli_env(), capture_output=True, text=True, timeout=300)


def dataset_loss(model_dir, targets, lam=0.0) -> float:
    """Mean fusion loss of a checkpoint over the whole target set (one batch)."""
    from fusechat.models.load import load_model

    model = load_model(model_dir).eval()
    ds = TargetsDataset(TopKStore(targets))
    batch = FusionCollator()([ds[i] for i in range(len(ds))])
    sup = batch["labels"][:, 1:] != -100
    with torch.no_grad():
        hidden = final_hidden(model, batch)[:, :-1][sup]
        gold = batch["labels"][:, 1:][sup]
        parts = fusion_loss(hidden, head_of(model), gold, batch["target_ids"], batch["target_logprobs"], lam=lam)
    return float(parts.loss)


def test_train_end_to_end_through_the_cli(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "target"
    r = run_cli("--pivot", str(tiny["pivot"]), "--targets", str(tiny["targets"]), "--out", str(out), *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    m = read_json(out / "manifest.json")
    assert m["complete"] is True and m["stage"] == "train" and m["steps"] == 4 and m["lambda"] == 0.9
    assert m["nonfinite_batches_skipped"] == 0
    assert not (out / "checkpoints").exists() and not list(out.glob("*.bin"))
    card = (out / "README.md").read_text()
    for fact in (
        "base_model:",
        str(tiny["pivot"]),
        "tiny-source",
        "| λ | 0.9 |",
        "| steps / epochs | 4 /",
        "mince",
    ):
        assert fact in card
    model = AutoModelForCausalLM.from_pretrained(out)  # loads as is: a plain Hugging Face directory
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and (out / "generation_config.json").is_file()
    assert any(
        model.state_dict()[k].ne(v).any()
        for k, v in AutoModelForCausalLM.from_pretrained(tiny["pivot"]).state_dict().items()
    )
    # the training objective went down
    assert dataset_loss(out, tiny["targets"], 0.9) < dataset_loss(tiny["pivot"], tiny["targets"], 0.9) - 0.05
    # the same command again: already done, nothing recomputed
    before = (out / "model.safetensors").stat().st_mtime_ns
    r = run_cli("--pivot", str(tiny["pivot"]), "--targets", str(tiny["targets"]), "--out", str(out), *FAST)
    assert r.returncode == 0 and "nothing to do" in r.stderr
    assert (out / "model.safetensors").stat().st_mtime_ns == before


def test_a_few_steps_of_pure_fusion_lower_the_fusion_loss(tiny, tmp_path):
    out = train(
        tiny["pivot"],
        tiny["targets"],
        tmp_path / "fuse",
        lam=0.0,
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        warmup_steps=0,
        logging_steps=1,
        disable_tqdm=True,
    )
    assert dataset_loss(out, tiny["targets"]) < dataset_loss(tiny["pivot"], tiny["targets"]) - 0.05
    # Each log line carries the terms per supervised position; with lambda = 0 the loss is the fusion term.
    logs = [h for h in read_json(out / "trainer_state.json")["log_history"] if "loss" in h]
    assert len(logs) == 4 and all("clm_loss" not in h and "fusion_loss" in h for h in logs)  # no CLM term at 0
    assert all(h["loss"] == pytest.approx(h["fusion_loss"], abs=1e-3) for h in logs)


def test_clm_only_baseline_on_the_same_data(tiny, tmp_path):
    out = tmp_path / "clm"
    r = run_cli(
        "--pivot",
        str(tiny["pivot"]),
        "--targets",
        str(tiny["targets"]),
        "--out",
        str(out),
        "--clm-only",
        *FAST,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    m = read_json(out / "manifest.json")
    assert m["clm_only"] is True and m["lambda"] == 1.0
    assert "CLM-only baseline" in (out / "README.md").read_text()
    logs = [h for h in read_json(out / "trainer_state.json")["log_history"] if "loss" in h]
    assert logs and all("clm_loss" in h and "fusion_loss" not in h for h in logs)
    assert dataset_loss(out, tiny["targets"], lam=1.0) < dataset_loss(tiny["pivot"], tiny["targets"], lam=1.0)


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fusechat train: error:"), r.stderr[-2000:]
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_input_fails_before_compute(tiny, tmp_path):
    base = ["--pivot", str(tiny["pivot"]), "--targets", str(tiny["targets"])]
    one_line_error(run_cli(*base, "--out", str(tmp_path / "a"), "--lambda", "1.5"), "--lambda", "1.5")
    assert not (tmp_path / "a").exists()
    # an existing directory that is not ours (through the API: one CLI round trip above shows the format)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(FusechatError, match="not a fusechat") as e:
        train(tiny["pivot"], tiny["targets"], foreign, max_steps=1)
    assert str(foreign) in str(e.value)
    assert sorted(p.name for p in foreign.iterdir()) == ["weights.safetensors"]


def test_flag_values_and_missing_engines_are_refused_in_one_line(tiny, tmp_path):
    """The declared rules (train/options.py) hold for every spelling; an engine that is not installed is named
    with its install line, before the model is loaded."""
    import importlib.util

    base = ["--pivot", str(tiny["pivot"]), "--targets", str(tiny["targets"]), "--out", str(tmp_path / "a")]
    one_line_error(run_cli(*base, "--per_device_train_batch_size", "0"), "--batch-size 0", "greater than or equal to 1")
    one_line_error(run_cli(*base, "--epochs", "0"), "--epochs 0", "greater than 0")
    if importlib.util.find_spec("deepspeed") is None:
        one_line_error(run_cli(*base, "--trainer-arg", "deepspeed=ds.json"), "pip install deepspeed")
        one_line_error(run_cli(*base, "--deepspeed", "ds.json"), "pip install deepspeed")
    assert not (tmp_path / "a").exists()


def test_a_pivot_that_needs_remote_code_is_refused_in_one_line(tiny, tmp_path):
    """As teach and evaluate refuse it: the model's own code is not run, and the line says how to allow it."""
    pivot = tmp_path / "remote"
    shutil.copytree(tiny["pivot"], pivot)
    config = read_json(pivot / "config.json")
    config.update(model_type="not-in-transformers", auto_map={"AutoConfig": "custom.Config"})
    (pivot / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "ran"
    (pivot / "custom.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    r = run_cli("--pivot", str(pivot), "--targets", str(tiny["targets"]), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("fusechat train: error:")]
    assert len(errors) == 1 and errors[0] == r.stderr.strip().splitlines()[-1], r.stderr[-2000:]
    for word in (str(pivot), "custom code", "--trust-remote-code"):  # (transformers logs a warning before it)
        assert word in errors[0], errors[0]
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_targets_for_another_tokenizer_and_unknown_options_are_refused(tiny, tmp_path):
    other = tmp_path / "other"
    make_tokenizer(other, vocab_size=280)
    from transformers import AutoTokenizer

    make_model(other, len(AutoTokenizer.from_pretrained(other)), seed=3)
    with pytest.raises(FusechatError, match="tokenizer") as e:
        train(other, tiny["targets"], tmp_path / "b", max_steps=1)
    assert str(tiny["targets"]) in str(e.value)
    with pytest.raises(FusechatError, match="no_such"):
        train(tiny["pivot"], tiny["targets"], tmp_path / "c", no_such=1)
    with pytest.raises(FusechatError, match="set by fusechat"):
        train(tiny["pivot"], tiny["targets"], tmp_path / "d", output_dir="elsewhere")
    if not torch.cuda.is_available():
        with pytest.raises(FusechatError, match="FSDP needs GPUs"):
            train(tiny["pivot"], tiny["targets"], tmp_path / "e", fsdp=True)
    assert not any((tmp_path / n).exists() for n in "bcde")


def test_empty_target_set_is_refused(tiny, tmp_path):
    empty = make_targets(tmp_path / "empty", tiny["pivot"], tiny["source"], n=0, n_shards=1)
    with pytest.raises(FusechatError, match="empty"):
        train(tiny["pivot"], empty, tmp_path / "out", max_steps=1)
    assert not (tmp_path / "out").exists()


def test_non_finite_batches_are_skipped_and_counted(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    bad = tmp_path / "nan-targets"
    shutil.copytree(tiny["targets"], bad)
    # rewrite every shard with NaN log-probs: every batch's loss is NaN
    store = TopKStore(bad)
    from fusechat.store.format import ShardWriter, finalize

    records = [list(store.read_shard(i)) for i in range(store.n_shards)]
    import pyarrow as pa

    for i, recs in enumerate(records):
        w = ShardWriter(bad, i, store.n_shards, store.k, extra=pa.schema([("teacher", pa.int32())]))
        for r in recs:
            r.topk_logprobs = np.full_like(r.topk_logprobs, np.nan)
            r.extra = {"teacher": int(r.extra["teacher"])}
            w.write(r)
        w.close()
    manifest = {k: v for k, v in store.manifest.items() if k not in ("shards", "counts", "complete")}
    assert finalize(bad, manifest, store.n_shards)
    out = train(tiny["pivot"], bad, tmp_path / "out", max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2)
    m = json.loads((out / "manifest.json").read_text())
    assert m["nonfinite_batches_skipped"] == 2
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    for k, v in AutoModelForCausalLM.from_pretrained(tiny["pivot"]).state_dict().items():
        assert torch.isfinite(trained[k]).all()
        torch.testing.assert_close(trained[k], v)  # zero gradients, no weight decay: the weights did not move


def test_lora_adapters_are_merged_into_a_plain_checkpoint(tiny, tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    out = train(
        tiny["pivot"],
        tiny["targets"],
        tmp_path / "lora",
        lam=0.5,
        lora_rank=4,
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        warmup_steps=0,
        disable_tqdm=True,
    )
    merged, pivot = (
        load_file(str(out / "model.safetensors")),
        load_file(str(tiny["pivot"] / "model.safetensors")),
    )
    assert merged.keys() == pivot.keys()  # no adapter tensors left
    torch.testing.assert_close(merged["model.embed_tokens.weight"], pivot["model.embed_tokens.weight"])
    assert (
        merged["model.layers.0.self_attn.q_proj.weight"] - pivot["model.layers.0.self_attn.q_proj.weight"]
    ).abs().max() > 0
    assert read_json(out / "manifest.json")["lora"] == {"rank": 4, "alpha": 8}
    assert dataset_loss(out, tiny["targets"], 0.5) < dataset_loss(tiny["pivot"], tiny["targets"], 0.5)


def test_trainer_options_pass_through(tiny, tmp_path):
    """Packing, gradient checkpointing, accumulation, bf16 autocast, the tail bucket and the compiled loss
    kernel (as `auto` runs it on CUDA: a bf16 gradient written by the compiled piece) in one short run."""
    from fusechat.train import fused

    fused.reset()
    out = train(
        tiny["pivot"],
        tiny["targets"],
        tmp_path / "opts",
        lam=0.5,
        tail=True,
        pack=True,
        max_length=256,
        max_steps=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        gradient_checkpointing=True,
        bf16=True,
        learning_rate=1e-3,
        warmup_ratio=0.5,  # the transformers 4 name, still what people pass
        disable_tqdm=True,
        keep_checkpoints=True,
        save_steps=1,
        loss_kernel="compiled",
    )
    assert fused.compiled_in_use()  # the compiled path ran, and did not fall back to eager
    m = read_json(out / "manifest.json")
    assert m["complete"] and m["steps"] == 2 and m["global_batch"] == 4 and m["tail_bucket"] and m["pack"]
    assert m["nonfinite_batches_skipped"] == 0 and np.isfinite(m["train_loss"])
    assert (out / "checkpoints" / "checkpoint-2").is_dir()


def test_deepspeed_zero3_and_a_missing_deepspeed_are_refused_in_one_line(tiny, tmp_path):
    import importlib.util

    base = ["--pivot", str(tiny["pivot"]), "--targets", str(tiny["targets"])]
    zero3 = tmp_path / "zero3.json"
    zero3.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    r = run_cli(*base, "--out", str(tmp_path / "a"), "--trainer-arg", f"deepspeed={zero3}")
    one_line_error(r, "ZeRO-3", "--fsdp")
    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(FusechatError, match="DeepSpeed is not installed.*pip install deepspeed"):
            train(tiny["pivot"], tiny["targets"], tmp_path / "b", deepspeed={"zero_optimization": {"stage": 2}})
    with pytest.raises(FusechatError, match="--chunk-memory"):
        train(tiny["pivot"], tiny["targets"], tmp_path / "c", chunk_memory=0)
    assert not any((tmp_path / n / "model.safetensors").exists() for n in "abc")


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "ZeRO-3"),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "FSDP1"),
    ],
    ids=["accelerate-zero3", "accelerate-fsdp1"],
)
def test_accelerate_configs_with_zero3_or_fsdp1_are_refused(env, words):
    from fusechat.train.engines import _check_launcher_config

    with pytest.raises(FusechatError, match=words):
        _check_launcher_config(env)
    _check_launcher_config({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"})  # FSDP2: accepted
