"""The training stage's options, declared once: `fusechat train`'s flags, the recipe's `train:` section, and the
defaults the Python API gives the Trainer all come from these fields.

Defaults follow the paper (Wan et al. 2024: lr 5e-6, 3 epochs, cosine, 3 % warm-up, weight decay 0, length 2048);
the Trainer's own defaults where the paper says nothing. A field with `trainer=` sets that
`transformers.TrainingArguments` field, so `--per_device_train_batch_size` as HF users type it lands here too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from fusechat.flags import Options, option


class TrainOptions(Options):
    """What a recipe's `train:` section and `fusechat train` both set."""

    lam: float = option(0.9, "weight of the CLM term: lambda*CLM + (1-lambda)*fusion", alias="lambda", ge=0, le=1)
    epochs: float = option(3.0, "passes over the targets (the paper's)", gt=0, trainer="num_train_epochs")
    max_steps: int | None = option(
        None, "stop after this many optimiser steps (overrides epochs)", ge=1, trainer="max_steps"
    )
    learning_rate: float = option(
        5e-6, "peak learning rate (the paper's)", gt=0, lt=1, flags=("--lr",), trainer="learning_rate"
    )
    batch_size: int = option(8, "conversations per process per step", ge=1, trainer="per_device_train_batch_size")
    grad_accum: int = option(1, "gradient accumulation steps", ge=1, trainer="gradient_accumulation_steps")
    warmup_ratio: float = option(
        0.03, "warm-up, as a fraction of all steps (the paper's 3 %)", ge=0, lt=1, trainer="warmup_ratio"
    )

    @field_validator("max_steps", mode="before")
    @classmethod
    def _unset_steps(cls, value: Any) -> Any:
        return None if value in (-1, "-1") else value  # TrainingArguments' own spelling of "no step limit"


class TrainCommandOptions(TrainOptions):
    """Everything `fusechat train` can set beyond the recipe's section (paths and --trainer-arg aside)."""

    clm_only: bool = option(False, "train the CLM-only baseline on the same data (lambda = 1, targets unused)")
    temperature: float = option(1.0, "temperature of the fusion term", gt=0)
    tail_bucket: bool = option(False, "keep the targets' tail mass as one extra bucket (temperature 1 only)")
    max_length: int = option(2048, "truncate conversations to N tokens (the paper's)", ge=2)
    pack: bool = option(False, "pack several conversations per row of --max-length")
    chunk_size: int | None = option(None, "supervised positions per chunk of logits (overrides --chunk-memory)", ge=1)
    chunk_memory: int | None = option(
        None, "MiB for one chunk of the loss's logits (none: from the device: 32 on CPU, more on GPUs)", ge=1
    )
    loss_kernel: Literal["auto", "compiled", "eager"] = option(
        "auto", "the loss's elementwise work: torch.compile'd or eager (auto: compiled on CUDA, eager on CPU)"
    )
    fsdp: bool = option(False, "shard the pivot with FSDP2 (GPUs; under torchrun / accelerate launch)")
    gradient_checkpointing: bool = option(False, "recompute activations in backward", trainer="gradient_checkpointing")
    bf16: Literal["auto", "on", "off"] = option("auto", "bf16 mixed precision (auto: where CUDA supports it)")
    lora_rank: int | None = option(None, "train LoRA adapters of this rank (needs peft), merged at the end", ge=1)
    lora_alpha: float | None = option(None, "LoRA alpha (none: 2 x rank)", gt=0)
    keep_checkpoints: bool = option(False, "keep the Trainer checkpoints at the end")
    save_dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", "dtype of the saved weights (auto: the pivot's; training runs in fp32 or mixed precision)"
    )
    scheduler: str = option("cosine", "learning-rate schedule (the paper's)", trainer="lr_scheduler_type")
    warmup_steps: float | None = option(
        None,
        "warm-up in steps, or a fraction of all steps if < 1 (replaces --warmup-ratio)",
        ge=0,
        flags=("--warmup",),
        trainer="warmup_steps",
    )
    weight_decay: float = option(0.0, "AdamW weight decay (the paper's)", ge=0, trainer="weight_decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: no clipping)", ge=0, trainer="max_grad_norm")
    seed: int = option(42, "random seed of the Trainer (data order, dropout)", ge=0, trainer="seed")
    save_steps: float = option(
        500, "checkpoint every N steps (a fraction < 1: of all steps)", gt=0, trainer="save_steps"
    )
    save_total_limit: int | None = option(None, "keep at most N checkpoints", ge=1, trainer="save_total_limit")
    logging_steps: float = option(
        500, "log every N steps (a fraction < 1: of all steps)", gt=0, trainer="logging_steps"
    )
    report_to: str | list[str] | None = option(
        None, "tensorboard, wandb, none (none given: tensorboard if installed)", trainer="report_to"
    )
    trust_remote_code: bool = option(False, "run the pivot repository's own code")
    allow_pickle: bool = option(False, "accept pickled .bin pivot weights (runs their code)")

    @model_validator(mode="after")
    def _together(self) -> TrainCommandOptions:
        if {"warmup_ratio", "warmup_steps"} <= self.model_fields_set:
            raise ValueError("give --warmup-ratio or --warmup-steps, not both")
        if self.tail_bucket and self.temperature != 1:
            raise ValueError(
                f"--tail-bucket needs --temperature 1 (a tempered tail is unknown), got {self.temperature}"
            )
        return self


def trainer_field_names(model: type[Options] = TrainCommandOptions) -> dict[str, str]:
    """TrainingArguments field -> the option that sets it."""
    return {_trainer(f): name for name, f in model.model_fields.items() if _trainer(f)}


def _trainer(field: Any) -> str | None:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return extra.get("trainer")


def trainer_options(opts: TrainOptions, only_given: bool = False) -> dict[str, Any]:
    """The TrainingArguments fields `opts` sets (only those the user gave when `only_given`; unset optional
    fields are left to the Trainer). A warm-up in steps replaces the ratio."""
    out: dict[str, Any] = {}
    for name, field in type(opts).model_fields.items():
        key, value = _trainer(field), getattr(opts, name)
        if key is None or value is None or (only_given and name not in opts.model_fields_set):
            continue
        out[key] = value
    if "warmup_steps" in out:
        out.pop("warmup_ratio", None)
    if not out.get("gradient_checkpointing", True):
        del out["gradient_checkpointing"]
    return out


def trainer_defaults() -> dict[str, Any]:
    """The TrainingArguments the Python API starts from: these options' defaults (the ratio as transformers 5
    spells it, a warmup_steps fraction)."""
    defaults = trainer_options(TrainCommandOptions())
    defaults["warmup_steps"] = defaults.pop("warmup_ratio")
    return defaults
