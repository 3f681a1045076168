"""One piece's elementwise work as a single pure function that `torch.compile` fuses (the `loss_kernel` option).

Why: `chunked.piece_loss_and_grad` runs the softmax statistics and the gradient as separate eager passes over
the fp32 logits (max, subtract, exp, sum, multiply-and-cast: about 34 bytes of memory traffic a logit). Written
without in-place steps, inductor (Triton on CUDA, C++/OpenMP on CPU) turns the same arithmetic into row
reductions and one pointwise pass that recomputes exp(z - max) and writes the gradient in its final dtype
(bf16 under bf16 training) straight into the chunk's gradient buffer: on CUDA no fp32 temporary beyond the
logits (inductor's CPU code keeps exp(z - max) in one piece-sized buffer; docs/benchmarks.md has the figures).

The few sparse positions per row (the gold token, the kept target ids) are computed here too, exactly as the
eager function does, and written over the bulk value by one eager `scatter_` afterwards. The eager function
stays the reference (tests compare the two) and the fallback: a compilation that fails at run time (no C++
compiler, no Triton, an unsupported torch) logs one warning line and the process carries on eagerly.

Compiled once per process: one `torch.compile` object, dynamic in the number of rows (the last piece of a
chunk and the last chunk are smaller) so a new piece size does not recompile; Python-level options (temperature
other than 1, soft-cap, tail bucket, fusing or CLM-only, gradient wanted or not) each select a graph of their
own, at most a handful per run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

import torch

from fusechat.train import chunked

log = logging.getLogger(__name__)

KERNELS = ("auto", "compiled", "eager")

# Graphs one process may compile for this function: one per combination of options and dtypes (a dozen in the
# tests, one or two in a training run). torch's default (8) counts per code object; past it, fullgraph
# compilation fails and the process would go eager.
RECOMPILE_LIMIT = 64

# How the graph sees its inputs: floats as values, not constants (the gradient's factor 1 / normalizer changes
# every batch; torch's default in recent versions, set for older ones); no equality assumed between sizes that
# happened to be equal at the first call (the row count and k); no special case for 0 or 1 (a 1-row piece, the
# first piece's zero offset into the chunk's gradient): one graph for every batch, piece size and position. Set
# around each call only (a process's other compiled code keeps torch's defaults). The limit has two names
# across torch versions.
_CONFIG = (
    (torch._dynamo.config, "cache_size_limit", RECOMPILE_LIMIT),
    (torch._dynamo.config, "recompile_limit", RECOMPILE_LIMIT),
    (torch._dynamo.config, "specialize_float", False),
    (torch.fx.experimental._config, "use_duck_shape", False),
    (torch.fx.experimental._config, "backed_size_oblivious", True),
)

_lock = threading.Lock()
_compiled: Callable | None = None
_failed = False
_seen: set[tuple] = set()  # graphs already compiled (by what selects them): called without the settings above


def _terms(z, labels, ids, valid, q, q_tail, out, lam, temp, scale, cap, coef, fusing, tail, grad, inplace):
    """The piece's arithmetic without in-place steps (see `chunked.piece_loss_and_grad` for the meaning):
    returns (clm, fuse, val), `val` the exact gradient at the sparse positions (gold first, then `ids`), and
    writes the bulk gradient into `out` (into `z` itself when `inplace`). Branches are on Python flags only,
    so each combination is one graph."""
    zc = z * scale if scale != 1.0 else z
    if cap is not None:
        zc = torch.tanh(zc / cap) * cap
    idx = labels[:, None] if ids is None else torch.cat([labels[:, None], ids], dim=1)
    z_at = zc.gather(1, idx)
    m = zc.amax(dim=1, keepdim=True)
    e = torch.exp(zc - m)  # never stored: inductor recomputes it in each pass that reads it
    s = e.sum(dim=1)
    lse = m.squeeze(1) + s.log()
    logp_at = z_at - lse[:, None]
    zero = torch.zeros_like(s)
    clm = -logp_at[:, 0] if lam > 0 else zero
    fuse, w, q_total, tail_share = zero, 0.0, zero, zero
    logp_t_at = logp_at
    tempered = fusing and temp != 1.0
    if tempered:
        s_t = torch.exp((zc - m) / temp).sum(dim=1)
        logp_t_at = z_at / temp - (m.squeeze(1) / temp + s_t.log())[:, None]
    if fusing:
        fuse = -(q * logp_t_at[:, 1:]).masked_fill(q == 0, 0.0).sum(dim=-1)
        w = (1.0 - lam) / temp
        q_total = q.sum(dim=-1)
        if tail:
            # The tail's mass summed directly (exact when small), over a mask of the kept ids. Every entry
            # of a row with kept ids names a kept id, so one value per row (any kept) makes duplicates
            # harmless; a row without any keeps its whole mass.
            any_kept = valid.any(dim=1, keepdim=True)
            kept_mask = torch.zeros_like(zc, dtype=torch.bool).scatter(1, ids, any_kept.expand_as(ids))
            rest = torch.where(kept_mask, 0.0, e).sum(dim=1)
            has_tail = (q_tail > 0) & (rest > 0)
            q_tail = torch.where(has_tail, q_tail, zero)
            log_tail = torch.where(has_tail, rest.log() - s.log(), zero)
            fuse = fuse - q_tail * log_tail
            q_total = q_total + q_tail
            tail_share = w * q_tail * torch.exp(-log_tail)
    if not grad:
        return clm, fuse, None
    if tempered:
        bulk = e * (lam * coef / s)[:, None] + torch.exp((zc - m) / temp) * (w * q_total * coef / s_t)[:, None]
    else:
        bulk = e * ((lam + w * q_total - tail_share) * coef / s)[:, None]
    if cap is not None:
        t = torch.tanh((z * scale if scale != 1.0 else z) / cap)
        bulk = bulk * (1.0 - t * t)
    (z if inplace else out).copy_(bulk)
    p_at = logp_at.exp()
    p_t_at = logp_t_at.exp() if tempered else p_at
    val = lam * (p_at - (idx == labels[:, None]).to(z.dtype))
    if fusing:
        hit = (idx[:, :, None] == ids[:, None, :]) & valid[:, None, :]
        kept = hit.any(dim=-1)
        sum_q = (hit.to(z.dtype) * q[:, None, :]).sum(dim=-1)
        val = val + w * (q_total[:, None] * p_t_at - sum_q)
        val = val - tail_share[:, None] * p_t_at * (~kept).to(z.dtype)
    val = val * coef
    if cap is not None:
        val = val * (1.0 - (z_at / cap) ** 2)
    return clm, fuse, val


@contextlib.contextmanager
def _configured() -> Iterator[None]:
    # Plain attribute swaps: torch's config.patch costs tens of microseconds, paid on every piece.
    # A torch without one of these settings just compiles a few more graphs.
    known = [(module, key, value) for module, key, value in _CONFIG if hasattr(module, key)]
    old = [getattr(module, key) for module, key, _ in known]
    try:
        for module, key, value in known:
            setattr(module, key, value)
        yield
    finally:
        for (module, key, _), value in reversed(list(zip(known, old, strict=True))):
            setattr(module, key, value)


def _compile() -> Callable:
    # dynamic=True: the row count (and a view's offset into the chunk's gradient) are symbolic from the first
    # call, so the smaller last piece reuses the graph; fullgraph: a graph break would silently unfuse.
    return torch.compile(_terms, dynamic=True, fullgraph=True)


def _get() -> Callable:
    global _compiled
    with _lock:
        if _compiled is None:
            _compiled = _compile()
        return _compiled


def piece_loss_and_grad(
    z: torch.Tensor,
    labels: torch.Tensor,
    ids: torch.Tensor | None,
    valid: torch.Tensor | None,
    q: torch.Tensor | None,
    q_tail: torch.Tensor | None,
    cfg: tuple,
    out: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`chunked.piece_loss_and_grad` (same arguments and results), compiled; eager where compiling fails.
    Unlike the eager function it leaves `z` as it was unless `out` is `z` (full precision)."""
    global _failed
    if _failed:
        return chunked.piece_loss_and_grad(z, labels, ids, valid, q, q_tail, cfg, out)
    lam, temp, scale, cap, coef = cfg
    fusing = lam < 1 and q is not None
    tail = fusing and q_tail is not None
    inplace = out is z
    # What selects a graph (the branches of `_terms`, the dtypes, the device): once it is compiled, calls skip
    # swapping the settings, which costs more than the guards that check them.
    key = (fusing, tail, lam > 0, temp != 1.0, scale != 1.0, cap is None, out is not None, inplace, z.dtype)
    key += (z.device, None if out is None else out.dtype)
    try:
        with contextlib.nullcontext() if key in _seen else _configured():
            clm, fuse, val = _get()(
                z,
                labels,
                ids if fusing else None,
                valid if fusing else None,
                q if fusing else None,
                q_tail if tail else None,
                None if inplace else out,
                float(lam),
                float(temp),
                float(scale),
                None if cap is None else float(cap),
                float(coef),
                fusing,
                tail,
                out is not None,
                inplace,
            )
    except torch.OutOfMemoryError:
        raise
    except Exception as e:  # a compiler missing or refusing: this process goes on with the eager path
        with _lock:
            first = not _failed
            _failed = True
        if first:
            root: BaseException = e
            while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None:
                root = inner  # torch wraps the compiler's own error: name that one
            reason = (str(root).strip().splitlines() or [""])[0][:200]
            name = type(root).__name__
            log.warning("loss_kernel: torch.compile failed (%s: %s); the loss runs eagerly", name, reason)
        return chunked.piece_loss_and_grad(z, labels, ids, valid, q, q_tail, cfg, out)
    _seen.add(key)
    if out is not None:
        # Outside the graph on purpose: a scatter into the gradient inside it makes inductor write the whole bulk
        # to a buffer of its own, scatter there and copy that to `out` (seen in its generated code).
        idx = labels[:, None] if not fusing else torch.cat([labels[:, None], ids], dim=1)
        out.scatter_(1, idx, val.to(out.dtype))
    return clm, fuse


def use_compiled(kernel: str, device: torch.device) -> bool:
    """Whether `kernel` ("auto", "compiled", "eager") means the compiled piece on `device`. "auto": compiled
    on CUDA; eager on CPU (see docs/benchmarks.md for the CPU measurement behind that choice)."""
    if kernel not in KERNELS:
        raise ValueError(f"loss kernel must be one of {', '.join(KERNELS)}, not {kernel!r}")
    if kernel == "auto":
        return device.type == "cuda"
    return kernel == "compiled"


def failed() -> bool:
    """Whether compiling failed in this process (the loss then runs eagerly)."""
    return _failed


def compiled_in_use() -> bool:
    """Whether this process has run the compiled piece (since `reset`) without falling back to eager."""
    return _compiled is not None and not _failed


def reset() -> None:
    """Forget the compiled function and any failure (tests; a process normally compiles once)."""
    global _compiled, _failed
    with _lock:
        _compiled, _failed = None, False
        _seen.clear()
