"""`train()`: fine-tune the pivot on training targets (or CLM only) into a plain Hugging Face checkpoint.

Everything that can be wrong with the inputs is checked before the model is loaded: lambda, the targets
store (stage, emptiness, tokenizer, vocabulary range), the Trainer options, and the output directory. The
output is a Hugging Face directory that `from_pretrained` loads as is, plus `manifest.json` (written last)
and a README model card; the Trainer's checkpoints live in `checkpoints/` while training runs, so rerunning
the same command after an interruption resumes from the newest one.
"""

from __future__ import annotations

import contextlib
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
    clear_output,
    file_entries,
    fingerprint,
    locked,
    prepare_output_dir,
    read_manifest,
    remove_temporaries,
    write_manifest,
)
from fusechat.train.card import model_card
from fusechat.train.checkpoints import CHECKPOINTS, SealCheckpoints, latest_checkpoint
from fusechat.train.engines import training_args
from fusechat.train.options import TrainCommandOptions
from fusechat.verify import weight_files

STAGE = "train"
TARGET_STAGES = ("fuse",)
CLM_STAGES = ("fuse", "teach")
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
    chunk_memory: int | None = None
    loss_kernel: str = "auto"

    def check(self) -> None:
        """The declared rules (train/options.py), for a call from Python as for the command line."""
        values = {
            "lam": self.lam,
            "temperature": self.temperature,
            "tail_bucket": self.tail,
            "chunk_size": self.chunk_size,
            "chunk_memory": self.chunk_memory,
            "loss_kernel": self.loss_kernel,
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


def _previous_run(out: Path, fp: str, overwrite: bool, writer: bool) -> str | None:
    """'done' if `out` holds this finished run, a checkpoint to resume from, or None to start afresh. A run with
    other inputs or settings is refused, or with `overwrite` removed (by the process that writes)."""
    if not (out / "manifest.json").is_file():
        return None
    old = read_manifest(out, stage=STAGE, require_complete=False)
    if old.get("fingerprint") != fp:
        if old.get("complete") or latest_checkpoint(out):
            if not overwrite:
                raise FusechatError(
                    f"{out}: holds a training run with other inputs or settings; pass --overwrite to replace it, "
                    "or choose another --out"
                )
            if writer:
                clear_output(out)
        return None
    if old.get("complete"):
        return "done"
    return latest_checkpoint(out)


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
    chunk_memory: int | None = None,
    loss_kernel: str = "auto",
    keep_checkpoints: bool = False,
    lora_rank: int | None = None,
    lora_alpha: float | None = None,
    save_dtype: str = "auto",
    callbacks: list | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    overwrite: bool = False,
    **trainer_options: Any,
) -> Path:
    """Fine-tune `pivot` on the training targets in `targets`; write a Hugging Face checkpoint to `out`.

    The loss is lam * CLM + (1 - lam) * fusion over supervised positions (`clm_only` trains the CLM baseline
    on the same data: lam = 1, targets unused). `trainer_options` are `transformers.TrainingArguments` fields
    (num_train_epochs, learning_rate, lr_scheduler_type, warmup_steps, per_device_train_batch_size,
    gradient_accumulation_steps, gradient_checkpointing, seed, max_steps, save_steps, fsdp, deepspeed, ...);
    `bf16="auto"` (the default) uses bf16 where CUDA supports it. An interrupted run resumes from its newest
    checkpoint when rerun with the same arguments; a finished one is not redone. `chunk_memory` (bytes) sizes the
    loss's chunks (default: from the device); `chunk_size` (supervised positions) overrides it. `loss_kernel` runs
    the loss's elementwise work "compiled" (torch.compile), "eager", or "auto" (compiled on CUDA). `lora_rank`
    trains LoRA adapters (peft, on every linear layer but the head; alpha defaults to 2 x rank) and merges them
    into full weights at the end. `save_dtype` is the dtype of the saved weights: "auto" (the pivot's, from its
    config or weights; training itself runs in fp32, or the Trainer's mixed precision), "float32", "bfloat16" or
    "float16". An `out` trained with other inputs or settings is refused unless `overwrite`. Returns `out`.
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
        chunk_memory,
        loss_kernel,
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

    args = training_args(out / CHECKPOINTS, dict(trainer_options))
    run = _Run(args, settings, pivot_dir, tokenizer, dataset, manifest, out, callbacks, trust_remote_code, allow_pickle)
    with contextlib.ExitStack() as stack:
        # The main process claims the directory and writes its incomplete manifest before the others look.
        with args.main_process_first(local=False, desc="prepare the output directory"):
            if args.should_save:
                prepare_output_dir(out, STAGE)
                stack.enter_context(locked(out))
                remove_temporaries(out)  # left by a killed run; this process is now the only writer
            resume = _previous_run(out, manifest["fingerprint"], overwrite, args.should_save)
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
            lam=1.0 if s.clm_only else s.lam,
            temperature=s.temperature,
            tail=s.tail,
            chunk_size=s.chunk_size,
            chunk_memory=s.chunk_memory,
            kernel=s.loss_kernel,
        )
        trainer = FusionTrainer(
            model=model,
            args=args,
            train_dataset=self.dataset,
            data_collator=collator,
            processing_class=self.tokenizer,
            callbacks=[*(self.callbacks or []), SealCheckpoints()],
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
