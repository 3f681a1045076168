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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Elements of one chunk of logits (positions x vocabulary); 2**23 float32 values are 32 MiB.
DEFAULT_CHUNK_ELEMENTS = 1 << 23


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


def _chunk_loss_and_grad(
    z: torch.Tensor,
    labels: torch.Tensor,
    ids: torch.Tensor | None,
    valid: torch.Tensor | None,
    q: torch.Tensor | None,
    q_tail: torch.Tensor | None,
    lam: float,
    temperature: float,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-position CLM and fusion losses of one chunk, and d(lam*clm + (1-lam)*fuse)/dz.

    `z` (c, V) float32 logits; `labels` (c,); `ids` (c, k) with padding mapped to a valid id, `valid` (c, k)
    bool false for padding (where q is 0); `q` (c, k), `q_tail` (c,) or None. Returns clm (c,), fuse (c,),
    grad (c, V) or None.
    """
    c = z.shape[0]
    rows = torch.arange(c, device=z.device)
    zero = torch.zeros(c, dtype=z.dtype, device=z.device)
    clm = fuse = zero
    fusing = lam < 1 and q is not None
    lse = torch.logsumexp(z, dim=-1)
    p = torch.exp(z - lse[:, None]) if need_grad else None  # (c, V); becomes the gradient, in place
    if lam > 0:
        clm = lse - z[rows, labels]
    if not fusing:
        if p is not None:
            p.mul_(lam)
            p[rows, labels] -= lam
        return clm, fuse, p
    if temperature == 1.0:
        zt, lse_t, p_t = z, lse, p
    else:
        zt = z / temperature
        lse_t = torch.logsumexp(zt, dim=-1)
        p_t = torch.exp(zt - lse_t[:, None]) if need_grad else None
    fuse = -(q * (zt.gather(1, ids) - lse_t[:, None])).masked_fill(q == 0, 0.0).sum(dim=-1)
    w = (1.0 - lam) / temperature
    q_total = q.sum(dim=-1)  # 1, or 0 for a row of padding only (no fusion term)
    kept = tail_share = None
    if q_tail is not None:
        # The tail bucket: every id outside the kept set. Counting (not scattering booleans) keeps repeated
        # padding indices harmless.
        kept = torch.zeros_like(z).scatter_add_(1, ids, valid.to(z.dtype)) > 0
        lse_rest = torch.logsumexp(zt.masked_fill(kept, float("-inf")), dim=-1)
        has_tail = (q_tail > 0) & torch.isfinite(lse_rest)
        q_tail = torch.where(has_tail, q_tail, zero)
        log_tail = torch.where(has_tail, lse_rest - lse_t, zero)
        fuse = fuse - q_tail * log_tail
        q_total = q_total + q_tail
        # d/dz_j of -q_tail log P_tail is -q_tail p_j / P_tail for j in the tail
        tail_share = w * q_tail * torch.exp(-log_tail)
    if p is None:
        return clm, fuse, None
    # d/dz of -sum q log softmax(z/T) is (p_T * sum(q) - q) / T, sum(q) including the tail bucket's mass.
    # The tail term has to use p_T before p is overwritten when the two are one tensor (temperature 1).
    if p_t is p:
        a = (lam + w * q_total)[:, None]
        grad = p.mul_(a if tail_share is None else torch.where(kept, a, a - tail_share[:, None]))
    else:
        grad = p.mul_(lam).add_(p_t * (w * q_total)[:, None])
        if tail_share is not None:
            grad.sub_((p_t * tail_share[:, None]).masked_fill_(kept, 0.0))
    if lam > 0:
        grad[rows, labels] -= lam
    grad.scatter_add_(1, ids, -w * q)
    return clm, fuse, grad


class _ChunkedFusionLoss(torch.autograd.Function):
    """Forward computes the loss and, chunk by chunk, its gradients; backward only scales them."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, ids, valid, q, q_tail, cfg):
        lam, temperature, scale, softcap, normalizer, chunk = cfg
        need = any(t is not None and t.requires_grad for t in (hidden, weight, bias))
        n = hidden.shape[0]
        grad_h = torch.zeros_like(hidden) if hidden.requires_grad else None
        dt = compute_dtype(hidden)
        grad_w = torch.zeros_like(weight, dtype=dt) if weight.requires_grad else None
        grad_b = torch.zeros_like(bias, dtype=dt) if bias is not None and bias.requires_grad else None
        clm_sum = torch.zeros((), dtype=dt, device=hidden.device)
        fuse_sum = torch.zeros((), dtype=dt, device=hidden.device)
        with torch.no_grad():
            for s in range(0, n, chunk):
                h = hidden[s : s + chunk]
                u = torch.nn.functional.linear(h, weight, bias).to(dt)
                if scale != 1.0:
                    u = u * scale
                z = torch.tanh(u / softcap) * softcap if softcap is not None else u
                clm, fuse, g = _chunk_loss_and_grad(
                    z,
                    labels[s : s + chunk],
                    None if ids is None else ids[s : s + chunk],
                    None if valid is None else valid[s : s + chunk],
                    None if q is None else q[s : s + chunk],
                    None if q_tail is None else q_tail[s : s + chunk],
                    lam,
                    temperature,
                    need,
                )
                clm_sum += clm.sum()
                fuse_sum += fuse.sum()
                if g is None:
                    continue
                if softcap is not None:
                    g.mul_(1.0 - (z / softcap) ** 2)
                if scale != 1.0:
                    g.mul_(scale)
                g.div_(normalizer)
                if grad_h is not None:
                    grad_h[s : s + chunk] = (g.to(weight.dtype) @ weight).to(hidden.dtype)
                if grad_w is not None:
                    grad_w.addmm_(g.t(), h.to(dt))
                if grad_b is not None:
                    grad_b += g.sum(dim=0)
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
) -> LossParts:
    """lam * CLM + (1 - lam) * fusion loss over supervised positions, summed and divided by `normalizer`.

    `hidden` (N, H) the final hidden states at the N supervised positions (already gathered: padding and
    unsupervised positions never reach the head); `labels` (N,) the gold next tokens; `target_ids` (N, k) int
    with id < 0 for padding, `target_logprobs` (N, k), both None when lam == 1. `normalizer` defaults to N (a
    mean); a trainer passes the number of supervised positions of the whole accumulated, multi-process batch
    instead. `chunk_size` positions per chunk of logits (default: about 2**23 logits). The fusion term uses
    softmax(z / T); it is not multiplied by T**2. Returns the loss (a scalar with gradients for hidden,
    head.weight, head.bias).
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if tail and temperature != 1.0:
        raise ValueError("the tail bucket needs temperature 1: a top-k target's tempered tail mass is unknown")
    n, vocab = hidden.shape[0], head.weight.shape[0]
    ids = valid = q = q_tail = None
    if lam < 1.0:
        if target_ids is None or target_logprobs is None:
            raise ValueError("target_ids and target_logprobs are required when lam < 1")
        if target_ids.shape[0] != n or target_logprobs.shape != target_ids.shape:
            raise ValueError(f"targets {tuple(target_ids.shape)} do not match {n} positions")
        dt = compute_dtype(hidden)
        q, tail_mass = target_distribution(target_ids, target_logprobs, temperature, tail, dt)
        q_tail = tail_mass if tail else None
        valid = target_ids >= 0
        ids = target_ids.long().clamp(0, vocab - 1)
    if normalizer is None:
        normalizer = max(n, 1)
    normalizer = float(normalizer)
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_CHUNK_ELEMENTS // vocab)
    cfg = (float(lam), float(temperature), float(head.scale), head.softcap, normalizer, int(chunk_size))
    loss, clm_sum, fuse_sum = _ChunkedFusionLoss.apply(
        hidden, head.weight, head.bias, labels.long(), ids, valid, q, q_tail, cfg
    )
    return LossParts(loss=loss, clm_sum=clm_sum, fuse_sum=fuse_sum, positions=n)
