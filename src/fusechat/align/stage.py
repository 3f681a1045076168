"""The `align` stage: a source's teacher store rewritten in the pivot's positions and vocabulary.

Reads two teacher stores made from the same conversations, aligns every conversation's two tokenizations
(`offsets`, exact, by default; the paper's `dtw` on request), moves the source's top-k onto pivot ids with a
vocabulary map, and writes an aligned store (the teacher-store layout plus a per-position `covered` column).
The map is built once and cached in the output directory; coverage and the probability mass kept are counted
per shard and summed into the manifest. Shard by shard, resumable, nothing half-written (see store/output.py).
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fusechat.align import dtw as dtw_mod
from fusechat.align import maps
from fusechat.align.inputs import MAP_FILE, conversation_texts, load_store_tokenizer
from fusechat.align.project import project
from fusechat.align.sequence import (
    boundaries,
    byte_boundaries,
    check_same_text,
    match_next_tokens,
    positions_map,
    recomposed_offsets,
)
from fusechat.align.vocab import Vocab, vocab_bytes
from fusechat.errors import FusechatError
from fusechat.manifest import atomic_write_bytes, atomic_write_json, fingerprint
from fusechat.progress import progress_bar
from fusechat.store.format import TopKRecord, TopKStore, shard_name
from fusechat.store.output import ShardedOutput
from fusechat.store.pairs import check_pair, check_row_ids, open_teacher_store

log = logging.getLogger(__name__)

STAGE = "align"
ALIGNMENTS = ("offsets", "dtw")
VERSION = 2  # 2: offsets across characters a normaliser recomposes (NFC) aligned exactly
DTW_MAX_CELLS = 1 << 27  # 1 GiB of int64 DP table


def next_token_match(method: str, piv: TopKRecord, src: TopKRecord, ctx: dict, text: str | None = None) -> np.ndarray:
    """Pivot token j -> source token starting together with it (-1 if none), by the chosen alignment.

    `ctx` holds per-vocabulary data: `piv_nbytes`/`src_nbytes` (bytes per id) and `piv_normalize`/
    `src_normalize` (the tokenizers' normalisers) for offsets, `piv_strings`/`src_strings` for DTW. With the
    text, offsets are compared in bytes (exact inside split characters, and across characters a normaliser
    recomposed).
    """
    if method == "offsets":
        if text is None:
            return match_next_tokens(boundaries(piv.offsets), boundaries(src.offsets))
        pn, sn = ctx["piv_nbytes"], ctx["src_nbytes"]
        return match_next_tokens(
            byte_boundaries(piv.offsets, pn[np.clip(piv.input_ids, 0, len(pn) - 1)], text, ctx["piv_normalize"]),
            byte_boundaries(src.offsets, sn[np.clip(src.input_ids, 0, len(sn) - 1)], text, ctx["src_normalize"]),
        )
    piv_strings, src_strings = ctx["piv_strings"], ctx["src_strings"]
    a = [piv_strings[i] if 0 <= i < len(piv_strings) else "" for i in piv.input_ids.tolist()]
    b = [src_strings[i] if 0 <= i < len(src_strings) else "" for i in src.input_ids.tolist()]
    if not a or not b:
        return np.full(len(a), -1, dtype=np.int64)
    if len(a) * len(b) > DTW_MAX_CELLS:
        raise FusechatError(
            f"conversation {piv.id}: DTW over {len(a)} x {len(b)} tokens needs "
            f"{len(a) * len(b) * 8 >> 20} MiB "
            "for its cost table; use --alignment offsets (exact, linear) for conversations this long"
        )
    return dtw_mod.next_token_match(dtw_mod.dtw_path(a, b), len(a))


def vocab_context(piv_vocab: Vocab, src_vocab: Vocab, method: str) -> dict:
    """What an alignment method needs from the two vocabularies, computed once."""
    if method == "dtw":
        return {
            "piv_strings": dtw_mod.vocab_strings(piv_vocab),
            "src_strings": dtw_mod.vocab_strings(src_vocab),
        }
    return {
        "piv_nbytes": np.array([len(p) for p in piv_vocab.pieces], dtype=np.int64),
        "src_nbytes": np.array([len(p) for p in src_vocab.pieces], dtype=np.int64),
        "piv_normalize": piv_vocab.normalize,
        "src_normalize": src_vocab.normalize,
    }


def _pairs(piv: TopKStore, src: TopKStore, method: str, ctx: dict, texts: dict) -> tuple[np.ndarray, np.ndarray]:
    """Corpus co-alignment counts (source id, pivot id) for the `stats` map, reduced shard by shard."""
    pairs, counts = [], []
    for i in range(piv.n_shards):
        chunk = []
        for a, b in zip(piv.read_shard(i), src.read_shard(i), strict=True):
            m = next_token_match(method, a, b, ctx, texts.get(a.id))
            j = np.nonzero(m >= 0)[0]
            chunk.append(np.stack([b.input_ids[m[j]], a.input_ids[j]], axis=1))
        p, c = maps.count_pairs(np.concatenate(chunk) if chunk else np.zeros((0, 2)))
        pairs.append(p)
        counts.append(c)
    return maps.count_pairs(np.concatenate(pairs), np.concatenate(counts))


def build_map(name: str, src_vocab: Vocab, piv_vocab: Vocab, piv_tok: Any, pairs=None) -> np.ndarray:
    if name == "exact":
        return maps.exact_map(src_vocab, piv_vocab)
    if name == "mined":
        return maps.mined_map(src_vocab, piv_vocab)
    if name == "prefix":
        return maps.prefix_map(src_vocab, piv_vocab, piv_tok)
    return maps.stats_map(src_vocab, piv_vocab, *pairs)


def _cached_map(out: Path, meta: dict, build) -> tuple[np.ndarray, float]:
    """The map cached in `out` if built from the same inputs, else built and cached; and its build time."""
    path = out / MAP_FILE
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            stored = json.loads(str(f["meta"]))
            if {k: v for k, v in stored.items() if k != "build_seconds"} == meta:
                return f["ids"], float(stored.get("build_seconds", 0.0))
    t0 = time.perf_counter()
    ids = build()
    seconds = time.perf_counter() - t0
    buf = io.BytesIO()
    body = json.dumps({**meta, "build_seconds": seconds}, sort_keys=True)
    np.savez(buf, ids=ids.astype(np.int32), meta=np.array(body))
    atomic_write_bytes(path, buf.getvalue())
    return ids, seconds


def align_record(piv: TopKRecord, src: TopKRecord, match: np.ndarray, vmap: np.ndarray, k: int):
    """One conversation's aligned record and its counts (positions, covered, top-k mass, mass kept)."""
    rows = positions_map(match, piv.positions, src.positions)
    cov = rows >= 0
    p = len(piv.positions)
    ids = np.full((p, k), -1, dtype=np.int32)
    lps = np.full((p, k), -np.inf, dtype=np.float32)
    gold = np.full(p, -np.inf, dtype=np.float32)
    mass_topk = mass_kept = 0.0
    if cov.any():
        r = rows[cov]
        pr = project(
            src.topk_ids[r],
            src.topk_logprobs[r],
            vmap,
            k,
            pivot_gold=piv.input_ids[piv.positions[cov] + 1],
            src_gold=src.input_ids[src.positions[r] + 1],
            src_gold_logprob=src.gold_logprob[r],
        )
        ids[cov], lps[cov], gold[cov] = pr.ids, pr.logprobs, pr.gold_logprob
        mass_topk, mass_kept = float(pr.mass_topk.sum()), float(pr.mass_kept.sum())
    rec = TopKRecord(
        id=piv.id,
        input_ids=piv.input_ids,
        offsets=piv.offsets,
        positions=piv.positions,
        topk_ids=ids,
        topk_logprobs=lps,
        gold_logprob=gold,
        nll=src.nll,
        n_bytes=src.n_bytes,
        extra={"covered": cov},
    )
    return rec, {"positions": p, "covered": int(cov.sum()), "mass_topk": mass_topk, "mass_kept": mass_kept}


def _stats_path(out: Path, i: int, n: int) -> Path:
    return out / shard_name(i, n).replace(".parquet", ".stats.json")


def align(
    pivot_store: str | os.PathLike,
    source_store: str | os.PathLike,
    out: str | os.PathLike,
    alignment: str = "offsets",
    vocab_map: str = "exact",
    overwrite: bool = False,
) -> Path:
    """Write the source's distributions in the pivot's positions and vocabulary to `out`; return `out`.

    An `out` aligned from other inputs or settings is refused unless `overwrite`."""
    if alignment not in ALIGNMENTS:
        raise FusechatError(f"unknown alignment '{alignment}'; choose one of {', '.join(ALIGNMENTS)}")
    if vocab_map not in maps.MAPS:
        raise FusechatError(f"unknown vocabulary map '{vocab_map}'; choose one of {', '.join(maps.MAPS)}")
    piv = open_teacher_store(pivot_store, "pivot")
    src = open_teacher_store(source_store, "source")
    check_pair(piv, src)
    names = f"pivot store {piv.dir} and source store {src.dir}"
    inputs = {
        "version": VERSION,
        "pivot": [s["sha256"] for s in piv.manifest["shards"]],
        "source": [s["sha256"] for s in src.manifest["shards"]],
        "alignment": alignment,
        "vocab_map": vocab_map,
    }
    fp = fingerprint(inputs)
    n = piv.n_shards
    covered_column = pa.schema([("covered", pa.list_(pa.bool_()))])
    output = ShardedOutput(out, STAGE, fp, n, piv.k, "fusechat align", extra=covered_column, overwrite=overwrite)
    out = output.dir
    with output:
        if output.up_to_date:
            return out
        pm, sm = piv.manifest, src.manifest
        manifest = {
            "stage": STAGE,
            "fingerprint": fp,
            "model": pm.get("model"),
            "model_dir": pm.get("model_dir"),
            "tokenizer_fingerprint": pm.get("tokenizer_fingerprint"),
            "vocab_size": pm.get("vocab_size"),
            "conversations": pm.get("conversations"),
            "conversations_fingerprint": pm.get("conversations_fingerprint"),
            "top_k": piv.k,
            "pivot": {"store": str(piv.dir), "model": pm.get("model"), "model_dir": pm.get("model_dir")},
            "source": {
                "store": str(src.dir),
                "model": sm.get("model"),
                "model_dir": sm.get("model_dir"),
                "tokenizer_fingerprint": sm.get("tokenizer_fingerprint"),
                "vocab_size": sm.get("vocab_size"),
            },
            "alignment": alignment,
        }
        output.start(manifest)
        piv_tok, src_tok = load_store_tokenizer(piv, "pivot"), load_store_tokenizer(src, "source")
        piv_vocab, src_vocab = vocab_bytes(piv_tok), vocab_bytes(src_tok)
        ctx = vocab_context(piv_vocab, src_vocab, alignment)
        texts = conversation_texts(piv)
        meta = {
            "method": vocab_map,
            "pivot": pm.get("tokenizer_fingerprint"),
            "source": sm.get("tokenizer_fingerprint"),
        }
        if vocab_map == "stats":
            meta.update(alignment=alignment, corpus=inputs["pivot"] + inputs["source"])

        def build() -> np.ndarray:
            pairs = _pairs(piv, src, alignment, ctx, texts) if vocab_map == "stats" else None
            return build_map(vocab_map, src_vocab, piv_vocab, piv_tok, pairs)

        vmap, build_seconds = _cached_map(out, meta, build)
        v_src = max(len(src_vocab), int(sm.get("vocab_size") or 0))
        if len(vmap) < v_src:
            vmap = np.concatenate([vmap, np.full(v_src - len(vmap), -1, dtype=vmap.dtype)])
        bar = progress_bar(len(piv), f"align {Path(str(sm.get('model') or src.dir)).name}", unit=" conv")
        for i in range(n):
            if output.done(i) and _stats_path(out, i, n).is_file():
                bar.update(piv.manifest["shards"][i]["rows"])
                continue
            totals = {"positions": 0, "covered": 0, "mass_topk": 0.0, "mass_kept": 0.0}
            with output.shard(i) as writer:
                a_rows, b_rows = piv.read_shard(i), src.read_shard(i)
                check_row_ids(names, i, [r.id for r in a_rows], [r.id for r in b_rows])
                for a, b in zip(a_rows, b_rows, strict=True):
                    text = texts.get(a.id)
                    spans = {"pivot": a.offsets, "source": b.offsets}
                    if text is not None:  # a normaliser may leave the text's last marks to no token's offsets
                        spans = {
                            "pivot": recomposed_offsets(a.offsets, text, piv_vocab.normalize),
                            "source": recomposed_offsets(b.offsets, text, src_vocab.normalize),
                        }
                    check_same_text(a.id, text, spans, names)
                    if a.n_bytes != b.n_bytes:
                        raise FusechatError(
                            f"{names}: conversation {a.id} has {a.n_bytes} supervised bytes in one and "
                            f"{b.n_bytes} in the other, so their texts differ; rerun both teacher passes on "
                            "the same conversations"
                        )
                    match = next_token_match(alignment, a, b, ctx, text)
                    rec, counts = align_record(a, b, match, vmap, piv.k)
                    writer.write(rec)
                    bar.update()
                    for key, v in counts.items():
                        totals[key] += v
            atomic_write_json(_stats_path(out, i, n), totals)
            log.info("%s: shard %d/%d aligned", out, i + 1, n)
        bar.close()
        totals = {"positions": 0, "covered": 0, "mass_topk": 0.0, "mass_kept": 0.0}
        for i in range(n):
            for key, v in json.loads(_stats_path(out, i, n).read_text()).items():
                totals[key] += v
        mapped = int((vmap >= 0).sum())
        manifest["vocab_map"] = {
            "method": vocab_map,
            "file": MAP_FILE,
            "source_tokens": int(len(vmap)),
            "mapped_tokens": mapped,
            "build_seconds": round(build_seconds, 3),
        }
        manifest["coverage"] = {
            **totals,
            "covered_share": totals["covered"] / totals["positions"] if totals["positions"] else 0.0,
            "mass_kept_share": totals["mass_kept"] / totals["mass_topk"] if totals["mass_topk"] else 0.0,
        }
        return output.finish(manifest)
