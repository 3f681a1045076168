"""The teacher-pass stage: run one model over the prepared conversations and write its top-k store.

Work is cut into shards of conversations; each shard is tokenized with the model's own tokenizer, batched by
length (sorted, so padding is small), scored, and written as one Parquet file that is renamed into place when
whole. A rerun skips finished shards, so a killed run resumes shard by shard; `--shard I/N` or torchrun's
RANK/WORLD_SIZE split the shards between processes, and whichever finishes last writes the manifest.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.profiler import record_function
from tqdm import tqdm

from fusechat._version import __version__
from fusechat.data.conversations import Conversations, supervised_positions
from fusechat.errors import FusechatError
from fusechat.flags import validate
from fusechat.manifest import fingerprint
from fusechat.models.load import load_model, load_tokenizer, resolve_model_dir, tokenizer_fingerprint
from fusechat.store.format import TopKRecord
from fusechat.store.output import ShardedOutput
from fusechat.teacher.options import TeachCommandOptions
from fusechat.teacher.placement import auto_batch_tokens, input_device, load_placed, model_devices
from fusechat.teacher.scoring import check_head, float32_head, model_parts, score_batch
from fusechat.teacher.writer import BackgroundWriter, ShardJob

STAGE = "teach"
log = logging.getLogger(__name__)


@dataclass
class Encoded:
    """One conversation in a model's tokenization."""

    index: int
    input_ids: np.ndarray  # (n,) int32
    offsets: np.ndarray  # (n, 2) int32
    positions: np.ndarray  # (p,) int32


def encode(tokenizer, texts: list[str], spans: list[np.ndarray], first: int = 0) -> list[Encoded]:
    """Tokenize rendered texts with offsets and find each one's supervised positions."""
    enc = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=True)
    bos = tokenizer.bos_token_id
    out = []
    for j, (ids, offs) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], strict=True)):
        if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            ids, offs = ids[1:], offs[1:]  # the template wrote BOS and the tokenizer added another
        ids_a = np.asarray(ids, dtype=np.int32)
        offs_a = np.asarray(offs, dtype=np.int32).reshape(-1, 2)
        out.append(Encoded(first + j, ids_a, offs_a, supervised_positions(offs_a, spans[first + j])))
    return out


def make_batches(items: list[Encoded], batch_tokens: int, max_batch: int) -> list[list[Encoded]]:
    """Group sequences sorted by length so that batch size x longest length stays within `batch_tokens`."""
    batches: list[list[Encoded]] = []
    current: list[Encoded] = []
    for item in sorted(items, key=lambda e: len(e.input_ids)):
        longest = len(item.input_ids)  # sorted ascending: the newest item is the longest
        if current and ((len(current) + 1) * longest > batch_tokens or len(current) >= max_batch):
            batches.append(current)
            current = []
        current.append(item)
    if current:
        batches.append(current)
    return batches


def parse_shard(value: str | None) -> tuple[int, int]:
    """`I/N` from the command line, else torchrun's RANK/WORLD_SIZE, else 0/1."""
    if value:
        try:
            i, n = (int(x) for x in value.split("/"))
        except ValueError:
            raise FusechatError(f"--shard {value!r}: expected I/N, for example 0/4") from None
        if not 0 <= i < n:
            raise FusechatError(f"--shard {value!r}: I must be in [0, N)")
        return i, n
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise FusechatError(f"--dtype {dtype!r}: choose auto, float32, bfloat16 or float16") from None


@dataclass
class PassSettings:
    """How the pass runs; none of it changes the numbers stored except `top_k` and `dtype`."""

    top_k: int = 10
    shard_rows: int = 256
    batch_tokens: int | None = None  # None: from the GPU's free memory, or CPU_BATCH_TOKENS on a CPU
    max_batch: int | None = None  # None: 32, or more when a GPU's budget is large
    dtype: str = "auto"
    device: str | None = None
    device_map: str | dict | None = None  # accelerate's placement for a teacher larger than one GPU
    max_memory: dict | None = None
    offload_folder: str | os.PathLike | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    progress: bool = True


def teach(
    model: str,
    conversations: str | os.PathLike,
    out: str | os.PathLike,
    top_k: int = 10,
    shard: str | None = None,
    shard_rows: int = 256,
    batch_tokens: int | None = None,
    max_batch: int | None = None,
    dtype: str = "auto",
    device: str | None = None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write (or resume) the top-k store of `model` over `conversations`; return the store's directory.

    `device_map` ("auto", or a dict of module names to devices, "cpu" and "disk" included) spreads the model
    with accelerate over this process's GPUs, the CPU and `offload_folder`; `max_memory` caps each device. A store
    made with other settings (or in another dtype) is refused unless `overwrite` (manifest.settings_check).
    """
    validate(TeachCommandOptions, {"top_k": top_k, "shard_rows": shard_rows, "batch_tokens": batch_tokens})
    if device_map is not None and device is not None:
        raise FusechatError("--device and --device-map exclude each other: --device-map places the model itself")
    conv = Conversations(conversations)
    model_dir = resolve_model_dir(model)
    tokenizer = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    rank, world = parse_shard(shard)
    n_shards = max(1, math.ceil(len(conv) / shard_rows))
    torch_dtype = pick_dtype(dtype, pick_device(device))
    header = {
        "stage": STAGE,
        "fusechat_version": __version__,
        "model": str(model),
        "model_dir": str(model_dir.resolve()),
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "conversations": str(Path(conversations).resolve()),
        "conversations_fingerprint": conv.fingerprint,
        "top_k": top_k,
        "shard_rows": shard_rows,
    }
    header["fingerprint"] = fp = fingerprint({k: v for k, v in header.items() if k != "fusechat_version"})
    # Recorded, and checked on resume, outside the fingerprint: stores written before it was recorded still resume.
    header["dtype"] = str(torch_dtype).removeprefix("torch.")
    header["head_dtype"] = "float32" if float32_head(model_dir, torch_dtype) else header["dtype"]
    opts = PassSettings(
        top_k, shard_rows, batch_tokens, max_batch, dtype, device, device_map, max_memory, offload_folder,
        trust_remote_code, allow_pickle, progress,
    )  # fmt: skip
    output = ShardedOutput(
        out, STAGE, fp, n_shards, top_k, "fusechat teach", overwrite=overwrite, split=(rank, world),
        settings=header, same=("dtype", "head_dtype"),
    )  # fmt: skip
    with output:
        mine = [] if output.up_to_date else [i for i in range(n_shards) if i % world == rank and not output.done(i)]
        if not mine:
            log.info("%s: nothing left to do for shard set %d/%d", output.dir, rank, world)
        if output.up_to_date:
            return output.dir
        output.start(header)
        if mine:
            _run_shards(header, conv, tokenizer, model_dir, output, mine, opts)
    if output.finish(dict(header, vocab_size=_vocab_size(model_dir, tokenizer))):
        log.info("%s: complete", output.dir)
    else:
        log.info("%s: my shards are done; the manifest is written when every shard is", output.dir)
    return output.dir


def _vocab_size(model_dir: Path, tokenizer) -> int:
    config = json.loads((model_dir / "config.json").read_text())
    text = config.get("text_config", config)
    return int(text.get("vocab_size") or len(tokenizer))


def _run_shards(
    header: dict,
    conv: Conversations,
    tokenizer,
    model_dir: Path,
    output: ShardedOutput,
    mine: list[int],
    opts: PassSettings,
) -> None:
    dtype = getattr(torch, header["dtype"])
    if opts.device_map is not None:
        lm = load_placed(
            model_dir, dtype, opts.device_map, opts.max_memory, opts.offload_folder,
            trust_remote_code=opts.trust_remote_code, allow_pickle=opts.allow_pickle,
        ).eval()  # fmt: skip
        device = input_device(lm)
        devices = model_devices(lm, device)
        log.info("teach: placed by accelerate: %s", getattr(lm, "hf_device_map", None))
    else:
        device = pick_device(opts.device)
        lm = load_model(
            model_dir,
            dtype=dtype,
            device=device,
            trust_remote_code=opts.trust_remote_code,
            allow_pickle=opts.allow_pickle,
        ).eval()
        devices = [device]
    backbone, head = model_parts(lm, float32_head=header["head_dtype"] == "float32")
    budget = opts.batch_tokens or auto_batch_tokens(lm, dtype, devices)
    max_batch = opts.max_batch or max(32, budget // 512)
    log.info("teach: batches of up to %d tokens (%d sequences) on %s", budget, max_batch, ", ".join(map(str, devices)))
    rows = opts.shard_rows
    bar = tqdm(
        total=sum(min(len(conv), (i + 1) * rows) - i * rows for i in mine),
        unit="conv",
        desc=f"teach {Path(str(header['model'])).name}",
        disable=not opts.progress,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        dynamic_ncols=True,
    )

    def tokenize(i: int) -> list[Encoded]:
        lo, hi = i * rows, min(len(conv), (i + 1) * rows)
        with record_function("teach.tokenize"):
            return encode(tokenizer, conv.texts[lo:hi], conv.spans, first=lo) if hi > lo else []

    def assemble(batch: list[Encoded], scores) -> list[tuple[int, TopKRecord]]:
        out, s = [], 0
        for e in batch:
            p = len(e.positions)
            cut = (scores.topk_ids[s : s + p], scores.topk_logprobs[s : s + p], scores.gold_logprob[s : s + p])
            out.append((e.index, _record(conv, e, cut, opts.top_k)))
            s += p
        return out

    # The next shard is tokenized on one thread and the last one's rows written on another while this thread
    # keeps the device busy; shard locks are held here until the writer reports the shard on disk.
    writer = BackgroundWriter(output.writer, assemble)
    held: dict[int, ExitStack] = {}
    checked = False
    with ThreadPoolExecutor(1, thread_name_prefix="fusechat-teach-tokenize") as pool:
        try:
            ahead = pool.submit(tokenize, mine[0])
            for n, i in enumerate(mine):
                items = ahead.result()
                if n + 1 < len(mine):
                    ahead = pool.submit(tokenize, mine[n + 1])
                for j in writer.written():
                    held.pop(j).close()
                claim = output.claim(i)
                if claim is None:
                    continue
                held[i] = claim
                if not checked and items:
                    ids = torch.as_tensor(items[0].input_ids[None].astype(np.int64), device=device)
                    check_head(lm, backbone, head, ids)
                    checked = True
                job = ShardJob(i, [e.index for e in items])
                for batch in make_batches(items, budget, max_batch):
                    writer.put(("batch", job, batch, _score(batch, backbone, head, device, opts.top_k)))
                    bar.update(len(batch))
                writer.put(("end", job))
            writer.close()
        except BaseException:
            writer.cancel()
            raise
        finally:
            for lock in held.values():
                lock.close()
            bar.close()


def _score(batch: list[Encoded], backbone, head, device, k: int):
    """Queue one batch's forward and top-k; the scores may still be on their way to the host."""
    with record_function("teach.batch"):
        length = max(len(e.input_ids) for e in batch)
        ids = np.zeros((len(batch), length), dtype=np.int64)
        mask = np.zeros((len(batch), length), dtype=np.int64)
        for b, e in enumerate(batch):
            ids[b, : len(e.input_ids)] = e.input_ids
            mask[b, : len(e.input_ids)] = 1
        ids_t, mask_t = _to_device(torch.from_numpy(ids), device), _to_device(torch.from_numpy(mask), device)
        positions = [torch.from_numpy(e.positions.astype(np.int64)) for e in batch]
    return score_batch(backbone, head, ids_t, mask_t, positions, k)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _record(conv: Conversations, item: Encoded, scored, k: int) -> TopKRecord:
    top_i, top_lp, gold = (t.numpy() for t in scored)
    if top_i.shape[1] < k:  # a vocabulary smaller than k: pad with the store's empty entry
        fill = k - top_i.shape[1]
        top_i = np.pad(top_i, ((0, 0), (0, fill)), constant_values=-1)
        top_lp = np.pad(top_lp, ((0, 0), (0, fill)), constant_values=-np.inf)
    return TopKRecord(
        id=conv.ids[item.index],
        input_ids=item.input_ids,
        offsets=item.offsets,
        positions=item.positions,
        topk_ids=top_i.astype(np.int32),
        topk_logprobs=top_lp.astype(np.float16),
        gold_logprob=gold.astype(np.float16),
        nll=float(-gold.astype(np.float64).sum()),
        n_bytes=conv.n_bytes(item.index),
    )
