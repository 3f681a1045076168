"""`train()`: fine-tune the pivot on training targets (or CLM only) into a plain Hugging Face checkpoint.

Everything that can be wrong with the inputs is checked before the model is loaded: lambda, the targets
store (stage, emptiness, tokenizer, vocabulary range), the Trainer options, and the output directory. The
output is a Hugging Face directory that `from_pretrained` loads as is, plus `manifest.json` (written last)
and a README model card; the Trainer's checkpoints live in `checkpoints/` while training runs, so rerunning
the same command after an interruption resumes from the newest one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusechat.errors import FusechatError
from fusechat.flags import validate
from fusechat.manifest import (
    atomic_write_bytes,
    file_entries,
    fingerprint,
    locked,
    prepare_output_dir,
    read_manifest,
    remove_temporaries,
    write_manifest,
)
from fusechat.train.card import model_card
from fusechat.train.options import TrainCommandOptions, trainer_defaults, trainer_field_names
from fusechat.verify import weight_files

STAGE = "train"
CHECKPOINTS = "checkpoints"
TARGET_STAGES = ("fuse",)
CLM_STAGES = ("fuse", "teach")
# The declared options' defaults (train/options.py: the paper's where it gives one); every one can be overridden.
PAPER_DEFAULTS: dict[str, Any] = {
    **trainer_defaults(),
    "ddp_find_unused_parameters": False,  # the loss uses every parameter; the extra graph walk is waste
}
# Optional engines a TrainingArguments field switches on: field -> (module, install line).
ENGINES = {
    "deepspeed": ("deepspeed", "pip install deepspeed"),
    "use_liger_kernel": ("liger_kernel", "pip install liger-kernel"),
}
# Options that change how a run is watched or stored, not what it computes (left out of the fingerprint).
NOT_FINGERPRINTED = {"logging_steps", "report_to", "save_steps", "save_total_limit", "save_strategy"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """What `train()` was asked for, beyond the Trainer's own options."""

    lam: float
    clm_only: bool
    temperature: float
    tail: bool
    max_length: int | None
    pack: bool
    chunk_size: int | None
    keep_checkpoints: bool
    lora_rank: int | None = None
    lora_alpha: float | None = None

    def check(self) -> None:
        """The declared rules (train/options.py), for a call from Python as for the command line."""
        values = {
            "lam": self.lam,
            "temperature": self.temperature,
            "tail_bucket": self.tail,
            "chunk_size": self.chunk_size,
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
        }
        if self.max_length is not None:  # None (no truncation) is the Python API's alone
            values["max_length"] = self.max_length
        validate(TrainCommandOptions, values)
        if self.pack and self.max_length is None:
            raise FusechatError("--pack needs --max-length (the length of a packed row)")
        if self.lora_rank is not None and importlib.util.find_spec("peft") is None:
            raise FusechatError("--lora-rank needs peft: pip install 'fusechat[lora]' (peft==0.21.2)")


def _open_targets(targets: str | os.PathLike, clm_only: bool, pivot_fp: str) -> Any:
    """Open the targets store and check its stage, that it is not empty, and its tokenizer."""
    from fusechat.store.format import TopKStore

    store = TopKStore(targets)
    stage = store.manifest.get("stage")
    allowed = CLM_STAGES if clm_only else TARGET_STAGES
    if stage not in allowed:
        also = " or the pivot's 'teach' store" if clm_only else ""
        raise FusechatError(f"{targets}: holds a '{stage}' store; training needs a 'fuse' output{also}")
    counts = store.manifest.get("counts", {})
    if not counts.get("conversations") or not counts.get("supervised_positions"):
        raise FusechatError(
            f"{targets}: the target set is empty ({counts.get('conversations', 0)} conversations, "
            f"{counts.get('supervised_positions', 0)} supervised positions); rebuild it from non-empty data"
        )
    theirs = store.manifest.get("tokenizer_fingerprint")
    if theirs != pivot_fp:
        made_for = store.manifest.get("pivot") or store.manifest.get("model") or "another model"
        raise FusechatError(
            f"{targets}: made for {made_for}, whose tokenizer ({theirs}) is not the pivot's ({pivot_fp}); "
            "train the pivot the targets were made for, or rebuild the targets for this pivot"
        )
    return store


def _training_args(out: Path, options: dict[str, Any]) -> Any:
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
    opts.update(output_dir=str(out / CHECKPOINTS), remove_unused_columns=False, label_names=["labels"])
    opts["bf16"] = bool(bf16)
    if opts.get("fsdp") and not torch.cuda.is_available():
        # Found on transformers 5.23 / accelerate 1.15: with use_cpu the FSDP request is silently dropped and
        # plain DDP runs; without it TrainingArguments refuses. Say so instead of pretending to shard.
        raise FusechatError(
            "FSDP needs GPUs with this transformers/accelerate (on CPU the Trainer would silently run DDP); "
            "drop the fsdp option to train with DDP (torchrun --nproc_per_node N)"
        )
    unknown = sorted(set(opts) - {f.name for f in dataclasses.fields(TrainingArguments)})
    if unknown:
        raise FusechatError(f"unknown trainer options {unknown}; see transformers.TrainingArguments")
    for key, (module, install) in ENGINES.items():
        if opts.get(key) and importlib.util.find_spec(module) is None:
            raise FusechatError(f"{key} needs {module}, which is not installed: {install}")
    try:
        return TrainingArguments(**opts)
    except (ValueError, TypeError) as e:
        raise FusechatError(f"invalid trainer options: {e}") from None


def _checkpoint_whole(path: Path) -> bool:
    """True if the Trainer finished writing this checkpoint: trainer_state.json (written last) is valid JSON
    for the step in the directory's name, and every safetensors file ends where its header says."""
    from fusechat.verify import safetensors_problem

    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if str(state.get("global_step")) != path.name.rsplit("-", 1)[-1]:
        return False
    return all(safetensors_problem(f) is None for f in path.glob("*.safetensors"))


def _latest_checkpoint(out: Path) -> str | None:
    """The newest whole Trainer checkpoint; newer half-written ones (a kill during a save) are removed first.

    The Trainer writes a checkpoint's files in place, so a run killed while saving leaves a directory that
    `get_last_checkpoint` would pick and `resume_from_checkpoint` would fail on or, worse, half load.
    """
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    d = out / CHECKPOINTS
    if not d.is_dir():
        return None
    steps = []
    for p in d.iterdir():
        tail = p.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
        if p.is_dir() and tail != p.name and tail.isdigit():
            steps.append((int(tail), p))
    for _, p in sorted(steps, reverse=True):
        if _checkpoint_whole(p):
            return str(p)
        log.warning("%s: half-written checkpoint (the run was stopped while saving it); removing it", p)
        shutil.rmtree(p, ignore_errors=True)
    return None


def _previous_run(out: Path, fp: str) -> str | None:
    """'done' if `out` holds this finished run, a checkpoint to resume from, or None to start afresh."""
    if not (out / "manifest.json").is_file():
        return None
    old = read_manifest(out, stage=STAGE, require_complete=False)
    if old.get("fingerprint") != fp:
        if old.get("complete") or _latest_checkpoint(out):
            raise FusechatError(f"{out}: holds a training run with other inputs or settings; choose another --out")
        return None
    if old.get("complete"):
        return "done"
    return _latest_checkpoint(out)


def train(
    pivot: str | os.PathLike,
    targets: str | os.PathLike,
    out: str | os.PathLike,
    lam: float = 0.9,
    clm_only: bool = False,
    *,
    temperature: float = 1.0,
    tail: bool = False,
    max_length: int | None = 2048,
    pack: bool = False,
    chunk_size: int | None = None,
    keep_checkpoints: bool = False,
    lora_rank: int | None = None,
    lora_alpha: float | None = None,
    save_dtype: str = "auto",
    callbacks: list | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    **trainer_options: Any,
) -> Path:
    """Fine-tune `pivot` on the training targets in `targets`; write a Hugging Face checkpoint to `out`.

    The loss is lam * CLM + (1 - lam) * fusion over supervised positions (`clm_only` trains the CLM baseline
    on the same data: lam = 1, targets unused). `trainer_options` are `transformers.TrainingArguments` fields
    (num_train_epochs, learning_rate, lr_scheduler_type, warmup_steps, per_device_train_batch_size,
    gradient_accumulation_steps, gradient_checkpointing, seed, max_steps, save_steps, fsdp, deepspeed, ...);
    `bf16="auto"` (the default) uses bf16 where CUDA supports it. An interrupted run resumes from its newest
    checkpoint when rerun with the same arguments; a finished one is not redone. `lora_rank` trains LoRA
    adapters (peft, on every linear layer but the head; alpha defaults to 2 x rank) and merges them into full
    weights at the end. `save_dtype` is the dtype of the saved weights: "auto" (the pivot's, from its config or
    weights; training itself runs in fp32, or the Trainer's mixed precision), "float32", "bfloat16" or
    "float16". Returns `out`.
    """
    from transformers import AutoConfig

    from fusechat.models.load import check_model_dir, load_tokenizer, resolve_model_dir, tokenizer_fingerprint
    from fusechat.train.data import TargetsDataset
    from fusechat.train.save import SAVE_DTYPES, pivot_dtype

    settings = Settings(
        lam,
        clm_only,
        temperature,
        tail,
        max_length,
        pack,
        chunk_size,
        keep_checkpoints,
        lora_rank,
        lora_alpha,
    )
    settings.check()
    if save_dtype not in SAVE_DTYPES:
        raise FusechatError(f"--save-dtype must be one of {', '.join(SAVE_DTYPES)}, not {save_dtype!r}")
    out = Path(out)
    pivot_dir = resolve_model_dir(pivot)
    check_model_dir(pivot_dir, allow_pickle)
    tokenizer = load_tokenizer(pivot_dir, trust_remote_code=trust_remote_code)
    pivot_fp = tokenizer_fingerprint(tokenizer)
    store = _open_targets(targets, clm_only, pivot_fp)
    dataset = TargetsDataset(store, max_length=max_length, with_targets=not clm_only)
    try:
        config = AutoConfig.from_pretrained(pivot_dir, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:  # remote code not trusted, or an unreadable config: as teach says it
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        hint = (
            "" if trust_remote_code or "custom code" not in first else "; --trust-remote-code runs it, if you trust it"
        )
        raise FusechatError(f"{pivot_dir}: cannot load the model's config ({first}){hint}") from None
    vocab = config.get_text_config().vocab_size
    top = dataset.max_target_id()
    if top >= vocab:
        raise FusechatError(f"{targets}: token id {top} is beyond the pivot's vocabulary ({vocab}); wrong pivot?")
    manifest: dict[str, Any] = {
        "stage": STAGE,
        "format": "fusechat.checkpoint",
        "format_version": 1,
        "pivot": str(pivot),
        "pivot_dir": str(pivot_dir),
        "tokenizer_fingerprint": pivot_fp,
        "targets": str(targets),
        "lambda": 1.0 if clm_only else float(lam),
        "clm_only": bool(clm_only),
        "temperature": temperature,
        "tail_bucket": tail,
        "max_length": max_length,
        "pack": pack,
        "lora": None if lora_rank is None else {"rank": lora_rank, "alpha": lora_alpha or 2 * lora_rank},
        "save_dtype": pivot_dtype(pivot_dir) if save_dtype == "auto" else save_dtype,
        "trainer_options": dict(sorted(trainer_options.items())),
    }
    fp_inputs = dict(manifest)
    fp_inputs["trainer_options"] = {k: v for k, v in trainer_options.items() if k not in NOT_FINGERPRINTED}
    fp_inputs["targets_shards"] = [s["sha256"] for s in store.manifest["shards"]]
    fp_inputs["pivot_config"] = (pivot_dir / "config.json").read_text()
    manifest["fingerprint"] = fingerprint(fp_inputs)

    args = _training_args(out, dict(trainer_options))
    run = _Run(args, settings, pivot_dir, tokenizer, dataset, manifest, out, callbacks, trust_remote_code, allow_pickle)
    with contextlib.ExitStack() as stack:
        # The main process claims the directory and writes its incomplete manifest before the others look.
        with args.main_process_first(local=False, desc="prepare the output directory"):
            if args.should_save:
                prepare_output_dir(out, STAGE)
                stack.enter_context(locked(out))
                remove_temporaries(out)  # left by a killed run; this process is now the only writer
            resume = _previous_run(out, manifest["fingerprint"])
            if args.should_save and resume != "done":
                write_manifest(out, manifest, complete=False)
        if resume == "done":
            log.info("%s: already trained with the same inputs; nothing to do", out)
            if args.should_save and not keep_checkpoints:  # left by a run killed right after it finished
                shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
            return out
        return run(resume)


def _with_lora(model: Any, rank: int, alpha: float | None) -> Any:
    """The model with LoRA adapters on every linear layer except the output head (peft's "all-linear")."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


@dataclass
class _Run:
    """One training run once its inputs are checked: load, train, save, describe."""

    args: Any
    settings: Settings
    pivot_dir: Path
    tokenizer: Any
    dataset: Any
    manifest: dict[str, Any]
    out: Path
    callbacks: list | None
    trust_remote_code: bool = False
    allow_pickle: bool = False

    def __call__(self, resume: str | None) -> Path:
        from fusechat.models.load import load_model
        from fusechat.train.data import FusionCollator
        from fusechat.train.head import check_head
        from fusechat.train.trainer import FusionTrainer, LossConfig

        s, args = self.settings, self.args
        model = load_model(self.pivot_dir, trust_remote_code=self.trust_remote_code, allow_pickle=self.allow_pickle)
        model.config.use_cache = False
        if s.lora_rank is not None:
            model = _with_lora(model, s.lora_rank, s.lora_alpha)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        collator = FusionCollator(pad_id=pad, pack=s.pack, max_length=s.max_length)
        check_head(model, collator([self.dataset[0]]))
        loss_config = LossConfig(
            lam=1.0 if s.clm_only else s.lam, temperature=s.temperature, tail=s.tail, chunk_size=s.chunk_size
        )
        trainer = FusionTrainer(
            model=model,
            args=args,
            train_dataset=self.dataset,
            data_collator=collator,
            processing_class=self.tokenizer,
            callbacks=self.callbacks,
            loss_config=loss_config,
        )
        if resume:
            log.info("resuming from %s", resume)
        result = trainer.train(resume_from_checkpoint=resume)
        state = trainer.state
        if state.global_step < state.max_steps:
            log.info("stopped at step %d of %d; rerun to resume", state.global_step, state.max_steps)
            return self.out
        staging = self.out / ".final.tmp"
        if args.should_save and staging.exists():
            shutil.rmtree(staging)
        if s.lora_rank is not None:
            if args.should_save:  # adapters merged into full weights: a plain checkpoint, no peft needed
                merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
                merged.save_pretrained(str(staging))
                self.tokenizer.save_pretrained(str(staging))
        else:
            trainer.save_model(str(staging))  # every process calls it (FSDP gathers weights); rank 0 writes
        if args.should_save:
            self._finish(staging, trainer, result)
        return self.out

    def _finish(self, staging: Path, trainer: Any, result: Any) -> None:
        """Move the saved model into place, write the model card, drop checkpoints, mark complete."""
        from fusechat.train.save import cast_checkpoint

        out, args, store = self.out, self.args, self.dataset.store
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the manifest holds the options
        cast_checkpoint(staging, self.manifest["save_dtype"])
        for f in staging.iterdir():
            os.replace(f, out / f.name)
        staging.rmdir()
        m = self.manifest
        m.update(
            steps=trainer.state.global_step,
            epochs=trainer.state.epoch,
            train_loss=result.training_loss,
            nonfinite_batches_skipped=trainer.nonfinite_batches,
            conversations=len(self.dataset),
            supervised_positions=store.manifest["counts"]["supervised_positions"],
            world_size=args.world_size,
            global_batch=args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
            sources=store.manifest.get("candidates"),
            method=store.manifest.get("method"),
            conversations_dir=store.manifest.get("conversations"),
        )
        atomic_write_bytes(out / "README.md", model_card(m).encode())
        # The loss curve, in the Trainer's own trainer_state.json layout, for the report's plots.
        history = json.loads(json.dumps({"log_history": trainer.state.log_history}, default=str))
        atomic_write_bytes(out / "trainer_state.json", json.dumps(history, indent=1).encode())
        m["files"] = file_entries(out, weight_files(out))
        write_manifest(out, json.loads(json.dumps(m, default=str)), complete=True)
        # Only now: a kill before the manifest is complete must still find the checkpoint to resume from.
        if not self.settings.keep_checkpoints:
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
