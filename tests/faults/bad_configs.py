"""Malformed configs, generated from the config models themselves: every key of a recipe (recipe.Recipe) and of a
merge config (merge.config.MergeConfig, and every parameter of every merge method in merge.registry) with a
wrong type, an out-of-range value, a misspelt name, and (if required) left out; plus whole files that are not
YAML mappings. A key added to a model is covered without touching this file.

Each case is `(label, text, key_paths)`: the YAML text (or bytes) to load and the key paths the one error line may name
(a misspelt key may be reported as unknown, or its real name as missing).
"""

from __future__ import annotations

import copy
import types
from collections.abc import Iterator
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
import yaml
from pydantic import BaseModel

from fusechat.merge.config import MergeConfig
from fusechat.merge.registry import METHODS, REQUIRED
from fusechat.run.recipe import Recipe

Path_ = tuple[str | int, ...]
WHOLE_FILES = {
    "empty file": "",
    "only a comment": "# nothing\n",
    "not YAML": "name: [unclosed\n  workdir: {\n",
    "tabs": "name:\n\t- x\n",
    "a list": "- name: x\n- workdir: y\n",
    "a scalar": "just text\n",
    "a number": "42\n",
    "binary": "\x00\x01\x02name: x\n",
    "duplicate anchors": "a: &x 1\nb: *y\n",
    "not UTF-8": b"\xff\xfen\x00a\x00m\x00e\x00:\x00 \x00x\x00",
    "latin-1": "name: caf\xe9\n".encode("latin-1"),
}


def key_path(path: Path_) -> str:
    """`data.train[0].path`, as the loaders print key paths."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out.lstrip(".")


def _members(annotation: Any) -> list[Any]:
    if get_origin(annotation) in (Union, types.UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def wrong_values(annotation: Any) -> list[Any]:
    """Values of the wrong type for a field of this annotation (a map where a scalar or list is due, and so on)."""
    out: list[Any] = []
    for a in _members(annotation):
        origin = get_origin(a)
        if isinstance(a, type) and issubclass(a, BaseModel):
            out += [[1, 2], "text", 3]
        elif origin is list:
            out += [{"x": 1}, "text"]
        elif origin is dict or a is dict:
            out += [[1, 2]]
        elif origin is Literal:
            out += ["no-such-option", 5, [*get_args(a)][:1]]
        elif a is bool:
            out += ["maybe", 2, {"x": 1}]
        elif a is int:
            out += ["abc", 2.5, {"x": 1}, [1]]
        elif a is float:
            out += ["abc", {"x": 1}, [0.5]]
        elif a is str:
            out += [{"x": 1}, 5, [1]]
    return out


def out_of_range(field: Any, annotation: Any) -> list[Any]:
    """Values just outside the field's declared bounds, and unsafe names where a pattern constrains it."""
    is_int = int in _members(annotation)
    step = 1 if is_int else 1e-3
    out: list[Any] = []
    for m in field.metadata:
        if isinstance(m, at.Ge):
            out.append(m.ge - step)
        elif isinstance(m, at.Gt):
            out.append(m.gt)
        elif isinstance(m, at.Le):
            out.append(m.le + step)
        elif isinstance(m, at.Lt):
            out.append(m.lt)
        elif isinstance(m, at.MinLen):
            out.append([])
        elif getattr(m, "pattern", None):
            out += UNSAFE_NAMES
    return out


# Names that would leave the run directory, or be no name at all, if they were used to build a path.
UNSAFE_NAMES = ["../x", "../../etc", "/abs", "a/b", "a\\b", "", ".", "..", "-x", "x" * 65, "a b", "a\x00b", "~x"]


def _walk(model: type[BaseModel], data: dict, path: Path_) -> Iterator[tuple[Path_, Any, Any, dict]]:
    """(key path, pydantic field, annotation, the mapping that holds it) for every field under `model`."""
    for name, field in model.model_fields.items():
        key = field.alias or name
        yield (*path, key), field, field.annotation, data
        value = data.get(key)
        for a in _members(field.annotation):
            if isinstance(a, type) and issubclass(a, BaseModel) and isinstance(value, dict):
                yield from _walk(a, value, (*path, key))
            elif get_origin(a) is list and value:
                (item,) = get_args(a)
                if isinstance(item, type) and issubclass(item, BaseModel):
                    for i, v in enumerate(value):
                        yield from _walk(item, v, (*path, key, i))


def _at(data: dict, path: Path_) -> Any:
    for p in path:
        data = data[p]
    return data


def model_cases(model: type[BaseModel], valid: dict) -> Iterator[tuple[str, dict, list[str]]]:
    """Every field of `valid` (a complete, valid instance as plain data) made wrong in every way."""
    for path, field, annotation, _ in list(_walk(model, valid, ())):
        where, key = path[:-1], path[-1]
        for value in wrong_values(annotation) + out_of_range(field, annotation):
            bad = copy.deepcopy(valid)
            _at(bad, where)[key] = value
            yield f"{key_path(path)} = {value!r}", bad, [key_path(path)]
        bad = copy.deepcopy(valid)
        section = _at(bad, where)
        typo = key[:-1] if len(key) > 3 else key + "_"
        section[typo] = section.pop(key, 1)
        yield f"{key_path(path)} misspelt {typo}", bad, [key_path((*where, typo)), key_path(path)]
        if field.is_required():
            bad = copy.deepcopy(valid)
            del _at(bad, where)[key]
            yield f"{key_path(path)} missing", bad, [key_path(path)]


def full_recipe() -> dict:
    """A valid recipe with every section and key written out (defaults included), one of each list item."""
    raw = {
        "name": "tiny",
        "workdir": "run",
        "pivot": "pivot-model",
        "sources": [{"name": "a", "model": "model-a"}],
        "data": {"train": [{"kind": "file", "path": "train.jsonl", "limit": 10}], "heldout": [{"kind": "sharegpt"}]},
        "train": {"max_steps": 3},
        "merge": {"methods": [{"method": "ties", "weights": [0.5], "density": 0.5, "parameters": {"lambda": 1.0}}]},
        "evaluate": {"limit": 5},
    }
    return Recipe.model_validate(raw).model_dump(by_alias=True, mode="json")


def recipe_cases() -> Iterator[tuple[str, str, list[str]]]:
    for label, bad, paths in model_cases(Recipe, full_recipe()):
        yield label, yaml.safe_dump(bad, allow_unicode=True), paths
    for label, text in WHOLE_FILES.items():
        yield label, text, []


def _method_config(name: str) -> dict:
    """A valid config of one method with every parameter it takes written out."""
    spec = METHODS[name]
    n = spec.max_models or 2
    models = [{"model": f"/models/m{i}", "parameters": {}} for i in range(n)]
    raw: dict[str, Any] = {"merge_method": name, "models": models, "parameters": {}, "dtype": "float32"}
    raw |= {"out_dtype": "bfloat16", "tokenizer_source": "/models/m0", "chat_template": "{{ x }}", "name": "merged"}
    if spec.base_required:
        raw["base_model"] = "/models/base"
        raw["models"].append({"model": "/models/base"})
    for p in spec.shared:
        raw["parameters"][p.name] = _valid(p)
    for m in models[:n]:
        for p in spec.per_model:
            m["parameters"][p.name] = _valid(p)
    return raw


def _valid(p: Any) -> Any:
    if p.default is not REQUIRED:
        return p.default
    return 0.5 if p.type is float else p.type()


def _range_breakers(p: Any) -> list[Any]:
    if p.check is None:
        return []
    if p.type is str:
        return ["no-such-option", ""]
    return [v for v in (-1.0, -1e-3, 1.001, 2.0, 1e9) if p.check(p.type(v) if p.type is not bool else v)]


def merge_cases() -> Iterator[tuple[str, str, list[str]]]:
    for name in METHODS:
        valid = _method_config(name)
        MergeConfig.model_validate(valid)  # the base of the cases must itself be valid
        for label, bad, paths in model_cases(MergeConfig, valid):
            if label.startswith(("parameters", "models[")) and "missing" not in label and "misspelt" not in label:
                if not label.startswith(("parameters =", "models[0].parameters =")):
                    continue  # a parameter's values are covered per parameter below
            yield f"{name}: {label}", yaml.safe_dump(bad), paths
        spec = METHODS[name]
        scopes = [(("parameters",), p) for p in spec.shared] + [
            (("models", 0, "parameters"), p) for p in spec.per_model
        ]
        for where, p in scopes:
            path = key_path((*where, p.name))
            values: list[Any] = ["abc", [1, "x"], {"filter": "x"}] if p.type is not str else [5, True]
            if p.type is float:
                values.append(True)
            for v in values + _range_breakers(p):
                bad = copy.deepcopy(valid)
                _at(bad, where)[p.name] = v
                yield f"{name}: {path} = {v!r}", yaml.safe_dump(bad), [path]
            bad = copy.deepcopy(valid)
            _at(bad, where)[p.name + "x"] = _at(bad, where).pop(p.name)
            yield f"{name}: {path} misspelt", yaml.safe_dump(bad), [key_path((*where, p.name + "x")), path]
    for label, text in WHOLE_FILES.items():
        yield label, text, []


def recipe_merge_cases() -> Iterator[tuple[str, dict, str]]:
    """A recipe's merge methods with bad parameters (every shared parameter of every method, from the registry):
    `(label, merge section, the start of the error after 'merge.methods[0] (method): ')`. The recipe has two
    sources, so each method merges two targets."""
    for name, spec in METHODS.items():
        for p in spec.shared:
            values: list[Any] = ["abc", [1, "x"], {"filter": "x"}] if p.type is not str else [5, True]
            for v in values + _range_breakers(p):
                section = {"methods": [{"method": name, "parameters": {p.name: v}}]}
                yield f"{name}: parameters.{p.name} = {v!r}", section, f"parameters.{p.name}: "
            section = {"methods": [{"method": name, "parameters": {p.name + "x": _valid(p)}}]}
            yield f"{name}: parameters.{p.name} misspelt", section, f"parameters.{p.name}x: "
        if spec.per_model:
            section = {"methods": [{"method": name, "weights": [0.5, 0.25, 0.25]}]}
            yield f"{name}: three weights for two targets", section, "weights: 3 values for 2 models"
    section = {"methods": [{"method": "slerp", "parameters": {"t": 0.5}}], "targets": "pairwise+multi"}
    yield "slerp over three targets", section, "merge slerp needs exactly two targets"
