"""What a merged checkpoint carries besides its weights: config, tokenizer, chat template, and a model card.

The output must load with `AutoModelForCausalLM.from_pretrained` and no extra code, and say how it was made.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from fusechat._version import __version__
from fusechat.manifest import atomic_write_bytes
from fusechat.merge.config import MergeConfig

MODEL_FILES = ("generation_config.json",)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)


def copy_model_files(
    base_dir: Path, tokenizer_dir: Path, out: Path, out_dtype: str | None, chat_template: str | None
) -> None:
    """Copy the base's config (dtype updated to `out_dtype`, a name like `bfloat16`) and generation config,
    and the tokenizer source's files."""
    config = json.loads((base_dir / "config.json").read_text())
    if out_dtype is not None:
        key = "torch_dtype" if "torch_dtype" in config and "dtype" not in config else "dtype"
        config[key] = out_dtype
    atomic_write_bytes(out / "config.json", (json.dumps(config, indent=2) + "\n").encode())
    for name in MODEL_FILES:
        if (base_dir / name).is_file():
            shutil.copyfile(base_dir / name, out / name)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, out / name)
    if chat_template is not None:
        (out / "chat_template.json").unlink(missing_ok=True)
        atomic_write_bytes(out / "chat_template.jinja", chat_template.encode())


def write_model_card(out: Path, cfg: MergeConfig, options: dict[str, Any], title: str | None = None) -> None:
    """README.md: what was merged, how, and the exact config to reproduce it."""
    spec = cfg.method
    models = "\n".join(f"- `{m.model}`" for m in cfg.models)
    base = f"\nBase model: `{cfg.base_model}`\n" if cfg.base_model else ""
    config_yaml = yaml.safe_dump(card_config(cfg), sort_keys=False)
    arithmetic = (
        "Arithmetic in the config's dtype, as mergekit does (requested)."
        if options.get("mergekit_arithmetic")
        else "Arithmetic in float32, cast to the output dtype once at the end."
    )
    text = f"""---
library_name: transformers
tags:
- merge
- fusechat
---
# {cfg.name or title or out.name}

A merge of {len(cfg.models)} models with **{spec.name}** ({spec.summary}), made with fusechat {__version__}.
{base}
Merged models:
{models}

Options: `{json.dumps(options)}`. {arithmetic}

## Configuration
```yaml
{config_yaml}```

Reproduce with `fusechat merge config.yml OUT` using the configuration above.
"""
    atomic_write_bytes(out / "README.md", text.encode())


def card_config(cfg: MergeConfig) -> dict[str, Any]:
    """The config as YAML-ready data, parameters written back in mergekit's syntax."""
    from fusechat.merge.params import Conditional

    def plain(setting: tuple[Conditional, ...]) -> Any:
        def value(v: Any) -> Any:
            return list(v) if isinstance(v, tuple) else v

        if len(setting) == 1 and setting[0].filter is None:
            return value(setting[0].value)
        return [
            {"filter": c.filter, "value": value(c.value)} if c.filter else {"value": value(c.value)} for c in setting
        ]

    out: dict[str, Any] = {"merge_method": cfg.merge_method}
    if cfg.base_model:
        out["base_model"] = cfg.base_model
    out["models"] = [
        {
            "model": m.model,
            **({"parameters": {k: plain(v) for k, v in m.parameters.items()}} if m.parameters else {}),
        }
        for m in cfg.models
    ]
    if cfg.parameters:
        out["parameters"] = {k: plain(v) for k, v in cfg.parameters.items()}
    for key in ("dtype", "out_dtype", "tokenizer_source", "chat_template", "name"):
        if getattr(cfg, key) is not None:
            out[key] = getattr(cfg, key)
    return out
