"""The plain, dense form of the fusion loss: the yardstick for the chunked one, never used to train.

It does what the reference scripts do, in the most obvious way: full logits for every position, a dense
vocabulary-sized target tensor, `log_softmax` and autograd. Tests check the chunked loss against it (values
and gradients); the training benchmark measures its memory as "the reference approach".
"""

from __future__ import annotations

import torch

from fusechat.train.loss import Head, target_distribution

IGNORE = -100


def dense_targets(
    target_ids: torch.Tensor,
    target_logprobs: torch.Tensor,
    vocab: int,
    temperature: float = 1.0,
    tail: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense targets (..., V) from sparse ones (..., k), and the tail mass (...): what a reference collator
    builds."""
    k = target_ids.shape[-1]
    q, tail_mass = target_distribution(
        target_ids.reshape(-1, k), target_logprobs.reshape(-1, k), temperature, tail, dtype
    )
    ids = target_ids.reshape(-1, k).long()
    dense = torch.zeros(ids.shape[0], vocab, dtype=dtype, device=ids.device)
    dense.scatter_add_(1, ids.clamp_min(0), q.masked_fill(ids < 0, 0.0))
    return dense.reshape(*target_ids.shape[:-1], vocab), tail_mass.reshape(target_ids.shape[:-1])


def dense_fusion_loss(
    hidden: torch.Tensor,
    head: Head,
    labels: torch.Tensor,
    target_ids: torch.Tensor | None = None,
    target_logprobs: torch.Tensor | None = None,
    lam: float = 0.9,
    temperature: float = 1.0,
    tail: bool = False,
    normalizer: float | None = None,
) -> torch.Tensor:
    """The same loss as `fusion_loss`, densely. `hidden` (..., H), `labels` (...) with -100 where
    unsupervised, `target_ids`/`target_logprobs` (..., k) (ignored where labels are -100). Returns a
    scalar."""
    logits = head.logits(hidden)  # (..., V): the full logits, at once
    return dense_loss_from_logits(logits, labels, target_ids, target_logprobs, lam, temperature, tail, normalizer)


def dense_loss_from_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    target_ids: torch.Tensor | None = None,
    target_logprobs: torch.Tensor | None = None,
    lam: float = 0.9,
    temperature: float = 1.0,
    tail: bool = False,
    normalizer: float | None = None,
) -> torch.Tensor:
    """The dense loss from full logits (..., V), as a forward pass returns them; see `dense_fusion_loss`."""
    mask = labels != IGNORE
    n = int(mask.sum())
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    vocab = logits.shape[-1]
    logp = torch.log_softmax(logits, dim=-1)
    clm = -logp.gather(-1, labels.clamp_min(0).long().unsqueeze(-1)).squeeze(-1)
    clm_sum = clm.masked_fill(~mask, 0.0).sum()
    fuse_sum = torch.zeros((), dtype=logits.dtype, device=logits.device)
    if lam < 1.0:
        # (..., V) dense targets, as a reference collator builds them
        q, q_tail = dense_targets(target_ids, target_logprobs, vocab, temperature, tail, logits.dtype)
        logp_t = torch.log_softmax(logits / temperature, dim=-1)
        fuse = -(q * logp_t).sum(dim=-1)
        if tail:
            ids = target_ids.long()
            hits = torch.zeros_like(logits).scatter_add_(-1, ids.clamp_min(0), (ids >= 0).to(logits.dtype))
            kept = hits > 0  # the valid target ids; everything else is the tail
            rest = torch.logsumexp(logp_t.masked_fill(kept, float("-inf")), dim=-1)
            use = (q_tail > 0) & torch.isfinite(rest)
            fuse = fuse - torch.where(use, q_tail * torch.where(use, rest, torch.zeros_like(rest)), 0.0)
        fuse_sum = fuse.masked_fill(~mask, 0.0).sum()
    total = lam * clm_sum + (1.0 - lam) * fuse_sum
    return total / float(normalizer if normalizer is not None else max(n, 1))
