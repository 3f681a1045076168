"""Per-tensor parameter values: filters, gradients over layers, and precedence, as mergekit defines them.

A parameter is a scalar, a gradient (a list interpolated over the layers), or a list of `{filter, value}`
entries where the first filter that is a substring of the tensor name (or absent, or "*") wins. A model's own
setting beats the top-level one; a setting that matches nothing falls through to the next, then the default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Scalar = bool | int | float | str

_LAYER = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


class ConfigProblem(ValueError):
    """A bad config value at `path` (relative to where it was found), with a message saying the fix."""

    def __init__(self, path: str, message: str) -> None:
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}" if path else message)


@dataclass(frozen=True)
class Conditional:
    """One `{filter, value}` entry; `value` is a scalar or a gradient (tuple of scalars)."""

    filter: str | None
    value: Scalar | tuple[Scalar, ...]


Setting = tuple[Conditional, ...]  # the normal form of every parameter setting


def normalise_setting(raw: Any, where: str) -> Setting:
    """Parse a YAML parameter value into its normal form, or raise ConfigProblem naming `where`."""
    if isinstance(raw, Scalar):
        return (Conditional(None, raw),)
    if isinstance(raw, Mapping):
        return (_conditional(raw, where),)
    if isinstance(raw, list):
        if all(isinstance(v, Scalar) for v in raw):
            if not raw:
                return ()
            return (Conditional(None, tuple(raw)),)
        if all(isinstance(v, Mapping) for v in raw):
            return tuple(_conditional(v, f"{where}[{i}]") for i, v in enumerate(raw))
    raise ConfigProblem(
        where,
        f"expected a number, a list of numbers (a gradient) or a list of {{filter, value}}, got {raw!r}",
    )


def _conditional(raw: Mapping, where: str) -> Conditional:
    unknown = set(raw) - {"filter", "value"}
    if unknown:
        raise ConfigProblem(f"{where}.{sorted(unknown)[0]}", "unknown key; an entry has only 'filter' and 'value'")
    if "value" not in raw:
        raise ConfigProblem(where, "missing 'value'")
    value, flt = raw["value"], raw.get("filter")
    if flt is not None and not isinstance(flt, str):
        raise ConfigProblem(f"{where}.filter", f"must be a string (a substring of tensor names), got {flt!r}")
    if isinstance(value, list) and value and all(isinstance(v, Scalar) for v in value):
        return Conditional(flt, tuple(value))
    if isinstance(value, Scalar):
        return Conditional(flt, value)
    raise ConfigProblem(f"{where}.value", f"expected a number or a list of numbers, got {value!r}")


def scalars(setting: Setting) -> Iterable[Scalar]:
    """Every scalar a setting can take at a gradient's end points (interpolation stays between them)."""
    for cond in setting:
        yield from cond.value if isinstance(cond.value, tuple) else (cond.value,)


def evaluate(setting: Setting, tensor_name: str, t: float) -> Scalar | None:
    """The value of `setting` for a tensor at depth `t` in [0, 1], or None when no entry matches."""
    for cond in setting:
        if cond.filter is None or cond.filter == "*" or cond.filter in tensor_name:
            return _at(cond.value, t)
    return None


def _at(value: Scalar | tuple[Scalar, ...], t: float) -> Scalar:
    if not isinstance(value, tuple):
        return value
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not numeric:
        return value[int(t * (len(value) - 1))]
    scaled = t * (len(value) - 1)
    i0 = int(scaled)
    i1 = min(len(value) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * value[i0] + frac * value[i1]


def resolve(settings: Iterable[Mapping[str, Setting] | None], name: str, tensor_name: str, t: float) -> Any:
    """The first non-None value of parameter `name` in `settings` (highest precedence first), else None."""
    for scope in settings:
        if scope and name in scope:
            value = evaluate(scope[name], tensor_name, t)
            if value is not None:
                return value
    return None


def layer_index(tensor_name: str) -> int | None:
    """The layer a tensor belongs to: the first all-digit component of its name (`model.layers.3.mlp...`)."""
    match = _LAYER.search(tensor_name)
    return int(match.group(1)) if match else None


def layer_t(tensor_name: str, num_layers: int) -> float:
    """A tensor's depth for gradients: layer / (layers − 1); 1 for a one-layer model; 0 outside the layers."""
    index = layer_index(tensor_name)
    if index is None:
        return 0.0
    return index / (num_layers - 1) if num_layers > 1 else 1.0
