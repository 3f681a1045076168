"""Scalar building blocks of the compiled merge kernels: float bits, bf16 widening and rounding, FMA, a hash.

The kernels read bf16 tensors as their raw uint16 bits and widen them with a shift, so no fp32 copy of an
input is ever made; `load` and `store` pick the conversion from the array's dtype at compile time (uint16 =
bf16 bits, float32 as is). Rounding to bf16 is round-to-nearest-even with NaN kept quiet, as torch does.
`fma` is the fused multiply-add torch's vectorised `add_(x, alpha=w)` uses, so results match it bit for bit.
Imported only by the kernel modules (numba is imported lazily, never when fusechat is).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

ABS_MASK = np.uint32(0x7FFFFFFF)
MASK32 = np.uint64(0xFFFFFFFF)


@intrinsic
def f32_bits(typingctx, x):  # pragma: no cover - compiled
    """The IEEE bits of a float32 as uint32 (a bitcast, no memory round trip)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def bits_f32(typingctx, x):  # pragma: no cover - compiled
    """The float32 whose IEEE bits are the low 32 bits of the unsigned integer `x`."""
    if not isinstance(x, types.Integer) or x.signed or x.bitwidth < 32:
        return None

    def codegen(context, builder, signature, args):
        value = args[0] if x.bitwidth == 32 else builder.trunc(args[0], ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(x), codegen


@intrinsic
def fma(typingctx, a, b, c):  # pragma: no cover - compiled
    """a·b + c in float32 with one rounding (llvm.fma.f32)."""
    if not (a == types.float32 and b == types.float32 and c == types.float32):
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
        return builder.call(fn, args)

    return types.float32(types.float32, types.float32, types.float32), codegen


def load(a, j):  # pragma: no cover - replaced by the overload below in compiled code
    raise NotImplementedError


@overload(load, inline="always")
def _load(a, j):  # pragma: no cover - compiled
    if a.dtype == types.uint16:
        return lambda a, j: bits_f32(np.uint32(a[j]) << np.uint32(16))
    if a.dtype == types.float32:
        return lambda a, j: a[j]
    return None


@njit(inline="always")
def to_bf16(v):  # pragma: no cover - compiled
    """float32 → bf16 bits (uint16), round to nearest even; NaN stays NaN."""
    bits = f32_bits(v)
    if (bits & ABS_MASK) > np.uint32(0x7F800000):
        return np.uint16((bits >> np.uint32(16)) | np.uint32(0x40))
    bias = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return np.uint16((bits + bias) >> np.uint32(16))


def store(out, j, v):  # pragma: no cover - replaced by the overload below in compiled code
    raise NotImplementedError


@overload(store, inline="always")
def _store(out, j, v):  # pragma: no cover - compiled
    if out.dtype == types.uint16:

        def impl(out, j, v):
            out[j] = to_bf16(v)

        return impl
    if out.dtype == types.float32:

        def impl(out, j, v):
            out[j] = v

        return impl
    return None


@njit(inline="always")
def mix32(x):  # pragma: no cover - compiled
    """A 32-bit integer hash (x < 2³² in a uint64; result < 2³²), the same as `sparsify._mix32` in torch."""
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & MASK32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & MASK32
    x ^= x >> np.uint64(16)
    return x


@njit(inline="always")
def element_hash(j, k0, k1):  # pragma: no cover - compiled
    """DARE's per-entry draw in [0, 2³²): a hash of the flat index `j` under the tensor's key (k0, k1)."""
    u = np.uint64(j)
    h = mix32((u & MASK32) ^ k0)
    return mix32(h ^ (u >> np.uint64(32)) ^ k1)
