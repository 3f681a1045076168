"""SCE merging (FuseChat 2.0): Select the entries where the targets disagree most, Calculate weights from each
task vector's energy, Erase entries against the majority sign, then add the weighted mean to the base."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fusechat.merge.methods.select import topk_mask
from fusechat.merge.methods.task_arithmetic import sign_agrees

UNIFORM_BELOW = 1e-6  # Σ mean(τ²) below this: equal weights (mergekit's tolerance)
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
    if select_topk <= 0:
        for tau in taus:
            tau.zero_()
    elif select_topk < 1:
        mean = taus[0].clone()
        for tau in taus[1:]:
            mean.add_(tau)
        mean.div_(n)
        variance = torch.zeros_like(base)
        for tau in taus:
            variance.add_((tau - mean).square_())
        del mean
        variance.div_(n)
        k = int(int(torch.count_nonzero(variance)) * select_topk)
        keep = topk_mask(variance, k).to(base.dtype)
        del variance
        for tau in taus:
            tau.mul_(keep)
        del keep

    energies = torch.tensor(
        [float(tau.square().mean(dtype=torch.float64)) for tau in taus], dtype=torch.float64
    )
    total = float(energies.sum())
    weights = (
        (energies / total) if abs(total) >= UNIFORM_BELOW else torch.full((n,), 1.0 / n, dtype=torch.float64)
    )

    summed = taus[0].clone()
    for tau in taus[1:]:
        summed.add_(tau)
    positive = summed >= 0
    del summed
    merged = torch.zeros_like(base)
    divisor = torch.zeros_like(base)
    for tau, w in zip(taus, weights.tolist(), strict=True):
        keep = sign_agrees(tau, positive).to(tau.dtype)
        merged.add_(tau.mul_(keep), alpha=w)
        divisor.add_(keep, alpha=w)
    return merged.div_(divisor.clamp_(min=MIN_DIVISOR)).add_(base)
