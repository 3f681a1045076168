"""The Hugging Face Trainer with the fusion loss: `compute_loss` is the only method replaced.

Everything else (optimiser, schedule, gradient accumulation, checkpoints and resume, DDP / FSDP / DeepSpeed
through accelerate, logging) is the stock Trainer. The loss is normalised by the number of supervised
positions of the whole optimiser step (all accumulation steps, all processes: the Trainer's
`num_items_in_batch`), so any split of one global batch over processes and accumulation steps gives the same
gradient.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from transformers import Trainer

from fusechat.train.head import final_hidden, head_loss
from fusechat.train.loss import LossParts, fusion_loss

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LossConfig:
    """Settings of the fusion loss: weight of the CLM term, temperature, tail bucket, chunk size or memory, and
    how each piece's elementwise work runs (`fusion_loss`'s `kernel`)."""

    lam: float = 0.9
    temperature: float = 1.0
    tail: bool = False
    chunk_size: int | None = None
    chunk_memory: int | None = None
    kernel: str = "auto"


def step_loss(model: Any, inputs: dict[str, torch.Tensor], cfg: LossConfig, normalizer: Any) -> LossParts:
    """The fusion loss of one batch from `FusionCollator`: final hidden states at supervised positions, then
    the chunked loss run inside the head module's call (FSDP2 gathers the head's full weight for it)."""
    labels = inputs["labels"]
    supervised = labels[:, 1:] != -100  # (B, L-1): position t predicts labels[t + 1]
    hidden = final_hidden(model, inputs)[:, :-1][supervised]  # (N, H), (row, position) order
    gold = labels[:, 1:][supervised]
    lam = 1.0 if "target_ids" not in inputs else cfg.lam

    def compute(h: torch.Tensor, head: Any) -> tuple:
        p = fusion_loss(
            h,
            head,
            gold,
            inputs.get("target_ids"),
            inputs.get("target_logprobs"),
            lam=lam,
            temperature=cfg.temperature,
            tail=cfg.tail,
            normalizer=normalizer,
            chunk_size=cfg.chunk_size,
            chunk_memory=cfg.chunk_memory,
            kernel=cfg.kernel,
        )
        return p.loss, p.clm_sum, p.fuse_sum

    return LossParts(*head_loss(model, hidden, compute), positions=int(gold.numel()))


class FusionTrainer(Trainer):
    """A `transformers.Trainer` whose loss is `fusion_loss` over supervised positions.

    Batches come from `FusionCollator`. A batch whose loss is not finite is skipped (zero gradient, counted in
    `nonfinite_batches`) instead of poisoning the weights.
    """

    loss_is_scaled_for_ga = True  # normalised by the whole step's supervised positions

    def __init__(self, *args: Any, loss_config: LossConfig, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.loss_config = loss_config
        self.nonfinite_batches = 0
        # Per-token CLM and fusion terms since the last log line (this process's batches): the total loss alone
        # cannot show whether the fusion term moves at all.
        self._terms = {"clm": 0.0, "fusion": 0.0, "positions": 0, "fused_positions": 0}
        # The Trainer counts supervised labels across accumulation steps and processes only for models that
        # "accept loss kwargs"; our compute_loss uses that count whatever the model's signature.
        self.model_accepts_loss_kwargs = True

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        gold = int((inputs["labels"][:, 1:] != -100).sum())
        normalizer = num_items_in_batch if num_items_in_batch is not None else max(gold, 1)
        parts = step_loss(model, inputs, self.loss_config, normalizer)
        lam = 1.0 if "target_ids" not in inputs else self.loss_config.lam
        loss = parts.loss
        if model.training:
            self._count_terms(parts, gold, "target_ids" in inputs, lam > 0)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # DDP averages gradients over processes while the normaliser already counts every process.
            loss = loss * self.accelerator.num_processes
        if not math.isfinite(float(loss.detach())):
            self.nonfinite_batches += 1
            log.warning(
                "non-finite loss in a batch at step %d: skipped (%d so far)",
                self.state.global_step,
                self.nonfinite_batches,
            )
            loss = self._zero_loss(model)
        return (loss, {"clm_sum": parts.clm_sum, "fuse_sum": parts.fuse_sum}) if return_outputs else loss

    def _count_terms(self, parts: Any, positions: int, fused: bool, clm: bool) -> None:
        if clm:  # with lambda = 0 the loss never computes the CLM term
            self._terms["clm"] += float(parts.clm_sum.detach())
            self._terms["positions"] += positions
        if fused:
            self._terms["fusion"] += float(parts.fuse_sum.detach())
            self._terms["fused_positions"] += positions

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """The stock log line, plus `clm_loss` and `fusion_loss` per supervised position since the last one."""
        t = self._terms
        if "loss" in logs and (t["positions"] or t["fused_positions"]):
            if t["positions"]:
                logs["clm_loss"] = round(t["clm"] / t["positions"], 4)
            if t["fused_positions"]:
                logs["fusion_loss"] = round(t["fusion"] / t["fused_positions"], 4)
            self._terms = {k: type(v)(0) for k, v in t.items()}
        super().log(logs, *args, **kwargs)

    @staticmethod
    def _zero_loss(model: torch.nn.Module) -> torch.Tensor:
        """A zero loss touching every trainable parameter (finite values only), so backward gives zero
        gradients everywhere (and DDP still sees every parameter) without going through the non-finite
        activations."""
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.stack([p.reshape(-1)[0].float() for p in params]).sum() * 0.0
