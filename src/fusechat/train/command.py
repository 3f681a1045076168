"""`fusechat train`: the command line of the training stage (arguments only; the work is `api.train`).

The flags come from `train/options.py`. Any other `transformers.TrainingArguments` field is accepted the way
HF and TRL users type it (`--lr_scheduler_kwargs '{...}'`, `--per_device_train_batch_size 4`), typed by
transformers' own HfArgumentParser, or as `--trainer-arg KEY=VALUE` (value read as YAML).
"""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from fusechat.errors import FusechatError
from fusechat.flags import StageCommand, arg, given, validate
from fusechat.train.options import TrainCommandOptions, trainer_field_names, trainer_options

EXAMPLE = """example:
  fusechat train --pivot smollm2-135m-instruct --targets run/fuse/pair-qwen --out run/train/pair-qwen \\
      --epochs 3 --lr 5e-6 --batch-size 8 --grad-accum 16
  torchrun --nproc_per_node 8 -m fusechat train ... --per_device_train_batch_size 4 --gradient_accumulation_steps 4
"""


def _trainer_arg(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as e:
        problem = f"{key.strip()}: value {value!r} is not valid YAML ({e.__class__.__name__})"
        raise argparse.ArgumentTypeError(problem) from None


def _keywords(args: argparse.Namespace) -> dict[str, Any]:
    """`api.train`'s keywords: fusechat's own options (those that set no TrainingArguments field) by name, and
    the TrainingArguments fields given in any of the three ways."""
    opts, options = options_from(args)
    if opts.fsdp:
        options.setdefault("fsdp", True)
    trainer_fields = set(trainer_field_names().values()) | {"fsdp", "bf16"}  # the last two reach `options`
    own = {k: v for k, v in opts.model_dump().items() if k not in trainer_fields}
    own["tail"] = own.pop("tail_bucket")
    if own["chunk_memory"] is not None:
        own["chunk_memory"] <<= 20  # MiB on the command line, bytes in the API
    return {**own, **options}


COMMAND = StageCommand(
    "train",
    help="fine-tune the pivot on fused training targets (or CLM only)",
    description="Fine-tune the pivot with lambda*CLM + (1-lambda)*fusion loss into a Hugging Face "
    "checkpoint. Runs under torchrun / accelerate launch for several processes. Any other "
    "transformers.TrainingArguments field is accepted as --field_name VALUE.",
    example=EXAMPLE,
    stage="fusechat.train.api:train",
    inputs=(
        arg("--pivot", required=True, help="pivot model: a Hugging Face directory or an installed name"),
        arg("--targets", required=True, help="training targets directory (output of `fusechat fuse`)"),
        arg("--out", required=True, help="output checkpoint directory"),
    ),
    options=TrainCommandOptions,
    bool_values=True,
    keywords=_keywords,
    overwrite="replace an --out trained with other inputs or settings",
)


def register(subparsers: Any) -> None:
    p = COMMAND.register(subparsers)
    p.add_argument(
        "--trainer-arg",
        type=_trainer_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other transformers.TrainingArguments field, e.g. fsdp='full_shard auto_wrap' (repeatable)",
    )
    p.set_defaults(extra_args=_trainer_flags)


def _trainer_flags(extra: list[str]) -> dict[str, Any]:
    """TrainingArguments fields typed as `--field_name VALUE`, parsed by transformers' own HfArgumentParser."""
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser(TrainingArguments, add_help=False)
    for action in parser._actions:  # only what was typed: the defaults are fusechat's, not the dataclass's
        action.default = argparse.SUPPRESS

    def refuse(message: str) -> None:
        raise FusechatError(f"{message} (a transformers.TrainingArguments flag)")

    parser.error = refuse  # type: ignore[method-assign]
    values, unknown = parser.parse_known_args(extra)
    if unknown:
        raise FusechatError(
            f"unrecognized arguments: {' '.join(unknown)}; "
            "see `fusechat train --help` or transformers.TrainingArguments"
        )
    return vars(values)


def options_from(args: argparse.Namespace) -> tuple[TrainCommandOptions, dict[str, Any]]:
    """The validated options and the TrainingArguments to pass: flags, HF-style flags and --trainer-arg KEY=VALUE
    together, each value given once, fusechat's own options checked by their declared rules."""
    mine = given(TrainCommandOptions, args)
    extra: dict[str, Any] = {}
    owners = trainer_field_names()
    typed = [(f"--{k}", k, v) for k, v in getattr(args, "trainer_flags", {}).items()]
    for flag, key, value in [*typed, *((f"--trainer-arg {k}", k, v) for k, v in args.trainer_arg)]:
        name = owners.get(key)
        if (name or key) in mine or key in extra:
            raise FusechatError(f"{flag} repeats an option already given")
        if name is not None:
            mine[name] = value  # checked below by the option's own rule
        else:
            extra[key] = value
    opts = validate(TrainCommandOptions, mine)
    options = {**trainer_options(opts, only_given=True), **extra}
    options["bf16"] = {"auto": "auto", "on": True, "off": False}[opts.bf16]
    return opts, options
