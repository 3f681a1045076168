"""Teacher-forced scoring of a batch: top-k log-probs and gold log-probs at supervised positions only.

The full-vocabulary logits of a batch are the largest tensor of the teacher pass (4 x 512 positions x 262k
entries is 2 GiB in fp32), and only k of each row are kept. So the backbone runs once per batch, the hidden
states of the supervised positions are gathered, and the output head is applied to chunks of those rows: at most
one chunk of logits exists at a time, the top-k is taken on the device, and only the k entries (plus the gold
log-prob) are copied to the host; on CUDA the copy goes asynchronously into pinned memory, so the host can
assemble the previous batch's rows while the device runs this one.

Fidelity: whatever dtype the backbone runs in, the logits are float32 before the log-softmax and top-k, and the
head's product itself runs in float32 when a float32 copy of its weight is cheap (`FLOAT32_HEAD_MAX_BYTES`): a
bf16 product rounds a logit of 20 to the nearest 0.125, which is the largest part of a bf16 pass's error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.profiler import record_function

FLOAT32_HEAD_MAX_BYTES = 1 << 30  # a float32 copy of the head's weight up to this size is kept (131k x 2048)


@dataclass
class Head:
    """The model's output head as data: a projection, then the transforms its config asks for."""

    projection: torch.nn.Module
    softcap: float | None = None  # config.final_logit_softcapping: logits = c * tanh(logits / c)
    scale: float | None = None  # config.logit_scale: logits *= scale
    divide: float | None = None  # config.logits_scaling: logits /= value
    weight32: torch.Tensor | None = None  # float32 copy of a low-precision projection's weight (see module doc)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.weight32 is not None:
            bias = getattr(self.projection, "bias", None)
            hidden = hidden.to(self.weight32.device, torch.float32)
            logits = F.linear(hidden, self.weight32, None if bias is None else bias.float())
        else:
            logits = self.projection(hidden).float()
        if self.scale:
            logits = logits * self.scale
        if self.divide:
            logits = logits / self.divide
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    @property
    def device(self) -> torch.device:
        """Where the head's product runs (the projection's weight; the execution device when offloaded)."""
        if self.weight32 is not None:
            return self.weight32.device
        hook = getattr(self.projection, "_hf_hook", None)
        if getattr(hook, "execution_device", None) is not None:
            return torch.device(hook.execution_device)
        return self.projection.weight.device


def float32_head(model_dir: Path, dtype: torch.dtype) -> bool:
    """Whether the head's product runs in float32: always in a float32 pass, else when its weight copy is cheap."""
    if dtype == torch.float32:
        return True
    config = json.loads((model_dir / "config.json").read_text())
    text = config.get("text_config", config)
    vocab, hidden = text.get("vocab_size") or 0, text.get("hidden_size") or text.get("n_embd") or 0
    return 0 < vocab * hidden * 4 <= FLOAT32_HEAD_MAX_BYTES


def model_parts(model: Any, float32_head: bool | None = None) -> tuple[torch.nn.Module, Head]:
    """Split a causal LM into its backbone (hidden states) and its head, reading quirks from its config.

    With `float32_head` (None: when the copy is cheap), a projection whose weight is not float32 gets a float32
    copy, so that the head's product runs in float32; an offloaded weight is fetched once for it.
    """
    config = model.config
    text = getattr(config, "get_text_config", lambda: config)()
    backbone = model.get_decoder()
    projection = model.get_output_embeddings()
    if float32_head is None:
        float32_head = projection.weight.numel() * 4 <= FLOAT32_HEAD_MAX_BYTES
    weight32 = None
    if float32_head and projection.weight.dtype != torch.float32:
        weight32 = _float32_weight(projection)
    head = Head(
        projection=projection,
        softcap=getattr(text, "final_logit_softcapping", None),
        scale=getattr(text, "logit_scale", None),
        divide=getattr(text, "logits_scaling", None),
        weight32=weight32,
    )
    return backbone, head


def _float32_weight(projection: torch.nn.Module) -> torch.Tensor:
    """A float32 copy of the projection's weight, on the device its product runs on (accelerate's hook, if any)."""
    hook = getattr(projection, "_hf_hook", None)
    if projection.weight.device.type != "meta" or hook is None:
        return projection.weight.detach().float()
    hook.pre_forward(projection)  # brings an offloaded weight onto the execution device, as a forward would
    try:
        return projection.weight.detach().float().clone()
    finally:
        hook.post_forward(projection, None)


def check_head(model: Any, backbone: torch.nn.Module, head: Head, input_ids: torch.Tensor) -> float:
    """Largest difference between our head path and the model's own logits on a short input.

    Raises if they disagree: a model whose logits our head does not reproduce must not be scored silently wrong.
    The comparison uses the model's own precision for the product (no float32 copy), so it tests the head's
    transforms, not the rounding the float32 product removes.
    """
    plain = replace(head, weight32=None)
    with torch.inference_mode():
        ids = input_ids[:1, : min(16, input_ids.shape[1])]
        ours = plain(backbone(input_ids=ids, use_cache=False).last_hidden_state)
        theirs = model(input_ids=ids, use_cache=False).logits.float().to(ours.device)
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
    """Scores of the supervised positions of one batch, in row-major order of (sequence, position).

    On CUDA the tensors are pinned host memory still being filled by an asynchronous copy: call `wait()` before
    reading them (any thread may).
    """

    topk_ids: torch.Tensor  # (P, k) int32, most likely first
    topk_logprobs: torch.Tensor  # (P, k) float32, log-softmax over the full vocabulary
    gold_logprob: torch.Tensor  # (P,) float32
    ready: Any = None  # a torch.cuda.Event recorded after the copies, or None when they are already done

    def wait(self) -> BatchScores:
        if self.ready is not None:
            self.ready.synchronize()
            self.ready = None
        return self


def _to_host(t: torch.Tensor) -> torch.Tensor:
    """Start copying `t` to the host: into pinned memory without waiting on CUDA, a plain copy elsewhere."""
    if t.device.type != "cuda":
        return t.cpu()
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    return host


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

    Shapes: input_ids and attention_mask (B, L), on the backbone's input device; returns P =
    sum(len(positions[b])) rows. The returned scores may still be in flight to the host (`BatchScores.wait`).
    """
    rows = torch.cat([torch.full((len(p),), b, dtype=torch.long) for b, p in enumerate(positions)])
    cols = torch.cat([p.long() for p in positions])
    if input_ids.device.type == "cuda":
        # Queued before the forward, from pinned memory: a copy from pageable memory after it would make the host
        # wait for the whole forward before it could queue the head.
        rows = rows.pin_memory().to(input_ids.device, non_blocking=True)
        cols = cols.pin_memory().to(input_ids.device, non_blocking=True)
    with torch.inference_mode():
        with record_function("teach.forward"):
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        with record_function("teach.head_topk"):
            device = head.device
            picked = hidden[rows.to(hidden.device), cols.to(hidden.device)].to(device)
            gold = input_ids[rows.to(input_ids.device), cols.to(input_ids.device) + 1].to(device)
            del hidden
            if picked.shape[0] == 0:
                return BatchScores(torch.zeros(0, k, dtype=torch.int32), torch.zeros(0, k), torch.zeros(0))
            ids_out, lp_out, gold_out = [], [], []
            for s in range(0, picked.shape[0], chunk):
                logits = head(picked[s : s + chunk])  # float32
                lse = torch.logsumexp(logits, dim=-1, keepdim=True)
                top_v, top_i = logits.topk(min(k, logits.shape[-1]), dim=-1)
                ids_out.append(top_i.to(torch.int32))
                lp_out.append(top_v - lse)
                gold_out.append((logits.gather(-1, gold[s : s + chunk, None]) - lse)[:, 0])
                del logits
            on_device = (torch.cat(ids_out), torch.cat(lp_out), torch.cat(gold_out))
            host = [_to_host(t) for t in on_device]
            ready = None
            if device.type == "cuda":
                ready = torch.cuda.Event()
                ready.record(torch.cuda.current_stream(device))
    return BatchScores(*host, ready=ready)
