"""Task arithmetic and its sparsified, sign-elected variants (TIES, DARE) as one computation.

All of them add a combination of task vectors δᵢ = xᵢ − base to the base; they differ only in how each δᵢ is
sparsified, whether a majority sign is elected per entry, and whether the sum is normalised by the weights
(docs/merging.md has the table). One function with those switches keeps the shared arithmetic in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fusechat.merge.methods.blocks import blocks
from fusechat.merge.methods.rules import Sparsify
from fusechat.merge.methods.sparsify import magnitude_prune_, random_prune_


def sign_agrees(delta: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Where `delta` is non-zero with the elected sign (`positive`: True for +); bool, delta's shape."""
    return (delta > 0).eq_(positive).logical_and_(delta != 0)


def task_arithmetic(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    *,
    densities: Sequence[float] | None = None,
    sparsify: Sparsify = Sparsify.NONE,
    sign_election: bool = False,
    normalize: bool = False,
    rescale: bool = False,
    lambda_: float = 1.0,
    keys: Sequence[tuple[int, int]] | None = None,
    consume: bool = False,
) -> torch.Tensor:
    """base + λ · combine(wᵢ · sparsify(xᵢ − base)).

    base: (...) float; tensors: n of (...); weights, densities: n floats; keys: n mask keys, for random sparsify.
    With `sign_election`, an entry of wᵢδᵢ is kept only where its sign matches sign(Σⱼ wⱼδⱼ) (a zero sum
    counts as +, zero entries never match), and the divisor is the sum of the kept weights (0 → 1); without
    it, the sum of all weights (|Σ| < 1e-8 → 1). The sum is divided by the divisor only when `normalize`.
    Returns (...) in base's dtype. With `consume`, the task vectors are built in the input tensors' own
    buffers (the caller gives them up; saves one tensor of memory per input); otherwise inputs are untouched.
    """
    n = len(tensors)
    if len(weights) != n:
        raise ValueError(f"{n} tensors but {len(weights)} weights")
    densities = list(densities) if densities is not None else [1.0] * n
    deltas = []
    for i, x in enumerate(tensors):
        delta = x.sub_(base) if consume else x - base
        if sparsify is Sparsify.MAGNITUDE:
            magnitude_prune_(delta, densities[i], rescale=rescale)
        elif sparsify is Sparsify.RANDOM:
            if keys is None:
                raise ValueError("random sparsification needs one mask key per tensor")
            random_prune_(delta, densities[i], keys[i], rescale=rescale)
        delta.mul_(float(weights[i]))
        deltas.append(delta)

    total_weight = float(sum(weights))
    flats = [d.reshape(-1) for d in deltas]
    flat_base = base.reshape(-1)
    for s in blocks(flat_base.numel()):  # the result accumulates in the first task vector's buffer
        parts = [f[s] for f in flats]
        if sign_election:
            _elect_(parts, weights, normalize)
        else:
            for part in parts[1:]:
                parts[0].add_(part)
            if normalize:
                parts[0].div_(total_weight if abs(total_weight) >= 1e-8 else 1.0)
        if lambda_ != 1:
            parts[0].mul_(lambda_)
        parts[0].add_(flat_base[s])
    return deltas[0]


def _elect_(parts: list[torch.Tensor], weights: Sequence[float], normalize: bool) -> None:
    """Sign election on one block of the weighted task vectors; the result is left in parts[0]."""
    total = parts[0].clone()
    for part in parts[1:]:
        total.add_(part)
    positive = total >= 0
    del total
    divisor = None
    for i, (part, w) in enumerate(zip(parts, weights, strict=True)):
        keep = sign_agrees(part, positive).to(part.dtype)  # float masks: bool products are slow on CPU
        part.mul_(keep)
        if i:
            parts[0].add_(part)
        if normalize:
            divisor = keep.mul_(float(w)) if divisor is None else divisor.add_(keep, alpha=float(w))
    if divisor is not None:
        divisor.add_((divisor == 0).to(divisor.dtype))  # 0 → 1
        parts[0].div_(divisor)
