"""SCE merging (FuseChat 2.0): Select the entries where the targets disagree most, Calculate weights from each
task vector's energy, Erase entries against the majority sign, then add the weighted mean to the base."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fusechat.merge.methods.blocks import blocks, sum_squares
from fusechat.merge.methods.rules import UNIFORM_BELOW
from fusechat.merge.methods.select import keep_top_k_
from fusechat.merge.methods.task_arithmetic import sign_agrees

MIN_DIVISOR = 1e-6


def sce(
    base: torch.Tensor, tensors: Sequence[torch.Tensor], select_topk: float = 1.0, consume: bool = False
) -> torch.Tensor:
    """base + Σᵢ wᵢ mᵢ τᵢ / max(Σᵢ wᵢ mᵢ, 1e-6), τᵢ = xᵢ − base.

    base: (...) float; tensors: n of (...). Select: when select_topk < 1, only the int(nnz·select_topk)
    entries of largest variance across the τᵢ (population variance; nnz = its non-zero count) are kept in
    every τᵢ.
    Calculate: wᵢ = mean(τᵢ²) / Σⱼ mean(τⱼ²) on the selected τ (equal weights when the sum is below 1e-6).
    Erase: mᵢ = [sign(τᵢ) = sign(Σⱼ τⱼ)], a zero sum counting as +. Returns (...) in base's dtype.
    With `consume`, the τᵢ are built in the input tensors' buffers (the caller gives them up).
    """
    n = len(tensors)
    if n == 0:
        return base.clone()
    taus = [x.sub_(base) if consume else x - base for x in tensors]
    flats = [t.reshape(-1) for t in taus]
    size = base.numel()
    if select_topk <= 0:
        for tau in taus:
            tau.zero_()
    elif select_topk < 1:
        variance = torch.empty(size, dtype=base.dtype)
        for s in blocks(size):  # population variance across the targets, block by block
            parts = [f[s] for f in flats]
            mean = parts[0].clone()
            for part in parts[1:]:
                mean.add_(part)
            mean.div_(n)
            var = variance[s].zero_()
            for part in parts:
                var.add_((part - mean).square_())
            var.div_(n)
        k = int(int(torch.count_nonzero(variance)) * select_topk)
        keep_top_k_(variance, k, taus)
        del variance

    energies = [sum_squares(tau) / max(size, 1) for tau in taus]
    total = sum(energies)
    weights = [e / total for e in energies] if abs(total) >= UNIFORM_BELOW else [1.0 / n] * n

    flat_base = base.reshape(-1)
    for s in blocks(size):  # the result accumulates in the first task vector's buffer
        parts = [f[s] for f in flats]
        summed = parts[0].clone()
        for part in parts[1:]:
            summed.add_(part)
        positive = summed >= 0
        del summed
        divisor = None
        for i, (part, w) in enumerate(zip(parts, weights, strict=True)):
            keep = sign_agrees(part, positive).to(part.dtype)
            part.mul_(keep)
            if i == 0:
                part.mul_(w)
            else:
                parts[0].add_(part, alpha=w)
            divisor = keep.mul_(w) if divisor is None else divisor.add_(keep, alpha=w)
        parts[0].div_(divisor.clamp_(min=MIN_DIVISOR)).add_(flat_base[s])
    return taus[0]
