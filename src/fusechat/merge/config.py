"""The merge configuration: mergekit's YAML schema, validated completely when it is loaded.

A config of a method fusechat shares with mergekit runs unchanged; `varm` is one more method. Where mergekit
silently ignores something (an unknown key, a parameter the method does not use, a `density` on task
arithmetic), this loader refuses it with the key's path, so a typo never turns into a different merge.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from fusechat.errors import FusechatError, yaml_error
from fusechat.merge.params import ConfigProblem, Setting, normalise_setting, scalars
from fusechat.merge.registry import METHODS, REQUIRED, MethodSpec

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float64": "float64",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _settings(raw: Mapping[str, Any] | None) -> dict[str, Setting]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigProblem("", "expected a mapping of parameter names to values")
    return {str(k): normalise_setting(v, str(k)) for k, v in raw.items()}


class InputModel(_Strict):
    """One entry of `models:`: a model directory (or installed model name) and its own parameters."""

    model: str
    parameters: dict[str, Setting] = {}

    @field_validator("parameters", mode="before")
    @classmethod
    def _parse(cls, raw: Any) -> dict[str, Setting]:
        return _settings(raw)

    @field_validator("model")
    @classmethod
    def _plain_path(cls, v: str) -> str:
        if "+" in v:
            raise ValueError(f"{v!r}: model+LoRA references are not supported; merge the LoRA into the model first")
        return v


class MergeConfig(_Strict):
    """A validated merge: method, inputs, parameters, dtypes and where the tokenizer comes from."""

    merge_method: str
    base_model: str | None = None
    models: list[InputModel]
    parameters: dict[str, Setting] = {}
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    chat_template: str | None = None
    name: str | None = None

    @field_validator("parameters", mode="before")
    @classmethod
    def _parse(cls, raw: Any) -> dict[str, Setting]:
        return _settings(raw)

    @field_validator("dtype", "out_dtype")
    @classmethod
    def _dtype(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if v not in DTYPES:
            raise ValueError(f"unknown dtype {v!r}; use one of float32, float16, bfloat16, float64")
        return DTYPES[v]

    @field_validator("merge_method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown merge_method {v!r}; fusechat knows {', '.join(METHODS)}")
        return v

    @field_validator("chat_template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None and "{" not in v:
            raise ValueError(
                f"{v!r}: give the chat template itself (Jinja); named templates are not bundled. "
                "Leave it out to keep the base model's template"
            )
        return v

    @model_validator(mode="after")
    def _method_rules(self) -> MergeConfig:
        _check_against_method(self, METHODS[self.merge_method])
        return self

    @property
    def method(self) -> MethodSpec:
        return METHODS[self.merge_method]

    def merged_models(self) -> list[InputModel]:
        """The inputs the method combines, in config order: all but the base (linear: the base too)."""
        if self.method.base_required:
            return [m for m in self.models if m.model != self.base_model]
        listed = list(self.models)
        if self.base_model is not None and all(m.model != self.base_model for m in listed):
            listed.append(InputModel(model=self.base_model))
        return listed

    def to_yaml_dict(self) -> dict[str, Any]:
        """The config as plain data (as it would be written in YAML), for the model card and manifest."""
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=False)


def _check_against_method(cfg: MergeConfig, spec: MethodSpec) -> None:
    if spec.base_required and cfg.base_model is None:
        raise ConfigProblem("base_model", f"{spec.name} needs a base model (the pivot the task vectors start from)")
    names = [m.model for m in cfg.models]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ConfigProblem("models", f"{sorted(duplicates)[0]} is listed twice")
    merged = cfg.merged_models()
    if len(merged) < spec.min_models:
        raise ConfigProblem("models", f"{spec.name} needs at least {spec.min_models} model(s) besides the base")
    if spec.max_models is not None and len(merged) > spec.max_models:
        raise ConfigProblem(
            "models",
            f"{spec.name} takes exactly {spec.max_models} model(s) besides the base, got {len(merged)}",
        )
    shared = {p.name: p for p in spec.shared}
    per_model = {p.name: p for p in spec.per_model}
    for key, setting in cfg.parameters.items():
        param = shared.get(key) or per_model.get(key)
        if param is None:
            raise ConfigProblem(f"parameters.{key}", _unknown(spec, key))
        _check_values(param, setting, f"parameters.{key}")
    for i, m in enumerate(cfg.models):
        for key, setting in m.parameters.items():
            where = f"models[{i}].parameters.{key}"
            if key in shared:
                raise ConfigProblem(where, f"'{key}' applies to the whole merge; set it under top-level parameters")
            if key not in per_model:
                raise ConfigProblem(where, _unknown(spec, key))
            if m.model == cfg.base_model and spec.base_required:
                raise ConfigProblem(where, f"the base model takes no parameters in {spec.name}; remove them")
            _check_values(per_model[key], setting, where)
    for p in spec.shared:
        if p.default is REQUIRED and p.name not in cfg.parameters:
            raise ConfigProblem(f"parameters.{p.name}", f"required by {spec.name}")
    for p in spec.per_model:
        if p.default is not REQUIRED or p.name in cfg.parameters:
            continue
        for m in merged:
            if p.name not in m.parameters:
                idx = next((j for j, x in enumerate(cfg.models) if x.model == m.model), None)
                where = f"models[{idx}].parameters.{p.name}" if idx is not None else f"base_model ({m.model})"
                raise ConfigProblem(where, f"{spec.name} needs a '{p.name}' for every merged model")


def _unknown(spec: MethodSpec, key: str) -> str:
    known = [p.name for p in spec.shared + spec.per_model]
    takers = [name for name, other in METHODS.items() if other.param(key) is not None]
    hint = ""
    if takers:  # a parameter of another method: mergekit would accept it and silently do nothing with it
        hint = f" (mergekit ignores it silently: it does nothing here; {', '.join(takers)} take it)"
    return f"{spec.name} has no parameter '{key}'{hint}; it takes {', '.join(known) or 'none'}"


def _check_values(param: Any, setting: Setting, where: str) -> None:
    for value in scalars(setting):
        if param.type is bool:
            ok = isinstance(value, bool)
        elif param.type is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = isinstance(value, param.type)
        if not ok:
            raise ConfigProblem(where, f"expected {param.type.__name__}, got {value!r}")
        if param.check is not None and (problem := param.check(value)):
            raise ConfigProblem(where, problem)


def _problem(err: Any) -> tuple[int, str]:
    """One validation problem as `path: message`, ranked: the specific refusals first (a method's own rule,
    layer slicing), then other bad keys, then missing keys (often only a consequence of the first ones)."""
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]]
    msg, rank = err["msg"].removeprefix("Value error, "), 1
    problem = (err.get("ctx") or {}).get("error")
    if isinstance(problem, ConfigProblem):
        if problem.path:
            parts.append(problem.path if problem.path.startswith("[") else f".{problem.path}")
        msg, rank = problem.message, 0
    elif err["type"] == "extra_forbidden":
        msg = "unknown key; check its spelling against docs/merging.md"
        if err["loc"] == ("slices",):
            msg, rank = (
                "layer slicing is not supported (mergekit's passthrough of layer ranges has no counterpart here); "
                "list whole models under `models:`",
                0,
            )
    elif err["type"] == "missing":
        msg, rank = "required key is missing", 2
    path = "".join(parts).lstrip(".")
    return rank, f"{path + ': ' if path else ''}{msg}"


def _format_error(e: ValidationError, source: str) -> FusechatError:
    """Every problem of the config on one line, the specific ones first."""
    problems = sorted((_problem(err) for err in e.errors()), key=lambda p: p[0])
    return FusechatError(f"{source}: " + "; ".join(text for _, text in problems))


def load_config(source: MergeConfig | Mapping[str, Any] | str | os.PathLike) -> MergeConfig:
    """Validate a config given as an object, a mapping or a YAML path; raise FusechatError on any problem."""
    if isinstance(source, MergeConfig):
        return source
    label = "config"
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        label = str(path)
        if not path.is_file():
            raise FusechatError(f"{path}: no such merge config file")
        try:
            source = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise yaml_error(path, e) from None
        except (OSError, UnicodeDecodeError) as e:
            raise FusechatError(f"{path}: cannot read the merge config ({e}); give a UTF-8 YAML file") from None
        if not isinstance(source, Mapping):
            raise FusechatError(f"{path}: a merge config is a YAML mapping with merge_method, models, ...")
    try:
        return MergeConfig.model_validate(dict(source))
    except ValidationError as e:
        raise _format_error(e, label) from None


def simple_config(
    method: str,
    base_model: str | os.PathLike | None,
    models: Sequence[str | os.PathLike],
    weights: Sequence[float] | None = None,
    densities: Sequence[float] | None = None,
    parameters: Mapping[str, Any] | None = None,
    dtype: str | None = None,
) -> MergeConfig:
    """A config from Python lists (for the pipeline): one weight and density per model, checked for length."""
    for label, values in (("weights", weights), ("densities", densities)):
        if values is not None and len(values) != len(models):
            raise FusechatError(f"{label}: {len(values)} values for {len(models)} models; give one per model")
    entries = []
    for i, m in enumerate(models):
        params: dict[str, Any] = {}
        if weights is not None:
            params["weight"] = weights[i]
        if densities is not None:
            params["density"] = densities[i]
        entries.append({"model": str(m), "parameters": params})
    raw: dict[str, Any] = {"merge_method": method, "models": entries, "parameters": dict(parameters or {})}
    if base_model is not None:
        raw["base_model"] = str(base_model)
    if dtype is not None:
        raw["dtype"] = dtype
    return load_config(raw)
