"""Where the teacher pass puts its model, and how many tokens it asks of the device per batch.

Two decisions live here, apart from the scoring loop. The batch budget: on a GPU it is sized from the memory
left free once the model is loaded, so a large GPU is not starved by a budget fitted to a laptop (on a CPU,
larger batches are not faster, so the default stays). The placement: one device, or, for a teacher larger than
one GPU, accelerate's big-model placement (`from_pretrained(device_map=...)`) over the visible GPUs with CPU and
disk offload for what does not fit. Under torchrun each process on a node takes its own group of GPUs, so the
data is still split between processes (shards) while each model spans its group.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from fusechat.errors import FusechatError
from fusechat.models.load import check_model_dir

CPU_BATCH_TOKENS = 4096
MIN_BATCH_TOKENS, MAX_BATCH_TOKENS = 4096, 262_144
FREE_MEMORY_SHARE = 0.6  # of the free memory after loading; the rest absorbs allocator fragmentation


def bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """Peak activation bytes per token of an inference-mode forward without a KV cache.

    In inference mode a layer's activations are freed as the next one runs, so the peak is about one layer's:
    the residual stream, its normalised copy, q, k, v and the attention output (about 8 x hidden), and the MLP's
    gate, up and their product (3 x intermediate, plus one for the activation). Eager attention also holds the
    scores, heads x length per token, counted here at a length of 2,048.
    """
    text = getattr(config, "get_text_config", lambda: config)()
    hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0) or 4096)
    inter = int(getattr(text, "intermediate_size", 0) or getattr(text, "n_inner", 0) or 4 * hidden)
    size = torch.finfo(dtype).bits // 8
    per_token = size * (8 * hidden + 4 * inter)
    if getattr(config, "_attn_implementation", "sdpa") == "eager":
        per_token += 4 * int(getattr(text, "num_attention_heads", 0) or getattr(text, "n_head", 0) or 32) * 2048
    return per_token


def batch_budget(free_bytes: int, config: Any, dtype: torch.dtype, vocab: int, head_chunk: int = 1024) -> int:
    """Tokens per batch (batch size x longest length) that fit in `free_bytes` of device memory.

    The head's chunk of float32 logits (and its top-k and log-sum-exp work space, counted as a second copy) is
    set aside first; the result is a multiple of 1,024 within [MIN_BATCH_TOKENS, MAX_BATCH_TOKENS].
    """
    usable = free_bytes * FREE_MEMORY_SHARE - 2 * head_chunk * vocab * 4
    tokens = int(usable // bytes_per_token(config, dtype)) // 1024 * 1024
    return max(MIN_BATCH_TOKENS, min(MAX_BATCH_TOKENS, tokens))


def auto_batch_tokens(model: Any, dtype: torch.dtype, devices: list[torch.device]) -> int:
    """The default budget: from the least free memory among the model's CUDA devices; the CPU default otherwise."""
    cuda = [d for d in devices if d.type == "cuda"]
    if not cuda:
        return CPU_BATCH_TOKENS
    free = min(torch.cuda.mem_get_info(d)[0] for d in cuda)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    return batch_budget(free, model.config, dtype, vocab)


def parse_max_memory(value: str | None) -> dict[int | str, str | int] | None:
    """`0=70GiB,1=70GiB,cpu=200GiB` from the command line as accelerate's max_memory (GPU indices as ints)."""
    if not value:
        return None
    out: dict[int | str, str | int] = {}
    for part in value.split(","):
        key, sep, amount = part.strip().partition("=")
        if not sep or not key or not amount:
            raise FusechatError(f"--max-memory {value!r}: expected DEVICE=SIZE pairs, for example 0=70GiB,cpu=200GiB")
        out[int(key) if key.isdigit() else key] = int(amount) if amount.isdigit() else amount  # bare: bytes
    return out


def parse_device_map(value: str | None) -> str | dict | None:
    """`auto`/`balanced`/`sequential`, or a JSON file mapping module names to devices ("cpu", "disk", 0, ...)."""
    if value is None or value in ("auto", "balanced", "balanced_low_0", "sequential"):
        return value
    path = Path(value)
    try:
        mapping = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FusechatError(
            f"--device-map {value}: neither auto/balanced/sequential nor a readable JSON file ({e})"
        ) from None
    if not isinstance(mapping, dict):
        raise FusechatError(f"--device-map {value}: the JSON file must map module names to devices")
    return mapping


def local_gpus() -> list[int]:
    """This process's GPUs: all visible ones, or under torchrun an equal slice of them per process on the node."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if local_world <= 1 or n == 0:
        return list(range(n))
    per = n // local_world
    if per == 0:
        raise FusechatError(f"--device-map with {local_world} processes per node but only {n} GPUs: use fewer")
    return list(range(local_rank * per, (local_rank + 1) * per))


def load_placed(
    model_dir: Path,
    dtype: torch.dtype,
    device_map: str | dict,
    max_memory: dict | None,
    offload_folder: str | os.PathLike | None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> Any:
    """Load a causal LM spread by accelerate over this process's GPUs, the CPU and (if given a folder) the disk."""
    from transformers import AutoModelForCausalLM

    check_model_dir(model_dir, allow_pickle)
    if max_memory is None and isinstance(device_map, str):
        gpus = local_gpus()
        if gpus and len(gpus) < torch.cuda.device_count():  # torchrun: keep to this process's group
            max_memory = {g: torch.cuda.mem_get_info(g)[0] for g in gpus}
            max_memory["cpu"] = _cpu_memory()
    if offload_folder and int(os.environ.get("WORLD_SIZE", 1)) > 1:  # torchrun: one folder per process
        offload_folder = Path(offload_folder) / f"rank-{os.environ.get('RANK', 0)}"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir,
            dtype=dtype,
            device_map=device_map,
            max_memory=max_memory,
            offload_folder=str(offload_folder) if offload_folder else None,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
        )
    except (OSError, ValueError) as e:
        raise FusechatError(f"{model_dir}: cannot place the model with --device-map ({e})") from None
    return model


def _cpu_memory() -> int:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def input_device(model: Any) -> torch.device:
    """Where a placed model wants its input ids: the device of its embeddings (the CPU if they are offloaded)."""
    placement = getattr(model, "hf_device_map", None) or {}
    embed = model.get_input_embeddings()
    hook = getattr(embed, "_hf_hook", None)
    if getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    where = embed.weight.device
    if where.type == "meta":
        first = next(iter(placement.values()), "cpu")
        return torch.device("cpu" if first in ("cpu", "disk") else first)
    return where


def model_devices(model: Any, fallback: torch.device) -> list[torch.device]:
    """The compute devices a model uses (GPU indices of its device map, else where its weights are)."""
    placement = getattr(model, "hf_device_map", None)
    if not placement:
        return [fallback]
    out = []
    for d in set(placement.values()):
        out.append(torch.device("cuda", d) if isinstance(d, int) else torch.device("cpu"))
    return sorted(set(out), key=str)
