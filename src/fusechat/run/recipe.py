"""The recipe: one YAML file that describes a whole fusion, validated into typed data before anything runs.

A wrong key or value fails at load time with its path in the message (`train.lambda: ...`), never deep inside
a stage. The stages' sections are their options models (`<stage>/options.py`), the ones their commands' flags
come from, so a recipe and a command line have the same keys, defaults and rules.
Paths in a recipe are relative to the recipe file, and every output stays inside `workdir`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from fusechat.align.options import AlignOptions
from fusechat.data.options import PrepareOptions
from fusechat.errors import FusechatError, yaml_error
from fusechat.evaluate.datasets import HUMANEVAL_TRAIN
from fusechat.evaluate.options import DEFAULT_SUITE
from fusechat.evaluate.tasks import TASKS
from fusechat.flags import Options
from fusechat.fuse.options import FuseOptions
from fusechat.merge.registry import NAMES as MERGE_METHODS
from fusechat.teacher.options import TeachOptions
from fusechat.train.options import TrainOptions

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class _Strict(Options):
    """A recipe key's value: unknown keys refused, as in every stage's options."""


class Source(_Strict):
    name: Name = Field(description="short name used for output directories and report rows")
    model: str = Field(description="Hugging Face directory, installed model name, or hub id (org/name) in the HF cache")


class DataSource(_Strict):
    """One input of the corpus: a chat file, the bundled ShareGPT sample, generated GSM-Symbolic chats, or
    HumanEval/0-99 as code chats (HumanEval/100-163 are code_bpb's held-out items and cannot be trained on)."""

    kind: Literal["file", "sharegpt", "gsm_symbolic", "humaneval"]
    path: str | None = Field(None, description="for kind=file: JSON, JSONL or Parquet chats")
    limit: int | None = Field(None, ge=1, description="records to take")
    offset: int = Field(0, ge=0, description="records to skip first (keeps held-out data disjoint)")
    seed: int = Field(0, ge=0, description="for kind=gsm_symbolic: the generator's seed")

    @model_validator(mode="after")
    def _path_for_files(self) -> DataSource:
        if (self.kind == "file") != (self.path is not None):
            raise ValueError("give `path` exactly when kind is 'file'")
        if self.kind == "humaneval" and self.offset + (self.limit or 0) > HUMANEVAL_TRAIN:
            raise ValueError(
                f"humaneval: only HumanEval/0-{HUMANEVAL_TRAIN - 1} may be trained on (the rest are code_bpb's "
                "held-out items); lower limit/offset"
            )
        return self


class Data(PrepareOptions):
    train: list[DataSource] = Field(
        min_length=1, description="the corpus: sources of kind file, sharegpt, gsm_symbolic"
    )
    heldout: list[DataSource] = Field(default_factory=list, description="for bits-per-byte evaluation")
    chat_template: str | None = Field(
        None, description="a Jinja chat template file (relative to the recipe) for a pivot whose tokenizer has none"
    )


Teach = TeachOptions
Align = AlignOptions


class Fuse(FuseOptions):
    pairwise: bool = Field(True, description="one target per source (pivot + that source)")
    multi: bool = Field(True, description="one target from the pivot and every source at once")


class Train(TrainOptions):
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="one run per seed: train/T-sSEED")
    clm_baseline: bool = Field(True, description="train the CLM-only baseline the targets must beat")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{seeds}: a seed is listed twice; each seed trains into its own directory")
        return seeds


class MergeMethod(_Strict):
    method: Literal[MERGE_METHODS]  # type: ignore[valid-type]
    parameters: dict[str, Any] = Field(default_factory=dict, description="top-level mergekit-style parameters")
    weights: list[float] | None = Field(None, description="per-target weights, in the order of the targets")
    density: float | None = Field(None, gt=0, le=1)


class Merge(_Strict):
    targets: Literal["pairwise", "pairwise+multi"] = "pairwise"
    methods: list[MergeMethod] = Field(default_factory=list)

    @field_validator("methods")
    @classmethod
    def _distinct_methods(cls, methods: list[MergeMethod]) -> list[MergeMethod]:
        names = [m.method for m in methods]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(
                f"method {twice[0]!r} is listed twice; its output is merge/{twice[0]}-s<seed>, so keep one"
            )
        return methods


class Evaluate(_Strict):
    suite: list[Literal[tuple(TASKS)]] = Field(default_factory=lambda: list(DEFAULT_SUITE))  # type: ignore[valid-type]
    limit: int | None = Field(None, ge=1, description="items per task")


class Recipe(_Strict):
    name: Name
    workdir: str = Field(description="every output goes under this directory")
    pivot: str
    sources: list[Source] = Field(min_length=1)
    data: Data
    teach: Teach = Teach()
    align: Align = Align()
    fuse: Fuse = Fuse()
    train: Train = Train()
    merge: Merge = Merge()
    evaluate: Evaluate = Evaluate()

    @field_validator("sources")
    @classmethod
    def _unique(cls, sources: list[Source]) -> list[Source]:
        names = [s.name for s in sources]
        if len(set(names)) != len(names) or "pivot" in names:
            raise ValueError("source names must be unique and not 'pivot'")
        reserved = [n for n in names if _TRAINED.search(n)]
        if reserved:
            raise ValueError(
                f"source name {reserved[0]!r} ends like a trained or merged model's name (-s<seed>); rename it"
            )
        return sources


_TRAINED = re.compile(r"-s\d+$")  # train/<target>-s<seed>, merge/<method>-s<seed>: evaluated beside the sources


def _message(err: dict) -> str:
    if err["type"] == "string_pattern_mismatch":
        return (
            f"{err['input']!r} is not a usable name: give 1-64 letters, digits, '.', '_' or '-', starting with "
            "a letter or digit (names become directories under workdir)"
        )
    return str(err["msg"]).removeprefix("Value error, ")


def _loc(loc: tuple) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")


def load_recipe(path: str | os.PathLike) -> tuple[Recipe, Path]:
    """Read and validate a recipe; return it with the directory its relative paths are resolved against."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FusechatError(f"{path}: no such recipe file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FusechatError(f"{path}: cannot read the recipe ({e}); give a UTF-8 YAML file") from None
    except yaml.YAMLError as e:
        raise yaml_error(path, e) from None
    if not isinstance(raw, dict):
        raise FusechatError(f"{path}: a recipe is a YAML mapping of keys to values")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise FusechatError(f"{path}: {_loc(first['loc'])}: {_message(first)}{more}") from None
    return recipe, path.resolve().parent


def check_data_files(recipe: Recipe, base: Path, recipe_path: str | os.PathLike) -> None:
    """Refuse a data file that does not exist, naming its key, before any stage runs (a dry run included)."""
    for part in ("train", "heldout"):
        for i, spec in enumerate(getattr(recipe.data, part)):
            if spec.kind == "file" and not (base / str(spec.path)).exists():  # a file or a saved `datasets` dir
                raise FusechatError(f"{recipe_path}: data.{part}[{i}].path: {base / str(spec.path)} is not a file")
