"""The dtype of a trained checkpoint: the pivot's by default, whatever precision training ran in.

Training on a CPU runs in fp32 (mixed precision is the Trainer's business), so the Trainer saves fp32 weights:
a 135M pivot whose weights are bf16 came out as 538 MB instead of 270 MB. The saved files are cast afterwards,
one safetensors file at a time, rather than the model in memory: that works the same for a plain, an FSDP
(gathered on save) and a LoRA-merged model.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

SAVE_DTYPES = ("auto", "float32", "bfloat16", "float16")
_HEADER = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


def pivot_dtype(model_dir: Path) -> str:
    """The dtype the pivot is stored in: its config's `dtype` (`torch_dtype` in older configs, or the text
    model's for a multimodal config), else the most common float dtype among its safetensors tensors, else
    float32."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    for cfg in (config, config.get("text_config") or {}):
        for key in ("dtype", "torch_dtype"):
            if cfg.get(key) in SAVE_DTYPES[1:]:
                return cfg[key]
    counts: Counter[str] = Counter()
    for f in sorted(Path(model_dir).glob("*.safetensors"))[:1]:
        for name, info in _header(f).items():
            if name != "__metadata__" and info.get("dtype") in _HEADER:
                counts[_HEADER[info["dtype"]]] += 1
    found = counts.most_common(1)[0][0] if counts else "float32"
    return found if found in SAVE_DTYPES[1:] else "float32"


def _header(path: Path) -> dict:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))


def cast_checkpoint(directory: Path, dtype: str) -> None:
    """Cast the floating-point tensors of every safetensors file in `directory` to `dtype`, and say so in its
    config.json (and the sharded index's total size). Files already in `dtype` are left untouched."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    target = getattr(torch, dtype)
    index_path = directory / "model.safetensors.index.json"
    total = 0
    for f in sorted(directory.glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            metadata = st.metadata()
            tensors = {name: st.get_tensor(name) for name in st.keys()}
        if any(t.is_floating_point() and t.dtype != target for t in tensors.values()):
            tensors = {n: t.to(target) if t.is_floating_point() else t for n, t in tensors.items()}
            tmp = f.with_name(f".{f.name}.cast.tmp")
            save_file(tensors, str(tmp), metadata=metadata)
            tmp.replace(f)
        total += sum(t.numel() * t.element_size() for t in tensors.values())
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        index.setdefault("metadata", {})["total_size"] = total
        index_path.write_text(json.dumps(index, indent=2) + "\n")
    config_path = directory / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        _set_dtype(config, dtype)
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _set_dtype(config: dict, dtype: str) -> None:
    """Set the dtype a config records, at the top and in any sub-config (text_config, vision_config) that has one."""
    config["dtype"] = dtype
    config.pop("torch_dtype", None)
    for value in config.values():
        if isinstance(value, dict) and ("dtype" in value or "torch_dtype" in value):
            _set_dtype(value, dtype)
