"""Describe a model's output head as data, and check the description once against the model's own logits.

The chunked loss never calls the model's `lm_head` on all positions: it needs the projection as tensors plus
whatever the model does to the logits afterwards. Those post-steps are read from the config (a table of keys,
never a branch on the model's name or class); tied embeddings need nothing special since the output embedding
module holds the shared weight. `check_head` then compares our logits with the model's on real inputs, so a
model whose head does something this table does not know fails before training, not silently.

`head_loss` runs the loss inside the head module's own call, so an engine that shards parameters and gathers
them around each module's forward (FSDP2, DeepSpeed ZeRO-3) hands the loss the full weight, never a shard.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch

from fusechat.errors import FusechatError
from fusechat.train.loss import Head

# Config keys that change logits after the projection: key -> how (applied in this order: scale, then cap).
LOGIT_QUIRKS: dict[str, str] = {
    "logit_scale": "multiply",  # logits * value
    "logits_scaling": "divide",  # logits / value
    "final_logit_softcapping": "softcap",  # value * tanh(logits / value)
}


def unwrap(model: Any) -> Any:
    """The Hugging Face model inside DDP / accelerate wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


def head_of(model: Any) -> Head:
    """The output projection of a causal LM (unwrapped or wrapped) as a `Head`."""
    inner = unwrap(model)
    out = inner.get_output_embeddings()
    if out is None or not hasattr(out, "weight"):
        raise FusechatError(f"{type(inner).__name__}: no output embedding module; not a causal LM")
    config = inner.config.get_text_config() if hasattr(inner.config, "get_text_config") else inner.config
    scale, softcap = 1.0, None
    for key, how in LOGIT_QUIRKS.items():
        value = getattr(config, key, None)
        if value is None:
            continue
        if how == "multiply":
            scale *= float(value)
        elif how == "divide":
            scale /= float(value)
        else:
            softcap = float(value)
    return Head(weight=out.weight, bias=getattr(out, "bias", None), scale=scale, softcap=softcap)


def final_hidden(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Final (normed) hidden states (B, L, H) from one forward pass through `model` (wrappers kept: DDP needs
    its own forward). Logits are computed for the last position only, so the full logits never exist."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    out = model(**inputs, output_hidden_states=True, use_cache=False, logits_to_keep=1)
    return out.hidden_states[-1]


def check_head(model: Any, batch: dict[str, torch.Tensor], rtol: float = 1e-3) -> float:
    """Compare `head_of(model)` on the final hidden states with the model's own logits; return the max error.

    Raises `FusechatError` if they differ by more than `rtol` relative to the logits' scale: the model's head
    does something the quirk table does not describe.
    """
    inner = unwrap(model)
    inputs = {k: batch[k][:1, :64] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    with torch.no_grad():
        ref = inner(**inputs, use_cache=False).logits.float()
        ours = head_of(inner).logits(final_hidden(inner, inputs))
    err = float((ref - ours).abs().max())
    scale = float(ref.abs().max()) or 1.0
    if not err <= rtol * scale:
        raise FusechatError(
            f"{type(inner).__name__}: the output head could not be reproduced from its config "
            f"(max logit error {err:.3g}); fusechat knows the config keys {', '.join(LOGIT_QUIRKS)}: "
            "add this model's to fusechat.train.head.LOGIT_QUIRKS"
        )
    return err


def _full_weight(model: Any, module: torch.nn.Module) -> None:
    """Make sure `module`'s weight is whole: if FSDP2 left it sharded (the head has been resharded, or the
    module that owns it gathers only around its own forward), unshard the FSDP module that owns it."""
    from torch.distributed.tensor import DTensor

    if not isinstance(module.weight, DTensor):
        return
    from torch.distributed.fsdp import FSDPModule

    owners = [m for m in unwrap(model).modules() if isinstance(m, FSDPModule) and module in set(m.modules())]
    if owners:
        owners[-1].unshard()  # the innermost owner: modules() lists ancestors before descendants
    if isinstance(module.weight, DTensor):
        raise FusechatError(
            f"the output head's weight is sharded ({type(module.weight).__name__}) when the loss needs it whole; "
            "fusechat supports FSDP2 (fully_shard) and replicated parameters (DDP)"
        )


def head_loss(model: Any, hidden: torch.Tensor, compute: Callable[[torch.Tensor, Head], Any]) -> Any:
    """`compute(hidden, head_of(model))`, run as the output embedding module's forward.

    Calling the module (not reading its weight after the model's forward) runs the hooks a sharding engine put
    on it, which gather the full weight before and release it after; the loss's gradient for the weight then
    reaches the engine the way a forward's would. `compute` returns a tuple of tensors (hooks look at
    tensors). Without such an engine this is the plain call.
    """
    inner = unwrap(model)
    module = inner.get_output_embeddings()

    def forward(self: torch.nn.Module, h: torch.Tensor) -> Any:
        _full_weight(inner, self)
        return compute(h, head_of(inner))

    module.forward = types.MethodType(forward, module)
    try:
        return module(hidden)
    finally:
        del module.forward  # back to the class's forward
