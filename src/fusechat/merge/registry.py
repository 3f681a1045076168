"""The one list of merge methods: each method's parameters (defaults, valid ranges), its reference torch
function, its compiled kernel, and the fixed options it passes them; everything else is derived from it.

The config loader validates against these specs (a typo or an out-of-range value fails at load time), the
engine dispatches through them (`reference` and `kernel` name functions as "module:attribute", resolved on
first use, so listing and validating methods never imports torch or numba), and the recipe's choices, the
weighted-method set and the command's help are read from `METHODS`. Adding a method is one entry here, plus
its pure tensor function in `methods/` and, when it is a new family, its adapter in `torch_path.py` and
(optionally, for speed) its kernel driver in `fast/run.py`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fusechat.merge.methods.rules import Granularity, Sparsify, Variation

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One parameter: its type, default (or REQUIRED), and a check returning a problem or None."""

    name: str
    type: type
    default: Any = REQUIRED
    check: Callable[[Any], str | None] | None = None
    help: str = ""


def _resolve(ref: str) -> Callable[..., Any]:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class MethodSpec:
    """One merge method: what a config may say to it, and the functions that compute it."""

    name: str
    reference: str  # "module:function": the torch function, fn(job, **options) -> (tensor, weights | None)
    kernel: str | None = None  # "module:function": the compiled path, fn(job, flat_out, **options) -> weights
    options: Mapping[str, Any] = field(default_factory=dict)  # fixed per method: how a family's member differs
    shared: tuple[Param, ...] = ()
    per_model: tuple[Param, ...] = ()
    base_required: bool = True
    min_models: int = 1  # merged inputs besides the base
    max_models: int | None = None
    fp32_like_mergekit: bool = True  # mergekit computes this one in fp32 whatever `dtype:` says
    summary: str = ""

    @property
    def weighted(self) -> bool:
        """Whether each merged model takes a weight (a recipe gives equal weights unless told otherwise)."""
        return any(p.name == "weight" for p in self.per_model)

    def torch_function(self) -> Callable[..., Any]:
        return _resolve(self.reference)

    def kernel_function(self) -> Callable[..., Any] | None:
        return _resolve(self.kernel) if self.kernel else None

    def param(self, name: str) -> Param | None:
        for p in self.shared + self.per_model:
            if p.name == name:
                return p
        return None


def _in_unit_open_closed(v: Any) -> str | None:
    return None if 0 < v <= 1 else f"must be in (0, 1], got {v}"


def _in_unit_closed(v: Any) -> str | None:
    return None if 0 <= v <= 1 else f"must be in [0, 1], got {v}"


def _choice(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else f"must be one of {', '.join(options)}, got {v!r}"


WEIGHT = Param("weight", float, help="the model's weight")
DENSITY = Param("density", float, 1.0, _in_unit_open_closed, "fraction of the task vector kept")
NORMALIZE_ON = Param("normalize", bool, True, help="divide by the sum of weights")
NORMALIZE_OFF = Param("normalize", bool, False, help="divide by the sum of weights")
LAMBDA = Param("lambda", float, 1.0, help="scale of the merged task vector")
INT8_MASK = Param("int8_mask", bool, False, help="mergekit memory option; accepted, no effect here")


def _rescale(default: bool) -> Param:
    return Param("rescale", bool, default, help="restore each pruned task vector's L1 norm")


_GTA_SHARED = (INT8_MASK, LAMBDA)
_TORCH = "fusechat.merge.torch_path:"
_FAST = "fusechat.merge.fast.run:"


def _gta(name: str, sparsify: Sparsify, sign_election: bool, **spec: Any) -> MethodSpec:
    """A member of the task-vector family (task arithmetic, TIES, DARE): one function, two options."""
    options = {"sparsify": sparsify, "sign_election": sign_election}
    return MethodSpec(name, _TORCH + "gta", _FAST + "gta", options, fp32_like_mergekit=False, **spec)


METHODS: Mapping[str, MethodSpec] = {
    "linear": MethodSpec(
        "linear",
        _TORCH + "linear",
        _FAST + "linear",
        shared=(NORMALIZE_ON,),
        per_model=(WEIGHT,),
        base_required=False,
        summary="weighted average of all inputs (the base too, when given)",
    ),
    "slerp": MethodSpec(
        "slerp",
        _TORCH + "slerp",
        _FAST + "slerp",
        shared=(Param("t", float, REQUIRED, _in_unit_closed, "0 gives the base, 1 the other model"),),
        min_models=1,
        max_models=1,
        summary="spherical interpolation between the base and one other model",
    ),
    "task_arithmetic": _gta(
        "task_arithmetic",
        Sparsify.NONE,
        False,
        shared=(*_GTA_SHARED, NORMALIZE_OFF, _rescale(False)),
        per_model=(WEIGHT,),
        summary="base + Σ wᵢ(xᵢ − base)",
    ),
    "ties": _gta(
        "ties",
        Sparsify.MAGNITUDE,
        True,
        shared=(*_GTA_SHARED, NORMALIZE_ON, _rescale(False)),
        per_model=(WEIGHT, DENSITY),
        summary="task vectors pruned by magnitude, majority sign elected",
    ),
    "dare_linear": _gta(
        "dare_linear",
        Sparsify.RANDOM,
        False,
        shared=(*_GTA_SHARED, NORMALIZE_OFF, _rescale(True)),
        per_model=(WEIGHT, DENSITY),
        summary="task vectors pruned at random and rescaled",
    ),
    "dare_ties": _gta(
        "dare_ties",
        Sparsify.RANDOM,
        True,
        shared=(*_GTA_SHARED, NORMALIZE_OFF, _rescale(True)),
        per_model=(WEIGHT, DENSITY),
        summary="task vectors pruned at random and rescaled, majority sign elected",
    ),
    "sce": MethodSpec(
        "sce",
        _TORCH + "sce",
        _FAST + "sce",
        shared=(INT8_MASK, Param("select_topk", float, 1.0, _in_unit_closed, "fraction of entries selected")),
        fp32_like_mergekit=False,
        summary="select by variance, weights from energy, erase minority signs",
    ),
    "varm": MethodSpec(
        "varm",
        _TORCH + "varm",
        _FAST + "varm",
        shared=(
            Param("granularity", str, "matrix", _choice(tuple(g.value for g in Granularity)), "weight groups"),
            Param("variation", str, "squared", _choice(tuple(v.value for v in Variation)), "mean Δ² or |Δ|"),
        ),
        summary="FuseChat's variation-ratio merge of targets fine-tuned from the base (the pivot)",
    ),
}


NAMES: tuple[str, ...] = tuple(METHODS)
WEIGHTED: tuple[str, ...] = tuple(name for name, spec in METHODS.items() if spec.weighted)
