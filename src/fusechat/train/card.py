"""The README model card of a trained checkpoint: how it was made, in words and in Hugging Face metadata."""

from __future__ import annotations

from typing import Any


def _sources(candidates: Any) -> str:
    if not candidates:
        return "none (no fused targets)"
    names = [_name(c) for c in candidates]
    return ", ".join(str(n) for n in names)


def _name(candidate: Any) -> str:
    if isinstance(candidate, dict):
        return str(candidate.get("name") or candidate.get("model") or candidate.get("store"))
    return str(candidate)


def model_card(m: dict[str, Any]) -> str:
    """Markdown with YAML front matter from a finished training manifest."""
    kind = "CLM-only baseline (no distillation)" if m.get("clm_only") else "FuseChat pairwise target"
    lam = m.get("lambda")
    items = (m.get("trainer_options") or {}).items()
    options = "\n".join(f"- `{k}`: `{v}`" for k, v in items) or "- (defaults)"
    return f"""---
library_name: transformers
base_model: {m.get("pivot")}
tags:
- fusechat
- knowledge-fusion
---
# {kind}, fine-tuned from {m.get("pivot")}

Made with `fusechat train` (FuseChat, Wan et al. 2024, stage 1): the pivot fine-tuned with
L = λ·L_CLM + (1 − λ)·L_fuse over assistant tokens only.

| | |
|---|---|
| pivot | `{m.get("pivot")}` (`{m.get("pivot_dir")}`) |
| sources (fusion candidates) | {_sources(m.get("sources"))} |
| fusion method | {m.get("method") or "n/a"} |
| λ | {lam} |
| temperature / tail bucket | {m.get("temperature")} / {m.get("tail_bucket")} |
| training targets | `{m.get("targets")}` |
| data (conversations) | `{m.get("conversations_dir")}`: {m.get("conversations")} conversations, \
{m.get("supervised_positions")} supervised positions |
| steps / epochs | {m.get("steps")} / {m.get("epochs")} |
| global batch (conversations) | {m.get("global_batch")} over {m.get("world_size")} process(es) |
| max length / packing | {m.get("max_length")} / {m.get("pack")} |
| LoRA (merged into the weights) | {m.get("lora") or "no: full fine-tuning"} |
| final training loss | {m.get("train_loss")} |
| batches skipped (non-finite loss) | {m.get("nonfinite_batches_skipped")} |

Trainer options:
{options}

Load it with `AutoModelForCausalLM.from_pretrained(path)`; `manifest.json` holds the same facts as data.
"""
