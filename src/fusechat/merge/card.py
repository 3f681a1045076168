"""What a merged checkpoint carries besides its weights: config, tokenizer, chat template, and a model card.

The output must load with `AutoModelForCausalLM.from_pretrained` and no extra code, and say how it was made.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
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


CONFIG_COPY = "mergekit_config.yml"  # where mergekit keeps the config it merged with


def model_name(ref: str) -> str:
    """How the card names an input: a hub id (`org/name`, any `@revision` dropped) or an installed model's name
    as given, a local directory by its folder name alone (a card travels; this machine's paths do not)."""
    path = Path(ref).expanduser()
    if path.is_absolute() or ref.startswith(".") or path.exists():
        return path.resolve().name
    return ref.split("@", 1)[0]


def write_model_card(out: Path, cfg: MergeConfig, options: dict[str, Any], title: str | None = None) -> None:
    """README.md (what was merged and how, with the Hub's `base_model` metadata) and a copy of the config."""
    spec = cfg.method
    refs = [*([cfg.base_model] if cfg.base_model else []), *(m.model for m in cfg.models)]
    inputs = list(dict.fromkeys(model_name(m) for m in refs))
    models = "\n".join(f"- `{model_name(m.model)}`" for m in cfg.models)
    base = f"\nBase model: `{model_name(cfg.base_model)}`\n" if cfg.base_model else ""
    config_yaml = yaml.safe_dump(card_config(cfg, name=model_name), sort_keys=False)
    arithmetic = (
        "Arithmetic in the config's dtype, as mergekit does (requested)."
        if options.get("mergekit_arithmetic")
        else "Arithmetic in float32, cast to the output dtype once at the end."
    )
    metadata = yaml.safe_dump(
        {
            "library_name": "transformers",
            "base_model": inputs,
            "base_model_relation": "merge",
            "tags": ["merge", "mergekit", "fusechat", spec.name],
        },
        sort_keys=False,
    )
    text = f"""---
{metadata}---
# {cfg.name or title or out.name}

A merge of {len(cfg.models)} models with **{spec.name}** ({spec.summary}), made with fusechat {__version__}.
{base}
Merged models:
{models}

Options: `{json.dumps(options)}`. {arithmetic}

## Configuration
```yaml
{config_yaml}```

Reproduce with `fusechat merge {CONFIG_COPY} OUT` (the configuration as given is in `{CONFIG_COPY}` beside this
card; mergekit reads it too for the methods the two share).
"""
    atomic_write_bytes(out / "README.md", text.encode())
    atomic_write_bytes(out / CONFIG_COPY, yaml.safe_dump(card_config(cfg), sort_keys=False).encode())


def card_config(cfg: MergeConfig, name: Callable[[str], str] = str) -> dict[str, Any]:
    """The config as YAML-ready data, parameters written back in mergekit's syntax; `name` renders model refs."""
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
        out["base_model"] = name(cfg.base_model)
    out["models"] = [
        {
            "model": name(m.model),
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
