"""The trained checkpoint is saved in the pivot's dtype (training itself stays fp32 on CPU), or the one asked."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors import safe_open

from fusechat.errors import FusechatError
from fusechat.train.api import train
from fusechat.train.save import pivot_dtype

RUN = {"max_steps": 1, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 0, "disable_tqdm": True}


def saved_dtypes(out) -> set[str]:
    with safe_open(str(out / "model.safetensors"), framework="pt") as st:
        return {str(st.get_slice(k).get_dtype()) for k in st.keys()}


@pytest.fixture(scope="module")
def bf16_pivot(tiny, tmp_path_factory):
    """The tiny pivot stored in bf16, as most released chat models are."""
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("bf16") / "pivot"
    shutil.copytree(tiny["pivot"], path)
    AutoModelForCausalLM.from_pretrained(tiny["pivot"], dtype="bfloat16").save_pretrained(path)
    return path


def test_checkpoint_keeps_the_pivots_dtype_and_loads_as_such(bf16_pivot, tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    assert pivot_dtype(bf16_pivot) == "bfloat16"
    out = train(bf16_pivot, tiny["targets"], tmp_path / "out", lam=0.5, **RUN)
    assert saved_dtypes(out) == {"BF16"}
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and "torch_dtype" not in config
    assert json.loads((out / "manifest.json").read_text())["save_dtype"] == "bfloat16"
    before = (bf16_pivot / "model.safetensors").stat().st_size
    assert (out / "model.safetensors").stat().st_size <= before + 4096  # half of fp32's size, not double
    model = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert str(model.dtype) == "torch.bfloat16"


def test_save_dtype_overrides_the_pivots(bf16_pivot, tiny, tmp_path):
    out = train(bf16_pivot, tiny["targets"], tmp_path / "out", lam=0.5, save_dtype="float32", **RUN)
    assert saved_dtypes(out) == {"F32"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    # An fp32 pivot stays fp32 by default.
    out = train(tiny["pivot"], tiny["targets"], tmp_path / "out32", lam=0.5, **RUN)
    assert saved_dtypes(out) == {"F32"}


def test_unknown_save_dtype_is_refused(tiny, tmp_path):
    with pytest.raises(FusechatError, match="--save-dtype must be one of"):
        train(tiny["pivot"], tiny["targets"], tmp_path / "out", save_dtype="int8", **RUN)


def test_pivot_dtype_falls_back_to_the_weights(bf16_pivot, tmp_path):
    config = json.loads((bf16_pivot / "config.json").read_text())
    config.pop("dtype", None)
    config.pop("torch_dtype", None)
    shutil.copytree(bf16_pivot, tmp_path / "p")
    (tmp_path / "p" / "config.json").write_text(json.dumps(config))
    assert pivot_dtype(tmp_path / "p") == "bfloat16"
