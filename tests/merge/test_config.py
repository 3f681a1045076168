"""The config loader: mergekit's parameter syntax (filters, gradients, precedence) and load-time refusals."""

from __future__ import annotations

import pytest

from fusechat.errors import FusechatError
from fusechat.merge.config import load_config
from fusechat.merge.engine import _Settings
from fusechat.merge.params import layer_t


def cfg(**kw):
    raw = {"merge_method": "ties", "base_model": "P", "models": [{"model": "A", "parameters": {"weight": 1}}]}
    raw.update(kw)
    return load_config(raw)


def test_gradients_filters_and_precedence():
    c = load_config(
        {
            "merge_method": "ties",
            "base_model": "P",
            "models": [
                {
                    "model": "A",
                    "parameters": {"weight": 1, "density": [{"filter": "mlp", "value": [0.2, 0.6]}]},
                },
                {"model": "B", "parameters": {"weight": 2}},
            ],
            "parameters": {"density": 0.9, "lambda": [1.0, 2.0, 3.0]},
        }
    )
    s = _Settings(c, num_layers=5)
    shared, per = s.job("model.layers.2.mlp.up_proj.weight")  # t = 0.5
    assert shared["lambda"] == pytest.approx(2.0)
    assert per[0]["density"] == pytest.approx(0.4) and per[1]["density"] == 0.9
    shared, per = s.job("model.layers.2.self_attn.q_proj.weight")  # A's filter misses: falls to top level
    assert per[0]["density"] == 0.9 and per[0]["weight"] == 1.0
    shared, _ = s.job("model.embed_tokens.weight")  # outside the layers t = 0
    assert shared["lambda"] == 1.0
    assert layer_t("model.layers.0.mlp.w", 1) == 1.0


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"merge_methd": "ties"}, "merge_methd: unknown key"),
        ({"parameters": {"densty": 0.5}}, "parameters.densty: ties has no parameter 'densty'"),
        ({"parameters": {"normalize": "yes"}}, "parameters.normalize: expected bool"),
        (
            {"parameters": {"lambda": [{"filter": 3, "value": 1}]}},
            r"parameters.lambda\[0\].filter: must be a string",
        ),
        ({"dtype": "bf17"}, "dtype: unknown dtype 'bf17'"),
        ({"base_model": None}, "base_model: ties needs a base model"),
        ({"models": [{"model": "A"}]}, r"models\[0\].parameters.weight: ties needs a 'weight'"),
        ({"tokenizer_source": 3}, "tokenizer_source"),
        ({"slices": []}, "slices: layer slicing is not supported"),
    ],
)
def test_refusals_name_the_key(kw, message):
    with pytest.raises(FusechatError, match=message):
        cfg(**kw)


def test_method_specific_refusals():
    with pytest.raises(FusechatError, match="task_arithmetic has no parameter 'density'.*ignores it silently"):
        load_config(
            {
                "merge_method": "task_arithmetic",
                "base_model": "P",
                "models": [{"model": "A", "parameters": {"weight": 1, "density": 0.5}}],
            }
        )
    with pytest.raises(FusechatError, match="slerp takes exactly 1 model"):
        load_config(
            {
                "merge_method": "slerp",
                "base_model": "P",
                "models": [{"model": "A"}, {"model": "B"}],
                "parameters": {"t": 0.5},
            }
        )
    with pytest.raises(FusechatError, match="parameters.t: required by slerp"):
        load_config({"merge_method": "slerp", "base_model": "P", "models": [{"model": "A"}]})
    with pytest.raises(FusechatError, match="parameters.granularity: must be one of"):
        load_config(
            {
                "merge_method": "varm",
                "base_model": "P",
                "models": [{"model": "A"}],
                "parameters": {"granularity": "row"},
            }
        )
    with pytest.raises(FusechatError, match=r"models\[0\].parameters.normalize: 'normalize' applies to the whole"):
        load_config(
            {
                "merge_method": "linear",
                "models": [{"model": "A", "parameters": {"weight": 1, "normalize": False}}],
            }
        )


def test_fusechat_sce_config_loads():
    """The follow-up's SCE config shape (select_topk on top) runs unchanged."""
    c = load_config(
        {
            "merge_method": "sce",
            "base_model": "P",
            "models": [{"model": "A"}, {"model": "B"}],
            "parameters": {"select_topk": 0.1},
            "dtype": "bfloat16",
        }
    )
    assert [m.model for m in c.merged_models()] == ["A", "B"] and c.dtype == "bfloat16"


def test_a_tokenizer_source_without_a_tokenizer_is_refused_before_any_work(family, tmp_path):
    """Found by trying to break it: a folder holding no tokenizer gave a merged model without one (exit 0)."""
    from fusechat.merge import merge, simple_config

    base, a, b = family
    empty = tmp_path / "no-tokenizer"
    empty.mkdir()
    cfg = simple_config("linear", None, [str(a), str(b)], weights=[1, 1])
    cfg = cfg.model_copy(update={"tokenizer_source": str(empty)})
    with pytest.raises(FusechatError, match="tokenizer_source: .* holds no tokenizer"):
        merge(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_every_problem_is_named_the_specific_one_first(tmp_path):
    """mergekit users with `slices:` saw "models: required key is missing (and 1 more problem(s))" and never
    the message that says why; now every problem is on the line, the specific refusal first."""
    path = tmp_path / "slices.yml"
    path.write_text(
        "merge_method: linear\nslices:\n- sources:\n  - model: a\n    layer_range: [0, 2]\nparametres: {}\n"
    )
    with pytest.raises(FusechatError) as e:
        load_config(path)
    text = str(e.value)
    assert text.startswith(f"{path}: slices: layer slicing is not supported")
    assert "parametres: unknown key" in text and text.endswith("models: required key is missing")
    assert "\n" not in text


def test_the_output_carries_its_config_and_a_card_without_machine_paths(family, tmp_path):
    import yaml

    from fusechat.merge import merge, simple_config
    from fusechat.merge.card import CONFIG_COPY

    base, a, b = family
    cfg = simple_config("task_arithmetic", str(base), [str(a), str(b)], weights=[0.5, 0.5])
    out = merge(cfg, tmp_path / "out")
    assert load_config(out / CONFIG_COPY) == cfg  # the config as merged: `fusechat merge` (or mergekit) reruns it
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == [base.name, a.name, b.name] and meta["base_model_relation"] == "merge"
    assert {"merge", "mergekit", "task_arithmetic"} <= set(meta["tags"])
    assert str(tmp_path) not in card
