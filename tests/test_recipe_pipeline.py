"""Recipes validate (every shipped one too); the pipeline skips done steps, redoes stale ones, resumes partial."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from pathlib import Path

import pytest
import yaml

from fusechat.errors import FusechatError
from fusechat.manifest import write_manifest
from fusechat.run.pipeline import Pipeline, Step
from fusechat.run.plan import plan
from fusechat.run.recipe import load_recipe

RECIPES = sorted(
    p.name for p in (importlib.resources.files("fusechat") / "recipes").iterdir() if p.name.endswith(".yaml")
)


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_recipes_validate_and_plan(name):
    with importlib.resources.as_file(importlib.resources.files("fusechat") / "recipes" / name) as path:
        recipe, base = load_recipe(path)
        steps = plan(recipe, base)
    names = [s.name for s in steps]
    assert names[-1] == "report" and "teach/pivot" in names
    assert all(s.out.resolve().is_relative_to((base / recipe.workdir).resolve()) for s in steps)


BASE = {
    "name": "t",
    "workdir": "w",
    "pivot": "p",
    "sources": [{"name": "a", "model": "m"}],
    "data": {"train": [{"kind": "sharegpt", "limit": 3}]},
}


@pytest.mark.parametrize(
    "change, where",
    [
        ({"train": {"lambda": 1.5}}, "train.lambda"),
        ({"train": {"lamda": 0.5}}, "train.lamda"),
        ({"sources": [{"name": "a", "model": "m"}, {"name": "a", "model": "n"}]}, "sources"),
        ({"data": {"train": [{"kind": "file"}]}}, "data.train[0]"),
        ({"data": {"train": [{"kind": "humaneval", "offset": 90, "limit": 20}]}}, "data.train[0]"),
        ({"merge": {"methods": [{"method": "average"}]}}, "merge.methods[0].method"),
        ({"teach": {"top_k": 0}}, "teach.top_k"),
        ({"workdir": 3}, "workdir"),
    ],
)
def test_bad_recipes_name_the_key(tmp_path, change, where):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**BASE, **change}))
    with pytest.raises(FusechatError) as e:
        load_recipe(path)
    assert f": {where}" in str(e.value)


def _steps(tmp_path: Path, calls: list[str], settings: int = 1) -> list[Step]:
    def make(name: str, out: Path):
        def run():
            calls.append(name)
            out.mkdir(parents=True, exist_ok=True)
            write_manifest(out, {"stage": name}, complete=True)

        return run

    a, b = tmp_path / "a", tmp_path / "b"
    return [Step("a", a, {"x": settings}, [], make("a", a)), Step("b", b, {}, ["a"], make("b", b))]


def test_pipeline_skips_redoes_and_resumes(tmp_path):
    calls: list[str] = []
    Pipeline(tmp_path, _steps(tmp_path, calls)).run(echo=lambda s: None)
    assert calls == ["a", "b"]
    Pipeline(tmp_path, _steps(tmp_path, calls)).run(echo=lambda s: None)
    assert calls == ["a", "b"]  # nothing changed: nothing runs
    Pipeline(tmp_path, _steps(tmp_path, calls, settings=2)).run(echo=lambda s: None)
    assert calls == ["a", "b", "a", "b"]  # a's settings changed: a and everything after it are redone
    write_manifest(tmp_path / "b", {"stage": "b"}, complete=False)  # b was killed part-way
    pipe = Pipeline(tmp_path, _steps(tmp_path, calls, settings=2))
    assert [s.state for s in pipe.status()] == ["complete", "partial"]
    pipe.run(echo=lambda s: None)
    assert calls[-1] == "b" and len(calls) == 5
    state = json.loads((tmp_path / "pipeline.json").read_text())
    assert state["done"].keys() == {"a", "b"} and [s["name"] for s in state["steps"]] == ["a", "b"]
    assert all(d["seconds"] >= 0 and d["finished"] for d in state["done"].values())


def test_pipeline_refuses_outputs_outside_workdir(tmp_path):
    with pytest.raises(FusechatError, match="outside"):
        Pipeline(tmp_path / "w", [Step("x", tmp_path / "elsewhere", {})])


def test_unknown_model_is_refused_before_any_stage(tmp_path):
    from fusechat.run.api import load_pipeline

    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump({**BASE, "pivot": "smollm2-135m-instruct", "sources": [{"name": "a", "model": "nope"}]})
    )
    with pytest.raises(FusechatError, match=r"sources\[0\]\.model: nope: no such model directory, not a known model"):
        load_pipeline(path)


def test_pivot_without_chat_template_is_refused_at_load(tmp_path):
    from fusechat.models.load import has_chat_template
    from fusechat.run.api import load_pipeline
    from tests.tiny_models import CHATML, byte_bpe_tokenizer, save_llama

    pivot = save_llama(tmp_path / "pivot", byte_bpe_tokenizer(300), seed=0)
    assert has_chat_template(pivot)
    (pivot / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((pivot / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (pivot / "tokenizer_config.json").write_text(json.dumps(config))
    assert not has_chat_template(pivot)
    recipe = {**BASE, "pivot": "pivot", "sources": [{"name": "a", "model": "pivot"}]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(FusechatError, match=r"pivot: pivot has no chat template; name a Jinja template file"):
        load_pipeline(path)
    recipe["data"] = {**recipe["data"], "chat_template": "chatml.jinja"}
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(FusechatError, match=r"data\.chat_template: .*chatml\.jinja is not a file"):
        load_pipeline(path)
    (tmp_path / "chatml.jinja").write_text(CHATML)
    _, _, pipe, _ = load_pipeline(path)
    prepare = next(s for s in pipe.steps if s.name == "prepare/train")
    body = CHATML.encode()
    assert prepare.settings["chat_template"] == [len(body), hashlib.sha256(body).hexdigest()]  # by content


def test_adding_a_seed_keeps_the_trained_runs(tmp_path):
    """A second seed adds runs; the first seed's runs, merges and everything upstream keep their fingerprints
    (evaluation and report cover the new models, so they are redone; the evaluation cache keeps the old scores)."""
    path = tmp_path / "r.yaml"
    recipe = {**BASE, "merge": {"methods": [{"method": "varm"}]}}
    path.write_text(yaml.safe_dump(recipe))
    one = Pipeline(tmp_path / "w", plan(*load_recipe(path))).fingerprints()
    path.write_text(yaml.safe_dump({**recipe, "train": {"seeds": [0, 1]}}))
    two = Pipeline(tmp_path / "w", plan(*load_recipe(path))).fingerprints()
    kept = [k for k in one if k not in ("evaluate", "report")]
    assert {k: two[k] for k in kept} == {k: one[k] for k in kept}
    assert {"train/clm-s1", "train/pair-a-s1", "merge/varm-s1"} <= set(two) - set(one)
