"""The teacher pass's options, declared once: `fusechat teach`'s flags and the recipe's `teach:` section."""

from __future__ import annotations

from typing import Literal

from fusechat.flags import Options, option


class TeachOptions(Options):
    """What a recipe's `teach:` section and `fusechat teach` both set."""

    top_k: int = option(10, "next tokens kept per position (the paper's)", ge=1, le=1024)
    batch_tokens: int = option(4096, "batch size x longest length of a scoring batch", ge=16)


class TeachCommandOptions(TeachOptions):
    """`fusechat teach`'s options beyond the recipe's (the input and output paths and --overwrite aside)."""

    shard_rows: int = option(256, "conversations per shard (the unit a rerun resumes by)", ge=1)
    # The command sizes its batches from a GPU's free memory unless told; a recipe keeps its fixed default, which
    # its run plan's settings (and so its resume) are keyed on.
    batch_tokens: int | None = option(
        None, "batch size x longest length of a scoring batch (none: from a GPU's free memory, 4096 on a CPU)", ge=16
    )
    shard: str | None = option(None, "I/N: this process takes shards I, I+N, ... (none: torchrun's RANK/WORLD_SIZE)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", "the forward's dtype (auto: bf16 on GPUs that have it, else fp32)"
    )
    device: str | None = option(None, "cpu, cuda, cuda:1 ... (none: cuda:LOCAL_RANK if present, else cpu)")
    device_map: str | None = option(
        None,
        "spread a teacher larger than one GPU with accelerate: auto, balanced, sequential, or a JSON file mapping "
        'module names to devices (0, 1, "cpu", "disk"); under torchrun each process takes its own GPUs',
    )
    max_memory: str | None = option(None, "with --device-map: a cap per device, for example 0=70GiB,1=70GiB,cpu=200GiB")
    offload_folder: str | None = option(None, "with --device-map: where layers that fit nowhere else are offloaded")
    trust_remote_code: bool = option(False, "run the model repository's own code")
    allow_pickle: bool = option(False, "accept pickled .bin weights (runs their code)")
    no_progress: bool = option(False, "no progress bar")
