"""Tensor dtypes of the merge engine as safetensors codes over numpy arrays, so a merge need not import torch.

Importing torch took about as long as reading the inputs of a 500M merge (docs/benchmarks.md), before a byte
was read. The engine's fast path (reading, the compiled kernels, writing) runs on numpy arrays:
a tensor is an array plus its safetensors dtype code, bf16 held as its raw uint16 bits. Conversions between
float dtypes round to nearest even as torch does; anything involving float64 goes through torch (imported
then), so the rare float64 checkpoint gives torch's exact result. `to_torch`/`from_torch` bridge to the torch
functions of `methods/` for what the kernels do not cover.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NUMPY = {  # how each code's bytes are held (bf16: its bits)
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(np.uint16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
FLOATING = frozenset({"F64", "F32", "F16", "BF16"})
BY_NAME = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16"}  # config `dtype:` values
NAMES = {code: name for name, code in BY_NAME.items()}
TORCH_NAMES = {**NAMES, "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def code_of(name: str | None) -> str | None:
    """The code of a config dtype name (`bfloat16` → `BF16`); None stays None."""
    return None if name is None else BY_NAME[name]


def itemsize(code: str) -> int:
    return NUMPY[code].itemsize


def view(raw: np.ndarray, code: str, shape: tuple[int, ...]) -> np.ndarray:
    """A uint8 buffer's bytes as the tensor (code, shape): a view, no copy."""
    return raw.view(NUMPY[code]).reshape(shape)


def to_float32(a: np.ndarray, code: str) -> np.ndarray:
    """The values as float32 (exact for bf16 and fp16; float32 is returned as is)."""
    if code == "F32":
        return a
    if code == "BF16":
        return (a.astype(np.uint32) << np.uint32(16)).view(np.float32)
    if code == "F16":
        return a.astype(np.float32)
    raise ValueError(f"to_float32: {code}")


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 → bf16 bits, round to nearest even, NaN kept quiet (as the kernels' `to_bf16`)."""
    bits = x.view(np.uint32)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
    quiet = (bits >> np.uint32(16)) | np.uint32(0x40)
    return np.where(nan, quiet, rounded).astype(np.uint16)


def convert(a: np.ndarray, code: str, to: str) -> np.ndarray:
    """Float values from `code` to `to`, rounded to nearest even (one rounding, as torch's `.to`)."""
    if code == to:
        return a
    if "F64" in (code, to):
        return from_torch(to_torch(a, code).to(_torch_dtype(to)))[0]
    x = to_float32(a, code)  # exact: bf16 and fp16 are subsets of float32
    if to == "F32":
        return x
    if to == "BF16":
        return bf16_bits(x)
    with np.errstate(over="ignore"):  # beyond fp16's range: inf, as torch gives
        return x.astype(np.float16)


def to_torch(a: np.ndarray, code: str) -> Any:
    """The array as a torch tensor sharing its memory (imports torch)."""
    import torch

    if code == "BF16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def from_torch(t: Any) -> tuple[np.ndarray, str]:
    """A torch tensor as (array sharing its memory when contiguous, code)."""
    import torch

    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16), "BF16"
    code = next(c for c, name in TORCH_NAMES.items() if getattr(torch, name) == t.dtype)
    return t.numpy(), code


def _torch_dtype(code: str) -> Any:
    import torch

    return getattr(torch, TORCH_NAMES[code])
