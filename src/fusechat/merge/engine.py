"""The streaming merge: read one tensor from every input, merge it, write it, and move on.

Three stages overlap: a reader thread fetches the next tensors' inputs (up to two ahead) while the main
thread merges the current one and a writer thread writes the previous one, so the disk stays busy during
compute. Peak memory is a few tensors (about twice the largest tensor's inputs as stored, plus its output;
the torch path adds fp32 temporaries), whatever the size of the model.
The output is built in a hidden sibling directory and renamed into place only when complete, so a failed or
killed merge leaves nothing that looks like a model.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import time
from collections import defaultdict, deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusechat.errors import FusechatError
from fusechat.manifest import file_entries, fingerprint, locked, read_manifest, write_manifest
from fusechat.merge import card, dtypes, explain
from fusechat.merge.buffers import BufferPool
from fusechat.merge.checkpoint import ShardedWriter, plan_shards
from fusechat.merge.config import MergeConfig, load_config
from fusechat.merge.job import TensorJob
from fusechat.merge.methods.rules import Granularity, Variation, weights_from_variations
from fusechat.merge.params import layer_index, layer_t, resolve
from fusechat.merge.plan import MergePlan, TensorPlan, plan_merge
from fusechat.merge.registry import REQUIRED
from fusechat.progress import progress_bar
from fusechat.verify import weight_files

log = logging.getLogger(__name__)

STAGE = "merge"
FORMAT_VERSION = 1
DEFAULT_SHARD_BYTES = 5 * 10**9


def merge(
    config: MergeConfig | Mapping[str, Any] | str | os.PathLike,
    out: str | os.PathLike,
    *,
    allow_pickle: bool = False,
    seed: int = 0,
    explain_weights: bool = False,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    mergekit_arithmetic: bool = False,
    exist_ok: bool = False,
    threads: int = 1,
    compiled: bool = True,
) -> Path:
    """Merge the models of `config` into a new Hugging Face directory `out`; returns `out`.

    `seed` makes DARE's masks reproducible (each tensor's mask comes from the seed and the tensor's name).
    `explain_weights` also writes VaRM's weights per tensor and a plot of them (varm only).
    `mergekit_arithmetic` computes TIES/DARE/TA/SCE in the config's `dtype` as mergekit does, instead of fp32.
    With `exist_ok`, an `out` holding a complete merge of the same config and inputs is returned as it is.
    `threads` is torch's intra-op thread count for the tensors the torch functions merge (restored after;
    the kernels use numba's threads). One is the default: the reader and writer threads already overlap IO
    with compute, and the blockwise passes lose more to thread barriers than they gain on a shared machine
    (measured 3x slower with 2 threads here); raise it on a dedicated many-core node.
    The fast path holds tensors as numpy arrays (merge/dtypes.py) and does not import torch.
    `compiled` runs the methods' compiled kernels (`merge/fast/`: same values, several times faster; numba's
    thread count, all cores by default, sets their parallelism); False runs the torch functions of `methods/`.
    """
    cfg = load_config(config)
    out = Path(out)
    if not out.name:  # `.` or `/`: the lock and the partial directory are siblings named after OUT
        out = Path(os.path.abspath(out))
        if not out.name:
            raise FusechatError(f"{out}: the filesystem root; give the path of a new directory for the merged model")
    if explain_weights and cfg.merge_method != "varm":
        raise FusechatError(f"--explain shows VaRM's weights; {cfg.merge_method} has none to show")
    out_dtype = cfg.out_dtype or cfg.dtype  # a dtype name (bfloat16) or None: as stored
    plan = plan_merge(cfg, allow_pickle=allow_pickle, out_dtype=dtypes.code_of(out_dtype))
    try:
        options = {"seed": seed, "mergekit_arithmetic": mergekit_arithmetic, "explain": explain_weights}
        fp = fingerprint({"config": cfg.to_yaml_dict(), "options": options, "inputs": _input_identity(plan)})
        tokenizer_dir = _tokenizer_dir(cfg, plan)
        out.parent.mkdir(parents=True, exist_ok=True)
        with locked(out.parent, name=f".{out.name}.lock", label=out):
            if out.exists():
                if exist_ok and _complete_with(out, fp):
                    log.info("%s: already holds this merge; nothing to do", out)
                    return out
                raise FusechatError(f"{out}: already exists; choose another output directory or remove it")
            # Under the lock no other merge writes here: a partial directory is a killed run's, drop it.
            for stale in out.parent.glob(f".{out.name}.partial-*"):
                shutil.rmtree(stale, ignore_errors=True)
            _write(cfg, plan, out, fp, options, tokenizer_dir, out_dtype, seed, max_shard_bytes, threads, compiled)
    finally:
        plan.close()
    return out


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off during the tensor loop (restored after).

    The loop makes no reference cycles worth collecting, but its allocations kept triggering full
    collections over the objects torch, numba and pydantic bring: 6-9% of a compiled TIES merge's CPU here.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _write(
    cfg: MergeConfig,
    plan: MergePlan,
    out: Path,
    fp: str,
    options: dict[str, Any],
    tokenizer_dir: Path,
    out_dtype: str | None,
    seed: int,
    max_shard_bytes: int,
    threads: int,
    compiled: bool,
) -> None:
    """Merge into a hidden sibling of `out`, then rename it into place with its manifest complete."""
    mergekit_arithmetic, explain_weights = options["mergekit_arithmetic"], options["explain"]
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    tmp.mkdir()
    try:
        with _collector_paused():
            stats = _run(cfg, plan, tmp, seed, max_shard_bytes, mergekit_arithmetic, explain_weights, compiled, threads)
        card.copy_model_files(plan.base.directory, tokenizer_dir, tmp, out_dtype, cfg.chat_template)
        card.write_model_card(tmp, cfg, options, title=out.name)
        shards = stats.pop("files")  # hashed as they were written; the rest (the index) is hashed here
        files = {**file_entries(tmp, [f for f in weight_files(tmp) if f not in shards]), **shards}
        manifest = {"stage": STAGE, "format_version": FORMAT_VERSION, "fingerprint": fp, **stats}
        manifest["files"] = dict(sorted(files.items()))
        write_manifest(tmp, manifest, complete=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _complete_with(out: Path, fp: str) -> bool:
    try:
        return read_manifest(out, STAGE).get("fingerprint") == fp
    except FusechatError:
        return False


def _input_identity(plan: MergePlan) -> list[Any]:
    ckpts = [plan.base, *plan.inputs]
    ident = []
    for c in ckpts:
        files = sorted({i.file for i in c.tensors.values()}) or sorted(c.directory.iterdir())
        ident.append([str(c.directory), [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]])
    return ident


def _tokenizer_dir(cfg: MergeConfig, plan: MergePlan) -> Path:
    src = cfg.tokenizer_source
    if src in (None, "base"):
        return plan.base.directory
    if src == "union":
        raise FusechatError(
            "tokenizer_source: 'union' (building a merged vocabulary) is not supported; "
            "merge models that share one tokenizer and use 'base'"
        )
    from fusechat.models.load import TOKENIZER_FILES, resolve_model_dir

    path = resolve_model_dir(src)
    if not any((path / f).is_file() for f in TOKENIZER_FILES):  # else the merged model ships with no tokenizer
        raise FusechatError(
            f"tokenizer_source: {path} holds no tokenizer ({', '.join(TOKENIZER_FILES)}); point it at a model "
            "directory with its tokenizer, or use 'base'"
        )
    return path


class _Settings:
    """Per-tensor parameter values (precedence: a model's own, then top level, then the default)."""

    def __init__(self, cfg: MergeConfig, num_layers: int) -> None:
        self.cfg, self.spec, self.num_layers = cfg, cfg.method, num_layers
        self.merged = cfg.merged_models()

    def job(self, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        t = layer_t(name, self.num_layers)
        shared = {p.name: self._value(p, [self.cfg.parameters], name, t) for p in self.spec.shared}
        per_model = [
            {p.name: self._value(p, [m.parameters, self.cfg.parameters], name, t) for p in self.spec.per_model}
            for m in self.merged
        ]
        return shared, per_model

    @staticmethod
    def _value(p: Any, scopes: list, name: str, t: float) -> Any:
        value = resolve(scopes, p.name, name, t)
        if value is None:
            if p.default is REQUIRED:
                raise FusechatError(f"{name}: no value of '{p.name}' matches this tensor; add one without a filter")
            return p.default
        return p.type(value)


class _Inputs:
    """Reads a tensor's inputs from every checkpoint at once into pooled buffers (a context manager)."""

    def __init__(self, plan: MergePlan, base_required: bool, pool: BufferPool) -> None:
        self.plan, self.base_required, self.pool = plan, base_required, pool
        self._readers = ThreadPoolExecutor(1 + len(plan.inputs), "merge-read-file")

    def load(self, tp: TensorPlan) -> tuple[np.ndarray | None, list[np.ndarray]]:
        """One tensor's inputs, read in parallel (one request per file in flight: 15-20% faster reads here)."""
        if not tp.mergeable:
            return self.plan.base.read(tp.base_source, self.pool), []
        wanted = list(zip(self.plan.inputs, tp.sources, strict=True))
        if self.base_required:
            wanted.insert(0, (self.plan.base, tp.base_source))
        self.pool.reserve([c.buffer_bytes(s) for c, s in wanted])
        arrays = list(self._readers.map(lambda cs: cs[0].read(cs[1], self.pool), wanted))
        return (arrays.pop(0) if self.base_required else None), arrays  # linear: the base is an input

    def codes(self, tp: TensorPlan) -> list[str]:
        """The dtype codes of what `load` returns, base first."""
        base = [self.plan.base.dtype(tp.base_source)] if self.base_required else []
        return base + [c.dtype(s) for c, s in zip(self.plan.inputs, tp.sources, strict=True)]

    def __enter__(self) -> _Inputs:
        return self

    def __exit__(self, *exc: object) -> None:
        self._readers.shutdown(wait=True)


class _ReadAhead:
    """Reads the plan's tensors in order on the `reader` thread, up to DEPTH tensors ahead of the merge
    while the bytes of the tensor being merged and of those read ahead stay within twice the largest's.

    One tensor ahead, within the largest tensor's bytes (before), left the disk idle while the kernels loaded
    and while the largest tensors (the embeddings, first in file order) merged. Two ahead, alternated on the
    506M bench: task arithmetic 2.6-2.7 → 2.4-2.5 s, SCE 4.8-5.2 → 4.7-4.8 s, TIES and linear within the
    noise; peak RSS 0.07-0.14 GB higher. With no limit on the count, small tensors filled the byte budget
    and peak RSS doubled (TIES 0.54 → 1.19 GB).
    """

    DEPTH = 2

    def __init__(self, reader: ThreadPoolExecutor, load: Any, tensors: list[TensorPlan], sizes: list[int]) -> None:
        self.reader, self.load, self.tensors, self.sizes = reader, load, tensors, sizes
        self.budget = 2 * max(sizes, default=0)
        self.queue: deque[Future] = deque()
        self.submitted = 0
        self.held = 0  # bytes of the tensor being merged and of those queued
        self._fill()

    def _fill(self) -> None:
        while self.submitted < len(self.tensors) and (
            not self.queue or (len(self.queue) < self.DEPTH and self.held + self.sizes[self.submitted] <= self.budget)
        ):
            self.queue.append(self.reader.submit(self.load, self.tensors[self.submitted]))
            self.held += self.sizes[self.submitted]
            self.submitted += 1

    def next(self) -> tuple[np.ndarray | None, list[np.ndarray]]:
        """The next tensor's inputs (base, inputs), as `_Inputs.load` returns them."""
        done = self.submitted - len(self.queue)  # index of the tensor this returns
        if done > 0:
            self.held -= self.sizes[done - 1]  # the previous tensor is merged: its inputs went back to the pool
        self._fill()
        result = self.queue.popleft().result()
        self._fill()
        return result

    def cancel(self) -> None:
        for job in self.queue:
            job.cancel()


@dataclass(frozen=True)
class _Merger:
    """Merges one tensor: the compiled kernels where they cover it, else the method's torch function."""

    cfg: MergeConfig
    fast: Any  # the kernels' module (merge/fast/run.py), or None
    pool: BufferPool
    input_code: str | None  # the config's `dtype:`, as a safetensors code
    low_precision: bool  # --mergekit-arithmetic for a method mergekit computes in `dtype:`
    threads: int  # torch's, for the torch path

    def tensor(self, job: TensorJob, out_code: str) -> tuple[np.ndarray, list[float] | None]:
        """The merged array of one tensor's job, and VaRM's weights."""
        try:
            if self.fast is not None:
                merged = self.fast.merge_tensor(self.cfg.method, job, self.input_code, out_code, self.pool.take)
                if merged is not None:
                    return merged
            from fusechat.merge import torch_path  # what the kernels do not cover (imports torch)

            compute = self.input_code if self.low_precision else None
            return torch_path.run_job(self.cfg.method, job, self.input_code, compute, out_code, self.threads)
        except ValueError as e:
            raise FusechatError(str(e)) from None


def _run(
    cfg: MergeConfig,
    plan: MergePlan,
    tmp: Path,
    seed: int,
    max_shard_bytes: int,
    mergekit_arithmetic: bool,
    explain_weights: bool,
    compiled: bool,
    threads: int,
) -> dict[str, Any]:
    spec = cfg.method
    settings = _Settings(cfg, plan.num_layers)
    input_code = dtypes.code_of(cfg.dtype)
    low_precision = mergekit_arithmetic and input_code is not None and not spec.fp32_like_mergekit
    pool = BufferPool()

    def write(name: str, array: np.ndarray) -> None:
        writer.write(name, array)
        pool.give(array)

    with (
        _Inputs(plan, spec.base_required, pool) as inputs,
        ThreadPoolExecutor(1, "merge-kernels") as loader,
        ThreadPoolExecutor(1, "merge-read") as reader,
        ThreadPoolExecutor(1, "merge-write") as wpool,
    ):
        first = next((tp for tp in plan.tensors if tp.mergeable), None)
        use_kernels = compiled and not low_precision
        kernels = loader.submit(_load_kernels, settings, inputs, first, input_code) if use_kernels else None
        if _needs_groups(cfg):
            group_weights = _varm_group_weights(
                cfg, plan, inputs.load, inputs.codes, input_code, kernels.result() if kernels else None
            )
        else:
            group_weights = {}
        start = time.perf_counter()
        writer = ShardedWriter(tmp, plan_shards([t.out for t in plan.tensors], max_shard_bytes), {"format": "pt"})
        explained: list[tuple[str, list[float]]] = []
        sizes = [_raw_bytes(plan, tp, spec.base_required) for tp in plan.tensors]
        ahead = _ReadAhead(reader, inputs.load, plan.tensors, sizes)  # starts reading while the kernels load
        written: Future | None = None
        bar = progress_bar(sum(sizes), f"merge {cfg.merge_method}", unit="B", unit_scale=True, unit_divisor=1024)
        try:
            merger = _Merger(cfg, kernels.result() if kernels else None, pool, input_code, low_precision, threads)
            for tp, size in zip(plan.tensors, sizes, strict=True):
                base_raw, raws = ahead.next()
                if not tp.mergeable:
                    result = base_raw
                else:
                    shared, per_model = settings.job(tp.out.name)
                    job = TensorJob(
                        tp.out.name,
                        base_raw,
                        raws,
                        shared,
                        per_model,
                        seed,
                        group_weights.get(tp.out.name),
                        inputs.codes(tp),
                    )
                    result, weights = merger.tensor(job, tp.out.dtype)
                    del job
                    for raw in [base_raw, *raws] if base_raw is not None else raws:
                        pool.give(raw)  # read into by `load`, used by nothing else now
                    del base_raw, raws
                    if weights is not None:
                        explained.append((tp.out.name, weights))
                if written is not None:
                    written.result()
                written = wpool.submit(write, tp.out.name, result)
                del result
                bar.update(size)  # input bytes merged
            if written is not None:
                written.result()
            plan.verify_checksums()  # before anything is published: a corrupted input fails the merge
            weight_map = writer.close()
        except BaseException:
            ahead.cancel()
            writer.abort()
            raise
        finally:
            bar.close()
    elapsed = time.perf_counter() - start
    if explain_weights:
        names = [str(m.model) for m in cfg.merged_models()]
        explain.write_explanation(tmp / "explain", explained, names, settings.job("")[0])
    return {
        "method": cfg.merge_method,
        "tensors": len(weight_map),
        "shards": len(set(weight_map.values())),
        "bytes_written": writer.bytes_written,
        "seconds": round(elapsed, 3),
        "files": writer.entries,
    }


def _load_kernels(settings: _Settings, inputs: _Inputs, first: TensorPlan | None, input_code: str | None) -> Any:
    """The kernels' module (imports numba: only when a merge runs), with the kernels that `first` needs loaded;
    None where numba cannot be imported (a platform without its wheels): every tensor then takes the torch path,
    with the same results, only slower."""
    try:
        from fusechat.merge.fast import run as fast
    except ImportError as e:
        log.info("compiled merge kernels unavailable (%s): merging with torch", e)
        return None

    fast.configure_threads()
    if first is not None:
        try:
            shared, per_model = settings.job(first.out.name)
        except FusechatError:
            return fast  # the tensor loop raises it
        base = np.empty(0) if inputs.base_required else None  # the stand-in's shape comes from warm_up
        job = TensorJob(first.out.name, base, [], shared, per_model, codes=inputs.codes(first))
        fast.warm_up(settings.cfg.method, job, input_code, first.out.dtype)
    return fast


def _raw_bytes(plan: MergePlan, tp: TensorPlan, with_base: bool) -> int:
    total = plan.base.nbytes(tp.base_source) if (with_base or not tp.mergeable) else 0
    if tp.mergeable:
        total += sum(c.nbytes(s) for c, s in zip(plan.inputs, tp.sources, strict=True))
    return total


def _needs_groups(cfg: MergeConfig) -> bool:
    if cfg.merge_method != "varm":
        return False
    shared, _ = _Settings(cfg, 1).job("")
    return Granularity(shared["granularity"]) in (Granularity.MODEL, Granularity.LAYER, Granularity.MODULE)


def group_of(name: str, granularity: Granularity) -> str:
    """The VaRM group of a tensor: '' (model), its layer, its module, or itself (matrix).

    Inside a layer, the module is the first name component after the layer number (`self_attn`, `mlp`,
    `input_layernorm`); outside the layers, a tensor is its own layer and module (embeddings, norm, head).
    """
    if granularity is Granularity.MODEL:
        return ""
    parts = name.split(".")
    index = layer_index(name)
    if index is None:
        return name.rsplit(".", 1)[0] if granularity is not Granularity.MATRIX else name
    at = parts.index(str(index))
    if granularity is Granularity.LAYER:
        return ".".join(parts[: at + 1])
    if granularity is Granularity.MODULE:
        return ".".join(parts[: at + 2])
    return name


def _varm_group_weights(
    cfg: MergeConfig, plan: MergePlan, load: Any, codes: Any, input_code: str | None, fast: Any
) -> dict[str, list[float]]:
    """First pass for coarse VaRM: each group's summed variation per target, then each tensor's weights.

    Every tensor of a group has the same number of entries in every target, so the ratio of sums is the ratio
    of means the formula asks for. The sums come from the kernels when they cover the data, else from torch.
    """
    settings = _Settings(cfg, plan.num_layers)
    shared, _ = settings.job("")
    granularity, measure = Granularity(shared["granularity"]), Variation(shared["variation"])
    n = len(plan.inputs)
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0] * n)
    groups = {}
    with ThreadPoolExecutor(1, "merge-stats") as reader:
        mergeable = [tp for tp in plan.tensors if tp.mergeable]
        pending = reader.submit(load, mergeable[0]) if mergeable else None
        for i, tp in enumerate(mergeable):
            base_raw, raws = pending.result()
            pending = reader.submit(load, mergeable[i + 1]) if i + 1 < len(mergeable) else None
            group = groups[tp.out.name] = group_of(tp.out.name, granularity)
            found = fast.variation_sums(base_raw, raws, codes(tp), input_code, measure) if fast else None
            if found is None:
                from fusechat.merge import torch_path

                found = torch_path.variation_sums(base_raw, raws, codes(tp), input_code, measure)
            for j, v in enumerate(found):
                sums[group][j] += v
    return {name: weights_from_variations(sums[g]) for name, g in groups.items()}
