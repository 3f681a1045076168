"""Teacher-forced scoring of a batch: top-k log-probs and gold log-probs at supervised positions only.

The full-vocabulary logits of a batch are the largest tensor of the teacher pass (4 x 512 positions x 262k
entries is 2 GiB in fp32), and only k of each row are kept. So the backbone runs once per batch, the hidden
states of the supervised positions are gathered, and the output head is applied to chunks of those rows: at most
one chunk of logits exists at a time, and only the top-k leaves the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Head:
    """The model's output head as data: a projection, then the transforms its config asks for."""

    projection: torch.nn.Module
    softcap: float | None = None  # config.final_logit_softcapping: logits = c * tanh(logits / c)
    scale: float | None = None  # config.logit_scale: logits *= scale
    divide: float | None = None  # config.logits_scaling: logits /= value

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.projection(hidden).float()
        if self.scale:
            logits = logits * self.scale
        if self.divide:
            logits = logits / self.divide
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def model_parts(model: Any) -> tuple[torch.nn.Module, Head]:
    """Split a causal LM into its backbone (hidden states) and its head, reading quirks from its config."""
    config = model.config
    text = getattr(config, "get_text_config", lambda: config)()
    backbone = model.get_decoder()
    head = Head(
        projection=model.get_output_embeddings(),
        softcap=getattr(text, "final_logit_softcapping", None),
        scale=getattr(text, "logit_scale", None),
        divide=getattr(text, "logits_scaling", None),
    )
    return backbone, head


def check_head(model: Any, backbone: torch.nn.Module, head: Head, input_ids: torch.Tensor) -> float:
    """Largest difference between our head path and the model's own logits on a short input.

    Raises if they disagree: a model whose logits our head does not reproduce must not be scored silently wrong.
    """
    with torch.inference_mode():
        ids = input_ids[:1, : min(16, input_ids.shape[1])]
        ours = head(backbone(input_ids=ids).last_hidden_state)
        theirs = model(input_ids=ids).logits.float()
    diff = float((ours - theirs).abs().max())
    tol = 1e-3 * max(1.0, float(theirs.abs().max()))
    if not diff <= tol:
        raise RuntimeError(
            f"{type(model).__name__}: logits from the backbone + head differ from the model's own by {diff:.3g}; "
            "its output head has a transform fusechat does not know (please report it)"
        )
    return diff


@dataclass
class BatchScores:
    """Scores of the supervised positions of one batch, in row-major order of (sequence, position)."""

    topk_ids: torch.Tensor  # (P, k) int32, most likely first
    topk_logprobs: torch.Tensor  # (P, k) float32, log-softmax over the full vocabulary
    gold_logprob: torch.Tensor  # (P,) float32


def score_batch(
    backbone: torch.nn.Module,
    head: Head,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: list[torch.Tensor],
    k: int,
    chunk: int = 1024,
) -> BatchScores:
    """Score `positions[b]` (1-D positions t of sequence b, next token t + 1) of a right-padded batch.

    Shapes: input_ids and attention_mask (B, L); returns P = sum(len(positions[b])) rows.
    """
    device = input_ids.device
    with torch.inference_mode():
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rows = torch.cat([torch.full((len(p),), b, dtype=torch.long) for b, p in enumerate(positions)]).to(device)
        cols = torch.cat([p.long() for p in positions]).to(device)
        picked = hidden[rows, cols]
        gold = input_ids[rows, cols + 1]
        del hidden
        ids_out, lp_out, gold_out = [], [], []
        for s in range(0, picked.shape[0], chunk):
            logits = head(picked[s : s + chunk])
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            top_v, top_i = logits.topk(min(k, logits.shape[-1]), dim=-1)
            ids_out.append(top_i.to(torch.int32).cpu())
            lp_out.append((top_v - lse).cpu())
            gold_out.append((logits.gather(-1, gold[s : s + chunk, None]) - lse)[:, 0].cpu())
            del logits
    if not ids_out:
        return BatchScores(torch.zeros(0, k, dtype=torch.int32), torch.zeros(0, k), torch.zeros(0))
    return BatchScores(torch.cat(ids_out), torch.cat(lp_out), torch.cat(gold_out))
