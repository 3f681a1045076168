"""Adapters from recipe sections to the stage functions, as zero-argument callables for the pipeline.

Each adapter only translates settings; the stage functions do the work and their own checking, exactly as
when they are called from their commands. A step's output is the pipeline's own (checked before the first step,
and its settings recorded in pipeline.json), so the adapters let a stage replace an output of other settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fusechat.data.readers import RawRecord
from fusechat.data.sources import open_source
from fusechat.errors import FusechatError
from fusechat.merge.registry import WEIGHTED
from fusechat.run.recipe import Align, DataSource, Evaluate, MergeMethod, Teach, Train
from fusechat.run.report import ReportInputs


@dataclass
class Window:
    """Records [offset, offset + limit) of another source: keeps training and held-out data disjoint."""

    inner: object
    offset: int
    limit: int | None

    @property
    def name(self) -> str:
        return self.inner.name

    def records(self) -> Iterator[RawRecord]:
        for n, rec in enumerate(self.inner.records()):
            if n < self.offset:
                continue
            if self.limit is not None and n >= self.offset + self.limit:
                return
            yield rec

    def describe(self) -> dict:
        return {**self.inner.describe(), "offset": self.offset, "limit": self.limit}


def data_source(spec: DataSource, base: Path, work: Path) -> object:
    if spec.kind == "file":
        inner = open_source(str((base / spec.path).resolve()))
    elif spec.kind == "sharegpt":
        inner = open_source("sharegpt")
    elif spec.kind == "humaneval":
        from fusechat.evaluate.datasets import HUMANEVAL_TRAIN, humaneval_chats, write_chats_jsonl

        path = work / "humaneval-train.jsonl"
        if not path.is_file():
            write_chats_jsonl(humaneval_chats(HUMANEVAL_TRAIN), path)
        inner = open_source(str(path))
    else:
        from fusechat.evaluate.datasets import gsm_symbolic_chats, write_chats_jsonl

        n = spec.offset + (spec.limit or 1000)
        path = work / f"gsm_symbolic-seed{spec.seed}-{n}.jsonl"
        if not path.is_file():
            write_chats_jsonl(gsm_symbolic_chats(n, seed=spec.seed), path)
        inner = open_source(str(path))
    return Window(inner, spec.offset, spec.limit)


def preparer(
    sources: list[DataSource],
    base: Path,
    pivot: str,
    out: Path,
    max_length: int,
    on_long: str,
    chat_template: Path | None = None,
) -> Callable[[], Path]:
    def run() -> Path:
        from fusechat.data.prepare import prepare

        work = out.parent / "_sources"
        work.mkdir(parents=True, exist_ok=True)
        inputs = [data_source(s, base, work) for s in sources]
        return prepare(
            inputs,
            pivot,
            out,
            chat_template=chat_template,
            max_length=max_length,
            on_long=on_long,
            skip_invalid=True,
            overwrite=True,
        )

    return run


def teacher(model: str, conversations: Path, out: Path, cfg: Teach) -> Callable[[], Path]:
    def run() -> Path:
        from fusechat.teacher.teach import teach

        return teach(model, conversations, out, top_k=cfg.top_k, batch_tokens=cfg.batch_tokens, overwrite=True)

    return run


def aligner(pivot_store: Path, source_store: Path, out: Path, cfg: Align) -> Callable[[], Path]:
    def run() -> Path:
        from fusechat.align.stage import align

        return align(pivot_store, source_store, out, alignment=cfg.alignment, vocab_map=cfg.vocab_map, overwrite=True)

    return run


def fuser(pivot_store: Path, aligned: list[Path], out: Path, method: str) -> Callable[[], Path]:
    def run() -> Path:
        from fusechat.fuse.stage import fuse

        return fuse(pivot_store, aligned, out, method=method, overwrite=True)

    return run


def trainer(pivot: str, targets: Path, out: Path, cfg: Train, seed: int, clm_only: bool) -> Callable[[], Path]:
    def run() -> Path:
        from fusechat.train.api import train
        from fusechat.train.options import trainer_options

        options = {**trainer_options(cfg), "lr_scheduler_type": "cosine", "seed": seed, "logging_steps": 1}
        return train(pivot, targets, out, lam=cfg.lam, clm_only=clm_only, **options)

    return run


def merge_config(cfg: MergeMethod, base: str | None, checkpoints: list[str]) -> object:
    """The merge config of one recipe merge method over the trained targets (validated: FusechatError if bad)."""
    from fusechat.merge import simple_config

    densities = [cfg.density] * len(checkpoints) if cfg.density is not None else None
    weights = cfg.weights
    if weights is None and cfg.method in WEIGHTED:  # equal weights unless the recipe says otherwise
        weights = [1.0 / len(checkpoints)] * len(checkpoints)
    if cfg.method == "slerp":  # SLERP interpolates two models: the first target is its base
        if len(checkpoints) != 2:
            raise FusechatError(f"merge slerp needs exactly two targets, the recipe gives {len(checkpoints)}")
        return simple_config("slerp", checkpoints[0], [checkpoints[1]], parameters=cfg.parameters)
    # linear averages the targets alone; the task-vector methods and VaRM measure change from the pivot.
    return simple_config(
        cfg.method,
        None if cfg.method == "linear" else base,
        checkpoints,
        weights=weights,
        densities=densities,
        parameters=cfg.parameters or None,
    )


def merger(pivot: str, checkpoints: list[Path], out: Path, cfg: MergeMethod) -> Callable[[], Path]:
    def run() -> Path:
        from fusechat.merge import merge
        from fusechat.models.load import resolve_model_dir

        base = None if cfg.method in ("linear", "slerp") else str(resolve_model_dir(pivot))
        config = merge_config(cfg, base, [str(c) for c in checkpoints])
        return merge(config, out, exist_ok=True, explain_weights=cfg.method == "varm")

    return run


def evaluator(models: dict[str, object], heldout: Path, out: Path, cfg: Evaluate) -> Callable[[], Path]:
    def run() -> Path:
        from fusechat.evaluate import evaluate

        limits = {task: cfg.limit for task in cfg.suite} if cfg.limit else {}
        conversations = heldout if (heldout / "manifest.json").is_file() else None
        evaluate(
            {k: str(v) for k, v in models.items()},
            list(cfg.suite),
            out,
            overwrite=True,
            conversations=conversations,
            limits=limits,
        )
        return out

    return run


def reporter(inputs: ReportInputs, out: Path) -> Callable[[], Path]:
    def run() -> Path:
        from fusechat.run.report import write_run_report

        return write_run_report(inputs, out)

    return run
