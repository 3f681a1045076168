"""The typed job of one output tensor: what the engine hands a merge method, and nothing about files.

The engine fills one with the raw arrays it read (numpy, in their file dtypes, with their safetensors codes);
the torch path turns it into one of float tensors for the method's reference function, and the compiled path
reads the arrays as they are. Both see the same names, parameters, seed and (coarse VaRM) group weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class TensorJob:
    """One output tensor's merge.

    `base` and `inputs`: numpy arrays as read (with `codes`, base first) or float tensors (torch path);
    `inputs` are the merged models in config order (the base among them for methods without a base).
    """

    name: str
    base: Any
    inputs: list[Any]
    shared: dict[str, Any]
    per_model: list[dict[str, Any]]
    seed: int = 0
    group_weights: list[float] | None = None  # coarse VaRM: the weights of this tensor's group
    codes: Sequence[str] = ()  # safetensors dtype codes of base (when given) and inputs
    consume: bool = False  # the caller gives up `inputs`: a method may reuse their buffers
