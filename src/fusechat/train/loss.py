"""The fusion training loss, computed from hidden states in chunks so full logits never exist at once.

L = lam * L_CLM + (1 - lam) * L_fuse over supervised positions only, where L_CLM is the cross-entropy of the
gold next token and L_fuse = -sum_v q_v log p(v) against the sparse target: q is the target's top-k
probabilities renormalised over the kept entries (entries with id < 0 are padding and ignored), optionally
tempered, or, with `tail=True`, the kept probabilities as they are plus one bucket holding the rest of the
mass, matched against the student's probability of every token outside the kept set.

Why a custom autograd function: asking autograd to differentiate chunked logits keeps every chunk's logits
alive until backward, which is the full (positions, vocabulary) tensor again. Here each chunk's gradient with
respect to its logits is known in closed form (softmax minus target), so the forward pass turns it into
gradients for the hidden states and the output projection right away and drops the chunk. Peak memory is one
chunk of logits plus a gradient buffer the size of the projection, whatever the sequence length.

Precision: the three matmuls (logits, and the gradients for hidden and weight) run in the inputs' dtype, or
autocast's where autocast is on (bf16 on GPUs: tensor cores, fp32 accumulation); softmax statistics, both loss
terms and the gradient's elementwise work are fp32 (fp64 for fp64 inputs, exact against the dense reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fusechat.train import fused
from fusechat.train.chunked import (
    chunk_memory_for,
    chunk_rows,
    logits_fp32,
    piece_loss_and_grad,
    weight_for_logits,
)


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """Float32, or float64 when the inputs are float64 (softmax statistics are never taken in half
    precision)."""
    return torch.promote_types(t.dtype, torch.float32)


@dataclass(frozen=True)
class Head:
    """The output projection of a causal LM as data: logits = softcap(scale * (hidden @ weight.T + bias)).

    `weight` (V, H) and `bias` (V,) or None; `scale` multiplies the logits (1.0 for most models); `softcap` is
    the final logit soft-capping value c (logits = c * tanh(logits / c)) or None.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    scale: float = 1.0
    softcap: float | None = None

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 (or float64) logits (..., V) for hidden states (..., H); the plain, unchunked form."""
        z = torch.nn.functional.linear(hidden, self.weight, self.bias)
        z = z.to(compute_dtype(z))
        if self.scale != 1.0:
            z = z * self.scale
        if self.softcap is not None:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z


@dataclass(frozen=True)
class LossParts:
    """The loss and its parts (detached sums over the positions, for logging)."""

    loss: torch.Tensor
    clm_sum: torch.Tensor
    fuse_sum: torch.Tensor
    positions: int


def target_distribution(
    target_ids: torch.Tensor,
    target_logprobs: torch.Tensor,
    temperature: float = 1.0,
    tail: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target probabilities over the kept ids, and the tail bucket's mass.

    `target_ids` (N, k) with id < 0 marking padding; `target_logprobs` (N, k) log-probs over the full
    vocabulary. Without `tail`: q (N, k) = softmax(logprobs / temperature) over the valid entries, tail (N,)
    zeros. With `tail` (temperature 1 only): q = exp(logprobs) as stored and tail = 1 - sum(q), clamped at 0
    (fp16 rounding can push the kept mass a hair over 1, in which case q is rescaled to sum to 1). A row with
    no valid entry gets q = 0 everywhere: it contributes no fusion term.
    """
    valid = target_ids >= 0
    lp = target_logprobs.to(dtype).masked_fill(~valid, float("-inf"))
    any_valid = valid.any(dim=-1, keepdim=True)
    if not tail:
        q = torch.softmax(lp / temperature, dim=-1)
        q = torch.where(any_valid, q, torch.zeros_like(q))
        return q, torch.zeros(q.shape[0], dtype=q.dtype, device=q.device)
    q = lp.exp()
    mass = q.sum(dim=-1, keepdim=True)
    q = torch.where(mass > 1.0, q / mass, q)
    return q, (1.0 - mass.squeeze(-1)).clamp_min(0.0)


class _ChunkedFusionLoss(torch.autograd.Function):
    """Forward computes the loss and, chunk by chunk, its gradients; backward only scales them."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, ids, valid, q, q_tail, cfg):
        lam, normalizer = cfg[0], cfg[4]
        with torch.autocast(hidden.device.type, enabled=False):  # the dtypes below are chosen, not cast
            out = _chunks(hidden, weight, bias, labels, ids, valid, q, q_tail, cfg)
        grad_h, grad_w, grad_b, clm_sum, fuse_sum = out
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        loss = (lam * clm_sum + (1.0 - lam) * fuse_sum) / normalizer
        ctx.mark_non_differentiable(clm_sum, fuse_sum)
        return loss, clm_sum, fuse_sum

    @staticmethod
    def backward(ctx, grad_loss, _clm, _fuse):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        # The buffers are used once (no double backward), so they are scaled in place: no second copy of a
        # vocabulary-sized gradient. The usual upstream gradient is exactly 1 and needs no scaling at all.
        scale = None if bool(grad_loss == 1) else grad_loss
        out = []
        for g, dtype in ((grad_h, None), (grad_w, w_dtype), (grad_b, b_dtype)):
            if g is not None:
                if scale is not None:
                    g = g.mul_(scale.to(g.dtype))
                g = g if dtype is None else g.to(dtype)
            out.append(g)
        return (*out, None, None, None, None, None, None)


def _chunks(hidden, weight, bias, labels, ids, valid, q, q_tail, cfg):
    """The loss sums and the three gradients, chunk by chunk (chunked.py: a chunk and its pieces)."""
    lam, temperature, scale, softcap, normalizer, chunk, piece, mm_dtype, kernel = cfg
    n, vocab = hidden.shape[0], weight.shape[0]
    piece_fn = fused.piece_loss_and_grad if fused.use_compiled(kernel, hidden.device) else piece_loss_and_grad
    need = any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    stats = compute_dtype(hidden)
    w = weight.to(mm_dtype)  # a copy only when autocast asks for another dtype than the weight's
    w_logits = weight_for_logits(w)
    grad_h = torch.zeros_like(hidden) if hidden.requires_grad else None
    # Accumulated over chunks in the matmul dtype: one rounding per chunk (the GEMM adds in fp32).
    grad_w = torch.zeros_like(weight, dtype=mm_dtype) if weight.requires_grad else None
    grad_b = torch.zeros_like(bias, dtype=stats) if bias is not None and bias.requires_grad else None
    bias = None if bias is None else bias.to(stats)
    clm_sum = torch.zeros((), dtype=stats, device=hidden.device)
    fuse_sum = torch.zeros((), dtype=stats, device=hidden.device)
    piece_cfg = (lam, temperature, scale, softcap, scale / normalizer)
    with torch.no_grad():
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            h = hidden[s:e].to(mm_dtype)
            g = torch.empty(e - s, vocab, dtype=mm_dtype, device=hidden.device) if need else None
            for a in range(0, e - s, piece):
                b = min(e - s, a + piece)
                # In full precision the piece's logits are computed straight into its slice of the gradient.
                z = logits_fp32(h[a:b], w_logits, out=g[a:b] if g is not None and g.dtype == stats else None)
                if bias is not None:
                    z.add_(bias)
                rows = slice(s + a, s + b)
                clm, fuse = piece_fn(
                    z,
                    labels[rows],
                    None if ids is None else ids[rows],
                    None if valid is None else valid[rows],
                    None if q is None else q[rows],
                    None if q_tail is None else q_tail[rows],
                    piece_cfg,
                    None if g is None else (z if g.dtype == stats else g[a:b]),
                )
                clm_sum += clm.sum()
                fuse_sum += fuse.sum()
                del z
            if g is None:
                continue
            if grad_h is not None:
                if grad_h.dtype == mm_dtype:
                    torch.mm(g, w, out=grad_h[s:e])
                else:
                    grad_h[s:e] = torch.mm(g, w)
            if grad_w is not None:
                grad_w.addmm_(g.t(), h)
            if grad_b is not None:
                grad_b += g.sum(dim=0, dtype=stats)
    return grad_h, grad_w, grad_b, clm_sum, fuse_sum


def fusion_loss(
    hidden: torch.Tensor,
    head: Head,
    labels: torch.Tensor,
    target_ids: torch.Tensor | None = None,
    target_logprobs: torch.Tensor | None = None,
    lam: float = 0.9,
    temperature: float = 1.0,
    tail: bool = False,
    normalizer: float | torch.Tensor | None = None,
    chunk_size: int | None = None,
    chunk_memory: int | None = None,
    kernel: str = "auto",
) -> LossParts:
    """lam * CLM + (1 - lam) * fusion loss over supervised positions, summed and divided by `normalizer`.

    `hidden` (N, H) the final hidden states at the N supervised positions (already gathered: padding and
    unsupervised positions never reach the head); `labels` (N,) the gold next tokens; `target_ids` (N, k) int
    with id < 0 for padding, `target_logprobs` (N, k), both None when lam == 1. `normalizer` defaults to N (a
    mean); a trainer passes the number of supervised positions of the whole accumulated, multi-process batch
    instead. `chunk_memory` bytes for one chunk's buffers (default: 32 MiB on CPU; on CUDA a quarter of the
    head's size, within a quarter of the free device memory); `chunk_size` positions per chunk overrides it.
    `kernel` runs each piece's elementwise work "compiled" (torch.compile, fused.py), "eager", or "auto"
    (compiled on CUDA, eager on CPU); a compilation that fails falls back to eager with one warning.
    The fusion term uses softmax(z / T); it is not multiplied by T**2. Returns the loss (a scalar with
    gradients for hidden, head.weight, head.bias).
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if tail and temperature != 1.0:
        raise ValueError("the tail bucket needs temperature 1: a top-k target's tempered tail mass is unknown")
    n, (vocab, width) = hidden.shape[0], head.weight.shape
    ids = valid = q = q_tail = None
    if lam < 1.0:
        if target_ids is None or target_logprobs is None:
            raise ValueError("target_ids and target_logprobs are required when lam < 1")
        if target_ids.shape[0] != n or target_logprobs.shape != target_ids.shape:
            raise ValueError(f"targets {tuple(target_ids.shape)} do not match {n} positions")
        q, tail_mass = target_distribution(target_ids, target_logprobs, temperature, tail, compute_dtype(hidden))
        q_tail = tail_mass if tail else None
        valid = target_ids >= 0
        ids = _point_padding_at_kept_ids(target_ids.long().clamp(0, vocab - 1), valid)
    if normalizer is None:
        normalizer = max(n, 1)
    normalizer = float(normalizer)
    mm_dtype = matmul_dtype(hidden, head.weight)
    if chunk_memory is None:
        chunk_memory = chunk_memory_for(hidden.device, vocab, width, mm_dtype.itemsize)
    chunk, piece = chunk_rows(int(chunk_memory), vocab, mm_dtype)
    if chunk_size is not None:
        chunk, piece = int(chunk_size), min(piece, int(chunk_size))
    fused.use_compiled(kernel, hidden.device)  # an unknown name is refused before any work
    cfg = (float(lam), float(temperature), float(head.scale), head.softcap, normalizer, chunk, piece, mm_dtype, kernel)
    loss, clm_sum, fuse_sum = _ChunkedFusionLoss.apply(
        hidden, head.weight, head.bias, labels.long(), ids, valid, q, q_tail, cfg
    )
    return LossParts(loss=loss, clm_sum=clm_sum, fuse_sum=fuse_sum, positions=n)


def matmul_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype of the loss's matmuls: autocast's where it is on for the device, else the inputs' own."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _point_padding_at_kept_ids(ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Padding entries (q = 0) pointed at their row's first kept id, so every entry of a row with kept ids
    names a kept position (the per-chunk code writes and zeroes at entries without masks)."""
    first = ids.gather(1, valid.to(torch.uint8).argmax(dim=1, keepdim=True))
    return torch.where(valid, ids, first)
