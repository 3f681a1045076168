"""Tiny Llama-style checkpoints written straight to disk, for tests, golden values and the benchmark.

Tensor names and shapes come from transformers (the model is built on the meta device, so nothing is
allocated); values come from a seeded generator. Targets are the base plus small deltas, as fine-tuned
targets are, with a few tensors left exactly unchanged so VaRM's uniform fallback is exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def llama_config(
    hidden: int = 16,
    intermediate: int = 32,
    layers: int = 3,
    vocab: int = 64,
    heads: int = 2,
    kv_heads: int = 1,
    tie: bool = False,
) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": vocab,
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": tie,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "dtype": "float32",
    }


def tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a config's weights, from transformers, without allocating them."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type", "dtype")})
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    shapes = {n: tuple(p.shape) for n, p in model.state_dict().items()}
    if config.get("tie_word_embeddings"):
        shapes.pop("lm_head.weight", None)
    return shapes


def write_checkpoint(directory: Path, config: dict, tensors: dict[str, torch.Tensor], shards: int = 1) -> Path:
    """Write config.json and the tensors as `shards` safetensors files (with an index when more than one)."""
    directory.mkdir(parents=True, exist_ok=True)
    dtype = next(iter(tensors.values())).dtype
    config = {**config, "dtype": str(dtype).removeprefix("torch.")}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    names = sorted(tensors)
    if shards == 1:
        save_file({n: tensors[n].contiguous() for n in names}, str(directory / "model.safetensors"))
        return directory
    weight_map = {}
    for s in range(shards):
        part = names[s::shards]
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in part}, str(directory / fname))
        weight_map.update({n: fname for n in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory


def base_tensors(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """Random weights for every tensor of `config` (norm weights near 1, matrices with std 0.1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in sorted(tensor_shapes(config).items()):
        t = torch.randn(shape, generator=g) * 0.1
        out[name] = t + 1.0 if "norm" in name else t
    return out


def target_tensors(
    base: dict[str, torch.Tensor], seed: int, scale: float, unchanged: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """base + deltas of per-tensor random size around `scale`; names containing an `unchanged` entry stay."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in base.items():
        if any(u in name for u in unchanged):
            out[name] = t.clone()
            continue
        size = scale * float(torch.rand((), generator=g) * 1.5 + 0.25)
        out[name] = t + torch.randn(t.shape, generator=g) * size
    return out


def make_family(
    root: Path,
    config: dict | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    shards: tuple[int, int, int] = (1, 1, 1),
    unchanged: tuple[str, ...] = ("layers.0.input_layernorm",),
) -> tuple[Path, Path, Path]:
    """A base ("pivot") and two targets fine-tuned from it, written under `root`; returns the directories."""
    config = config or llama_config()
    base = base_tensors(config, seed)
    a = target_tensors(base, seed + 1, 0.02, unchanged)
    b = target_tensors(base, seed + 2, 0.04, unchanged)
    dirs = []
    for label, tensors, n in zip(("base", "a", "b"), (base, a, b), shards, strict=True):
        cast = {k: v.to(dtype) for k, v in tensors.items()}
        dirs.append(write_checkpoint(root / label, config, cast, shards=n))
    return dirs[0], dirs[1], dirs[2]


GOLDEN = Path(__file__).parent / "golden"
INPUTS = {
    "BASE": str(GOLDEN / "inputs" / "base"),
    "A": str(GOLDEN / "inputs" / "a"),
    "B": str(GOLDEN / "inputs" / "b"),
}


def load_weights(directory: Path) -> dict:
    """Every tensor of a checkpoint directory's safetensors files, by name."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(directory).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out
