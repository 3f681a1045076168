"""Describe a model's output head as data, and check the description once against the model's own logits.

The chunked loss never calls the model's `lm_head` on all positions: it needs the projection as tensors plus
whatever the model does to the logits afterwards. Those post-steps are read from the config (a table of keys,
never a branch on the model's name or class); tied embeddings need nothing special since the output embedding
module holds the shared weight. `check_head` then compares our logits with the model's on real inputs, so a
model whose head does something this table does not know fails before training, not silently.
"""

from __future__ import annotations

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
