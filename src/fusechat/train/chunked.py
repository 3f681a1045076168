"""The per-chunk arithmetic of the fusion loss, arranged so each chunk of logits is read and written few times.

`fusion_loss` (loss.py) walks the supervised positions in chunks; this module holds what it does with one
chunk: the logits matmul, the softmax statistics, both loss terms and the gradient with respect to the logits,
and how big a chunk may be. Two sizes matter on a GPU:

- a *chunk* of rows shares the two gradient matmuls (hidden and weight). Its gradient `G` (rows x vocabulary)
  is kept in the matmul dtype (bf16 under bf16 training), so a large chunk is cheap and the weight gradient is
  accumulated over few chunks;
- a *piece* of a chunk is where fp32 logits exist: the logits matmul writes fp32 (cuBLAS accumulates in fp32
  anyway), the statistics and the gradient are computed in place on that buffer, and the result is written to
  `G` in one cast. In full precision the piece *is* its slice of `G`.

The gradient of lam*CLM + (1-lam)*fusion with respect to the logits is, at almost every position, the softmax
times a per-row factor; only the gold token and the target's kept ids differ. So the dense work is: max,
subtract, exp, sum, multiply-and-cast (five passes over fp32 logits, no temporaries at temperature 1 without
soft-capping), and the few sparse positions per row get their exact value written over the bulk one, computed
in fp32 from the gathered logits (a gold token predicted with p ~ 1 keeps its small p - 1 exactly).
"""

from __future__ import annotations

import torch

# Memory for one chunk's buffers where no device memory figure applies (CPU): 32 MiB, 2**23 fp32 logits, the
# chunk this loss always used on CPU (measured there: larger chunks are not faster).
CPU_CHUNK_MEMORY = 32 << 20
# On CUDA the budget is a quarter of the head's own size (the loss must hold a head-sized gradient anyway, so
# its extra memory stays a fraction of that), at least this much (smaller matmuls waste the tensor cores) and
# at most a quarter of the memory free on the device.
CUDA_MIN_CHUNK_MEMORY = 64 << 20
# Share of the budget given to the fp32 piece when the gradient buffer is half precision.
PIECE_SHARE = 4


def chunk_memory_for(device: torch.device, vocab: int, hidden: int, mm_itemsize: int) -> int:
    """The default memory budget (bytes) for one chunk's buffers on `device`."""
    if device.type != "cuda":
        return CPU_CHUNK_MEMORY
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # cached, reusable
    return int(min(max(vocab * hidden * mm_itemsize // 4, CUDA_MIN_CHUNK_MEMORY), max(free // 4, 1 << 20)))


def chunk_rows(budget: int, vocab: int, mm_dtype: torch.dtype) -> tuple[int, int]:
    """(rows per chunk, rows per fp32 piece) within `budget` bytes: the gradient buffer (chunk x vocabulary in
    the matmul dtype) plus one fp32 piece (a 1/PIECE_SHARE share of the budget when the two are apart)."""
    size = torch.empty((), dtype=mm_dtype).element_size()
    if size >= 4:  # the piece is the gradient buffer itself
        rows = max(1, budget // (size * vocab))
        return rows, rows
    piece = max(1, budget // (PIECE_SHARE * 4 * vocab))
    return max(piece, (budget - 4 * vocab * piece) // (size * vocab)), piece


def logits_fp32(h: torch.Tensor, w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """h @ w.T with fp32 (or fp64) output. Half inputs on CUDA: the fp32-output GEMM (fp32 accumulation, no
    rounding of the logits to half). Elsewhere the same numbers from upcast operands (products of halves are
    exact in fp32): `w` may be given upcast already (`weight_for_logits`)."""
    if h.dtype.itemsize >= 4:
        return torch.mm(h, w.t(), out=out)
    z = None
    if h.is_cuda and w.dtype == h.dtype:
        try:
            z = torch.mm(h, w.t(), out_dtype=torch.float32)
        except TypeError:  # torch before 2.8 has no out_dtype
            z = None
    if z is None:
        z = torch.mm(h.float(), w.t().float())
    return z if out is None else out.copy_(z)


def weight_for_logits(w: torch.Tensor) -> torch.Tensor:
    """The head as `logits_fp32` wants it: as is where the device has an fp32-output half GEMM (CUDA) or the
    head is full precision, else upcast once per call rather than once per piece."""
    return w if w.is_cuda or w.dtype.itemsize >= 4 else w.float()


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
    """Per-position CLM and fusion losses of one piece; its gradient d(loss)/d(pre-scale logits) into `out`.

    `z` (c, V) fp32 logits before scale and soft-cap, overwritten; `labels` (c,); `ids` (c, k) with every
    padding entry pointing at a kept id of its row (or 0 in a row with none), `valid` (c, k) false for padding
    (where q is 0); `q` (c, k), `q_tail` (c,) or None. `cfg` = (lam, temperature, scale, softcap, coef) where
    coef multiplies the gradient (1 / normalizer). `out` (c, V) receives the gradient (None: no gradient).
    Returns clm (c,), fuse (c,).
    """
    lam, temp, scale, cap, coef = cfg
    c = z.shape[0]
    fusing = lam < 1 and q is not None
    if scale != 1.0:
        z.mul_(scale)
    t = None
    if cap is not None:
        z.div_(cap).tanh_()
        t = z.clone() if out is not None else None  # tanh, for the cap's derivative 1 - tanh^2
        z.mul_(cap)
    idx = labels[:, None] if ids is None else torch.cat([labels[:, None], ids], dim=1)  # the sparse positions
    z_at = z.gather(1, idx)
    m = z.amax(dim=1, keepdim=True)
    z.sub_(m)
    e_t = s_t = None
    if fusing and temp != 1.0:
        e_t = z.div(temp).exp_()
        s_t = e_t.sum(dim=1)
    e = z.exp_()
    s = e.sum(dim=1)
    lse = m.squeeze(1) + s.log()
    logp_at = z_at - lse[:, None]
    zero = torch.zeros(c, dtype=z.dtype, device=z.device)
    clm = -logp_at[:, 0] if lam > 0 else zero
    fuse, w, q_total, tail_share = zero, 0.0, zero, zero
    logp_t_at = logp_at
    if fusing:
        if e_t is not None:
            logp_t_at = z_at / temp - (m.squeeze(1) / temp + s_t.log())[:, None]
        fuse = -(q * logp_t_at[:, 1:]).masked_fill(q == 0, 0.0).sum(dim=-1)
        w = (1.0 - lam) / temp
        q_total = q.sum(dim=-1)  # 1, or 0 for a row of padding only (no fusion term)
        if q_tail is not None:
            # The tail bucket, every id outside the kept set: its mass is summed with the kept entries zeroed
            # (a row without kept ids writes its own values back). Summing the rest directly, not 1 - kept,
            # keeps a small tail exact. (A tail whose every logit is > 87 below the row's max underflows to 0
            # and is treated as empty.)
            any_kept = valid.any(dim=1, keepdim=True)
            e.scatter_(1, ids, torch.where(any_kept, 0.0, e.gather(1, ids)))
            rest = e.sum(dim=1)
            has_tail = (q_tail > 0) & (rest > 0)
            q_tail = torch.where(has_tail, q_tail, zero)
            log_tail = torch.where(has_tail, rest.log() - s.log(), zero)  # log P(tail)
            fuse = fuse - q_tail * log_tail
            q_total = q_total + q_tail
            # d/dz_j of -q_tail log P_tail is -q_tail p_j / P_tail for j in the tail
            tail_share = w * q_tail * torch.exp(-log_tail)
    if out is None:
        return clm, fuse
    # The bulk: the gradient at every position outside idx, a row factor times the softmax (T = 1) or a sum
    # of two (T != 1); d/dz of -sum q log softmax(z/T) is (p_T * sum(q) - q) / T, sum(q) with the tail's mass.
    if e_t is None:
        factor = ((lam + w * q_total - tail_share) * coef / s)[:, None]
        if t is None and out is not e:
            torch.mul(e, factor, out=out)  # scale and cast in one pass
        else:
            e.mul_(factor)
    else:
        e.mul_((lam * coef / s)[:, None]).add_(e_t.mul_((w * q_total * coef / s_t)[:, None]))
    if t is not None:
        e.mul_(t.mul_(t).neg_().add_(1.0))
    if out is not e and not (e_t is None and t is None):
        out.copy_(e)
    # The sparse positions, exactly: the same formula, in fp32, from the gathered logits.
    p_at = logp_at.exp()
    p_t_at = p_at if e_t is None else logp_t_at.exp()
    val = lam * (p_at - (idx == labels[:, None]).to(z.dtype))
    if fusing:
        same = idx[:, :, None] == ids[:, None, :]  # (c, 1+k, k): entry e's position is the kept id j
        hit = same & valid[:, None, :]
        kept = hit.any(dim=-1)
        sum_q = (hit.to(z.dtype) * q[:, None, :]).sum(dim=-1)
        val = val + w * (q_total[:, None] * p_t_at - sum_q)
        val = val - tail_share[:, None] * p_t_at * (~kept).to(z.dtype)
    val = val * coef
    if cap is not None:
        val = val * (1.0 - (z_at / cap) ** 2)
    out.scatter_(1, idx, val.to(out.dtype))
    return clm, fuse
