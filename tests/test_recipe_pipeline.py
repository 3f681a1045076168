"""Recipes validate (every shipped one too); the pipeline skips done steps, redoes stale ones, resumes partial."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import pytest
import yaml

from fusechat.errors import FusechatError
from fusechat.manifest import write_manifest
from fusechat.pipeline import Pipeline, Step
from fusechat.plan import plan
from fusechat.recipe import load_recipe

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
    from fusechat.run_command import _pipeline

    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump({**BASE, "pivot": "smollm2-135m-instruct", "sources": [{"name": "a", "model": "nope"}]})
    )
    with pytest.raises(FusechatError, match=r"sources\[0\]\.model: 'nope' is no directory and no known model"):
        _pipeline(path)
