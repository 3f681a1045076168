"""How `fusechat train` meets the training engines: the Trainer's arguments, the process group, and what is
accepted of FSDP and DeepSpeed.

The engines themselves are the stock ones (the Hugging Face Trainer over accelerate: DDP, FSDP2, DeepSpeed);
this module fixes what fusechat needs of them and refuses, in one line, what it has not verified.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from fusechat.errors import FusechatError
from fusechat.flags import validate
from fusechat.train.options import TrainCommandOptions, trainer_defaults, trainer_field_names

# The declared options' defaults (train/options.py: the paper's where it gives one); every one can be overridden.
PAPER_DEFAULTS: dict[str, Any] = {
    **trainer_defaults(),
    "ddp_find_unused_parameters": False,  # the loss uses every parameter; the extra graph walk is waste
}
# Optional engines a TrainingArguments field switches on (deepspeed: see _check_deepspeed): field -> (module,
# install line).
ENGINES = {"use_liger_kernel": ("liger_kernel", "pip install liger-kernel")}


def training_args(output_dir: Path, options: dict[str, Any]) -> Any:
    """TrainingArguments from the paper's defaults, the user's options and what fusechat fixes."""
    import torch
    from transformers import TrainingArguments

    owners = trainer_field_names()  # the fields our options own are checked by their declared rules
    validate(TrainCommandOptions, {owners[k]: v for k, v in options.items() if k in owners and v is not None})
    fixed = {"output_dir", "remove_unused_columns", "label_names"}
    clash = fixed & set(options)
    if clash:
        raise FusechatError(f"trainer options {sorted(clash)} are set by fusechat; remove them")
    if "warmup_ratio" in options:
        # transformers 5 folded warmup_ratio into warmup_steps (a float < 1 is a fraction): accept both.
        ratio = options.pop("warmup_ratio")
        if "warmup_steps" in options or not 0 <= float(ratio) < 1:
            raise FusechatError(f"warmup_ratio {ratio}: give a fraction in [0, 1), and not with warmup_steps")
        options["warmup_steps"] = float(ratio)
    opts = dict(PAPER_DEFAULTS)
    opts["report_to"] = "tensorboard" if importlib.util.find_spec("tensorboard") else "none"
    opts["use_cpu"] = not torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        opts["ddp_backend"] = "gloo"
    bf16 = options.pop("bf16", "auto")
    if bf16 == "auto":
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    opts.update(options)
    opts.update(output_dir=str(output_dir), remove_unused_columns=False, label_names=["labels"])
    opts["bf16"] = bool(bf16)
    if opts.get("fsdp"):
        _check_fsdp(opts)
    if opts.get("deepspeed"):
        _check_deepspeed(opts["deepspeed"])
    _check_launcher_config(os.environ)
    unknown = sorted(set(opts) - {f.name for f in dataclasses.fields(TrainingArguments)})
    if unknown:
        raise FusechatError(f"unknown trainer options {unknown}; see transformers.TrainingArguments")
    for key, (module, install) in ENGINES.items():
        if opts.get(key) and importlib.util.find_spec(module) is None:
            raise FusechatError(f"{key} needs {module}, which is not installed: {install}")
    if not opts.get("deepspeed"):  # DeepSpeed starts its own process group
        _init_distributed(opts.get("ddp_backend"), float(opts.get("ddp_timeout", 1800)))
    try:
        return TrainingArguments(**opts)
    except (ValueError, TypeError) as e:
        raise FusechatError(f"invalid trainer options: {e}") from None


def _check_fsdp(opts: dict[str, Any]) -> None:
    """FSDP2 on GPUs only, FSDP1 not at all; `fsdp_config` defaults to FSDP2 with full sharding."""
    import torch

    if not torch.cuda.is_available():
        # Found on transformers 5.23 / accelerate 1.15: with use_cpu the FSDP request is silently dropped and
        # plain DDP runs; without it the Trainer refuses. Say so instead of pretending to shard.
        raise FusechatError(
            "FSDP needs GPUs with this transformers/accelerate (on CPU the Trainer would silently run DDP); "
            "drop the fsdp option to train with DDP (torchrun --nproc_per_node N)"
        )
    config = opts.setdefault("fsdp_config", {})
    if not isinstance(config, dict) or int(config.get("version", 2)) != 2:
        raise FusechatError(f"fsdp_config {config!r}: fusechat trains with FSDP2 only (version: 2)")
    config.setdefault("version", 2)
    config.setdefault("reshard_after_forward", True)


def _check_deepspeed(config: Any) -> None:
    """DeepSpeed ZeRO stages 1 and 2 (replicated parameters) where deepspeed is installed; ZeRO-3 refused."""
    installed = importlib.util.find_spec("deepspeed") is not None
    if isinstance(config, str | os.PathLike):
        try:
            config = json.loads(Path(config).read_text())
        except (OSError, json.JSONDecodeError) as e:
            if installed:
                raise FusechatError(f"deepspeed={config}: not a readable JSON file ({e.__class__.__name__})") from None
            config = None  # the missing engine is the first thing to fix
    stage = (config.get("zero_optimization") or {}).get("stage", 0) if isinstance(config, dict) else None
    if stage == 3:
        raise FusechatError(
            "DeepSpeed ZeRO-3 is not supported (the loss is untested with its partitioned parameters); "
            "shard the pivot with FSDP2 (--fsdp) or use ZeRO stage 1 or 2"
        )
    if not installed:
        raise FusechatError(
            "deepspeed is set but DeepSpeed is not installed (pip install deepspeed); "
            "without it train with DDP (torchrun) or FSDP2 (--fsdp)"
        )


def _check_launcher_config(env: Any) -> None:
    """The same limits where `accelerate launch --config_file` asks for FSDP or DeepSpeed (through the
    environment it sets, not through Trainer options)."""
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        _check_deepspeed({"zero_optimization": {"stage": 3}})
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true" and env.get("FSDP_VERSION", "1") != "2":
        raise FusechatError("the accelerate config asks for FSDP1: fusechat trains with FSDP2 only (fsdp_version: 2)")


def _init_distributed(backend: str | None, timeout_s: float) -> None:
    """Start the process group when launched with several processes (torchrun, accelerate launch), before
    the Trainer would: on CUDA bound to this process's GPU (device_id from LOCAL_RANK), so NCCL does not
    guess the device from the global rank; gloo on CPU. The Trainer then uses this group."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return
    timeout = datetime.timedelta(seconds=timeout_s)
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group(backend or "nccl", device_id=device, timeout=timeout)
    else:
        dist.init_process_group(backend or "gloo", timeout=timeout)
