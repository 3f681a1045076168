"""The one list of merge methods: their parameters (defaults, valid ranges) and how the engine calls them.

Adding a method means writing its pure tensor function in `methods/`, its adapter in `torch_path.py` (and,
for speed, a kernel in `fast/`), and one entry in `METHODS` below; the config loader validates parameters
against these specs, so a typo or an out-of-range value fails at load time. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fusechat.merge.methods.rules import Granularity, Variation

if TYPE_CHECKING:
    import torch

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One parameter: its type, default (or REQUIRED), and a check returning a problem or None."""

    name: str
    type: type
    default: Any = REQUIRED
    check: Callable[[Any], str | None] | None = None
    help: str = ""


@dataclass
class TensorJob:
    """What a method sees for one output tensor: tensors and resolved parameters, no files."""

    name: str
    base: torch.Tensor | None
    inputs: list[torch.Tensor]  # the merged inputs in config order (the base too, for methods without a base)
    shared: dict[str, Any]
    per_model: list[dict[str, Any]]
    seed: int = 0
    group_weights: list[float] | None = None  # coarse VaRM: the weights of this tensor's group
    consume: bool = False  # the engine gives up `inputs`: methods may reuse their buffers


@dataclass(frozen=True)
class MethodSpec:
    name: str
    shared: tuple[Param, ...] = ()
    per_model: tuple[Param, ...] = ()
    base_required: bool = True
    min_models: int = 1  # merged inputs besides the base
    max_models: int | None = None
    fp32_like_mergekit: bool = True  # mergekit computes this one in fp32 whatever `dtype:` says
    summary: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    def merge(self, job: TensorJob) -> tuple[torch.Tensor, list[float] | None]:
        """Run the method's torch function (`merge/torch_path.py`; imports torch) on one tensor's job."""
        from fusechat.merge.torch_path import FUNCTIONS

        return FUNCTIONS[self.name](job)

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

METHODS: Mapping[str, MethodSpec] = {
    "linear": MethodSpec(
        "linear",
        shared=(NORMALIZE_ON,),
        per_model=(WEIGHT,),
        base_required=False,
        summary="weighted average of all inputs (the base too, when given)",
    ),
    "slerp": MethodSpec(
        "slerp",
        shared=(Param("t", float, REQUIRED, _in_unit_closed, "0 gives the base, 1 the other model"),),
        min_models=1,
        max_models=1,
        summary="spherical interpolation between the base and one other model",
    ),
    "task_arithmetic": MethodSpec(
        "task_arithmetic",
        shared=(*_GTA_SHARED, NORMALIZE_OFF, _rescale(False)),
        per_model=(WEIGHT,),
        fp32_like_mergekit=False,
        summary="base + Σ wᵢ(xᵢ − base)",
    ),
    "ties": MethodSpec(
        "ties",
        shared=(*_GTA_SHARED, NORMALIZE_ON, _rescale(False)),
        per_model=(WEIGHT, DENSITY),
        fp32_like_mergekit=False,
        summary="task vectors pruned by magnitude, majority sign elected",
    ),
    "dare_linear": MethodSpec(
        "dare_linear",
        shared=(*_GTA_SHARED, NORMALIZE_OFF, _rescale(True)),
        per_model=(WEIGHT, DENSITY),
        fp32_like_mergekit=False,
        summary="task vectors pruned at random and rescaled",
    ),
    "dare_ties": MethodSpec(
        "dare_ties",
        shared=(*_GTA_SHARED, NORMALIZE_OFF, _rescale(True)),
        per_model=(WEIGHT, DENSITY),
        fp32_like_mergekit=False,
        summary="task vectors pruned at random and rescaled, majority sign elected",
    ),
    "sce": MethodSpec(
        "sce",
        shared=(INT8_MASK, Param("select_topk", float, 1.0, _in_unit_closed, "fraction of entries selected")),
        fp32_like_mergekit=False,
        summary="select by variance, weights from energy, erase minority signs",
    ),
    "varm": MethodSpec(
        "varm",
        shared=(
            Param("granularity", str, "matrix", _choice(tuple(g.value for g in Granularity)), "weight groups"),
            Param("variation", str, "squared", _choice(tuple(v.value for v in Variation)), "mean Δ² or |Δ|"),
        ),
        summary="FuseChat's variation-ratio merge of targets fine-tuned from the base (the pivot)",
    ),
}


def get_method(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown merge_method {name!r}; known: {', '.join(METHODS)}") from None
