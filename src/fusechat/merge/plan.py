"""Checking the inputs of a merge and planning its output tensors, before any byte is written.

Everything that can be wrong with the inputs (different architectures, a missing tensor, shapes or
vocabularies that differ, pickled weights) is found here, from configs and safetensors headers alone, so a bad
merge fails in a second with one clear message instead of after minutes of work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fusechat.errors import FusechatError
from fusechat.merge import dtypes
from fusechat.merge.checkpoint import Checkpoint, OutputTensor
from fusechat.merge.config import MergeConfig
from fusechat.merge.params import layer_index
from fusechat.models.load import check_model_dir, resolve_model_dir

log = logging.getLogger(__name__)

ARCH_KEYS = ("model_type", "architectures")


@dataclass
class TensorPlan:
    """One output tensor: what to read from the base and from each merged input, and how to write it."""

    out: OutputTensor
    base_source: str | None  # the base's tensor name (None for methods without a base)
    sources: list[str]  # per merged input, the tensor name to read (differs for a tied lm_head)
    mergeable: bool  # floating point: merged; otherwise copied from the base


@dataclass
class MergePlan:
    base: Checkpoint
    inputs: list[Checkpoint]  # merged inputs in config order (see MergeConfig.merged_models)
    tensors: list[TensorPlan]
    num_layers: int

    def close(self) -> None:
        for c in {id(c): c for c in [self.base, *self.inputs]}.values():
            c.close()

    def verify_checksums(self) -> None:
        """Check every input against its manifest's sha256 (hashed while the merge read it); see Checkpoint."""
        for c in {id(c): c for c in [self.base, *self.inputs]}.values():
            c.verify_checksums()


def open_checkpoint(spec: str, allow_pickle: bool, cache: dict[Path, Checkpoint]) -> Checkpoint:
    path = resolve_model_dir(spec).resolve()
    if path not in cache:
        checksums = check_model_dir(path, allow_pickle, defer_checksums=True)
        cache[path] = Checkpoint(path, allow_pickle, checksums)
    return cache[path]


def tied_source(ckpt: Checkpoint, name: str) -> str | None:
    """The tensor a missing `name` is tied to here (lm_head → embeddings), as transformers declares it."""
    if ckpt.config.get("tie_word_embeddings") is False:
        return None
    import transformers

    for arch in ckpt.config.get("architectures") or []:
        cls = getattr(transformers, arch, None)
        tied = getattr(cls, "_tied_weights_keys", None)
        if isinstance(tied, dict) and name in tied:
            return tied[name]
    return None


def plan_merge(cfg: MergeConfig, allow_pickle: bool = False, out_dtype: str | None = None) -> MergePlan:
    """Open every input, check they fit together, and list the output tensors in write order.

    `out_dtype`: the safetensors code (BF16, F32, ...) floating-point outputs are written in (else as stored).
    """
    cache: dict[Path, Checkpoint] = {}
    merged = cfg.merged_models()
    inputs = [open_checkpoint(m.model, allow_pickle, cache) for m in merged]
    base = open_checkpoint(cfg.base_model, allow_pickle, cache) if cfg.base_model else inputs[0]
    labels = {id(c): spec for c, spec in zip(inputs, [m.model for m in merged], strict=True)}
    labels.setdefault(id(base), cfg.base_model or merged[0].model)

    for ckpt in inputs:
        for key in ARCH_KEYS:
            if ckpt.config.get(key) != base.config.get(key):
                raise FusechatError(
                    f"{labels[id(ckpt)]}: {key} is {ckpt.config.get(key)!r} but the base's is "
                    f"{base.config.get(key)!r}; only models of one architecture merge in parameter space"
                )

    names = base.names_in_file_order()  # reads go forward through each file: hashed as read, see Checkpoint
    tensors = []
    for name in names:
        shape, dtype = base.shape(name), base.dtype(name)
        sources = []
        for ckpt in inputs:
            source = name
            if name not in ckpt.names():
                source = tied_source(ckpt, name)
                if source is None or source not in ckpt.names():
                    raise FusechatError(
                        f"{labels[id(ckpt)]}: has no tensor {name} (the base has it); the models differ in "
                        "architecture or the checkpoint is incomplete"
                    )
            if ckpt.shape(source) != shape:
                vocab = ckpt.shape(source)[0] == ckpt.config.get("vocab_size") and shape[0] == base.config.get(
                    "vocab_size"
                )
                raise FusechatError(
                    _shape_problem(name, labels[id(ckpt)], ckpt.shape(source), labels[id(base)], shape, vocab)
                )
            sources.append(source)
        mergeable = dtype in dtypes.FLOATING
        target_dtype = out_dtype if (out_dtype is not None and mergeable) else dtype
        tensors.append(TensorPlan(OutputTensor(name, target_dtype, shape), name, sources, mergeable))
    for ckpt in inputs:
        extra = set(ckpt.names()) - set(names)
        extra -= {s for t in tensors for s in t.sources}
        if extra:
            log.warning(
                "%s: %d tensor(s) not in the base are dropped, e.g. %s",
                labels[id(ckpt)],
                len(extra),
                min(extra),
            )
    layers = {i for t in tensors if (i := layer_index(t.out.name)) is not None}
    return MergePlan(base, inputs, tensors, num_layers=(max(layers) + 1) if layers else 1)


def _shape_problem(name: str, model: str, shape: tuple, base: str, base_shape: tuple, vocab: bool) -> str:
    if vocab and len(shape) == len(base_shape) and shape[1:] == base_shape[1:]:
        return (
            f"{model}: {name} has {shape[0]} rows but {base}'s has {base_shape[0]}: the vocabularies differ "
            "in size. "
            "Merge models that share one tokenizer (FuseChat's targets all use the pivot's), or resize the "
            "embeddings to one vocabulary first"
        )
    return (
        f"{model}: {name} has shape {list(shape)} but {base}'s is {list(base_shape)}; the models differ in architecture"
    )
