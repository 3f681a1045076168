"""`fusechat train`: the command line of the training stage (arguments only; the work is `api.train`)."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from fusechat.errors import FusechatError

# Common Trainer options with their own flags: flag -> (TrainingArguments field, type, help).
OPTIONS: dict[str, tuple[str, type, str]] = {
    "--epochs": ("num_train_epochs", float, "epochs (default 3, the paper's)"),
    "--max-steps": ("max_steps", int, "stop after this many optimiser steps (overrides --epochs)"),
    "--lr": ("learning_rate", float, "peak learning rate (default 5e-6, the paper's)"),
    "--scheduler": ("lr_scheduler_type", str, "learning-rate schedule (default cosine)"),
    "--warmup": ("warmup_steps", float, "warm-up: steps, or a fraction of all steps if < 1 (default 0.03)"),
    "--weight-decay": ("weight_decay", float, "AdamW weight decay (default 0)"),
    "--batch-size": ("per_device_train_batch_size", int, "conversations per process per step (default 8)"),
    "--grad-accum": ("gradient_accumulation_steps", int, "gradient accumulation steps (default 1)"),
    "--max-grad-norm": ("max_grad_norm", float, "gradient clipping norm (default 1.0)"),
    "--seed": ("seed", int, "random seed of the Trainer (data order, dropout; default 42)"),
    "--save-steps": ("save_steps", float, "checkpoint every N steps (default 500)"),
    "--save-total-limit": ("save_total_limit", int, "keep at most N checkpoints"),
    "--logging-steps": ("logging_steps", float, "log every N steps"),
    "--report-to": ("report_to", str, "tensorboard / wandb / none (default: tensorboard if installed)"),
}


def _trainer_arg(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as e:
        problem = f"{key.strip()}: value {value!r} is not valid YAML ({e.__class__.__name__})"
        raise argparse.ArgumentTypeError(problem) from None


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="fine-tune the pivot on fused training targets (or CLM only)",
        description="Fine-tune the pivot with lambda*CLM + (1-lambda)*fusion loss into a Hugging Face "
        "checkpoint. Runs under torchrun / accelerate launch for several processes.",
    )
    add = p.add_argument
    add("--pivot", required=True, help="pivot model: a Hugging Face directory or an installed name")
    add("--targets", required=True, help="training targets directory (output of `fusechat fuse`)")
    add("--out", required=True, help="output checkpoint directory")
    add("--lambda", dest="lam", type=float, default=0.9, help="weight of the CLM term (default 0.9)")
    add("--clm-only", action="store_true", help="train the CLM-only baseline on the same data")
    add("--trust-remote-code", action="store_true", help="run the pivot repository's own code")
    add("--allow-pickle", action="store_true", help="accept pickled .bin pivot weights (runs their code)")
    add("--temperature", type=float, default=1.0, help="temperature of the fusion term (default 1)")
    add("--tail-bucket", action="store_true", help="keep the targets' tail mass as one extra bucket")
    add("--max-length", type=int, default=2048, help="truncate conversations to N tokens (2048)")
    add("--pack", action="store_true", help="pack several conversations per row of --max-length")
    add("--chunk-size", type=int, help="supervised positions per chunk of logits (overrides --chunk-memory)")
    add("--chunk-memory", type=int, metavar="MIB", help="MiB for one chunk of the loss (default: from the device)")
    add("--fsdp", action="store_true", help="shard the pivot with FSDP2 (GPUs; under torchrun / accelerate launch)")
    add("--gradient-checkpointing", action="store_true", help="recompute activations in backward")
    add("--bf16", choices=("auto", "on", "off"), default="auto", help="bf16 mixed precision (auto: on GPUs)")
    add("--lora-rank", type=int, help="train LoRA adapters of this rank (needs peft), merged at the end")
    add("--lora-alpha", type=float, help="LoRA alpha (default 2 x rank)")
    add("--keep-checkpoints", action="store_true", help="keep the Trainer checkpoints at the end")
    for flag, (_, typ, text) in OPTIONS.items():
        p.add_argument(flag, type=typ, help=text)
    p.add_argument(
        "--trainer-arg",
        type=_trainer_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other transformers.TrainingArguments field, e.g. fsdp='full_shard auto_wrap' (repeatable)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fusechat.train.api import train

    options: dict[str, Any] = {}
    for flag, (field, _, _) in OPTIONS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            options[field] = value
    for key, value in args.trainer_arg:
        if key in options:
            raise FusechatError(f"--trainer-arg {key} repeats an option given by its own flag")
        options[key] = value
    if args.gradient_checkpointing:
        options["gradient_checkpointing"] = True
    if args.fsdp:
        options.setdefault("fsdp", True)
    options["bf16"] = {"auto": "auto", "on": True, "off": False}[args.bf16]
    out = train(
        args.pivot,
        args.targets,
        args.out,
        lam=args.lam,
        clm_only=args.clm_only,
        temperature=args.temperature,
        tail=args.tail_bucket,
        max_length=args.max_length,
        pack=args.pack,
        chunk_size=args.chunk_size,
        chunk_memory=None if args.chunk_memory is None else args.chunk_memory << 20,
        keep_checkpoints=args.keep_checkpoints,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
        **options,
    )
    print(out)
    return 0
