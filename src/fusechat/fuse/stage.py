"""The `fuse` stage: one target model's training targets from the pivot's store and aligned source stores.

The candidate list is the pivot followed by the aligned stores given: a pairwise target is the pivot and one
source, the paper's "Multi" the pivot and all of them. The output is a store in the pivot's positions and
vocabulary whose top-k at each supervised position is the fused target distribution, with a per-row `teacher`
column (the candidate MinCE chose; -1 for a tie or a token-level method) and selection counts in the manifest.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from fusechat.errors import FusechatError
from fusechat.fuse import methods
from fusechat.manifest import fingerprint
from fusechat.progress import progress_bar
from fusechat.store.format import TopKRecord, TopKStore
from fusechat.store.output import ShardedOutput
from fusechat.store.pairs import check_pair, check_row_ids, open_teacher_store

log = logging.getLogger(__name__)

STAGE = "fuse"
VERSION = 1


def _open_aligned(path: str | os.PathLike, pivot: TopKStore) -> TopKStore:
    try:
        store = TopKStore(path, stage="align")
    except FusechatError as e:
        raise FusechatError(f"aligned store: {e}") from None
    want, got = pivot.manifest.get("tokenizer_fingerprint"), store.manifest.get("tokenizer_fingerprint")
    if want != got:
        raise FusechatError(
            f"aligned store {store.dir} is in the vocabulary of another pivot (tokenizer {got}, the pivot "
            f"store {pivot.dir} has {want}); align the source onto this pivot first"
        )
    check_pair(pivot, store, what="aligned")
    return store


def fuse_record(method: str, recs: list[TopKRecord], k: int) -> tuple[TopKRecord, dict]:
    """One conversation's fused record from the pivot's (first) and the aligned candidates' records."""
    piv = recs[0]
    p = len(piv.positions)
    for r in recs[1:]:
        if not np.array_equal(r.positions, piv.positions):
            raise FusechatError(
                f"conversation {piv.id}: an aligned store's positions differ from the pivot store's; "
                "it was aligned onto another pivot store, rerun `fusechat align`"
            )
    covered = np.stack([np.ones(p, dtype=bool)] + [np.asarray(r.extra["covered"], dtype=bool) for r in recs[1:]])
    ids = np.stack([r.topk_ids for r in recs])
    lps = np.stack([r.topk_logprobs.astype(np.float32) for r in recs])
    nll = np.array([r.nll for r in recs], dtype=np.float32)
    info = {
        "teacher": -1,
        "tie": False,
        "position_ties": 0,
        "chosen_positions": np.zeros(len(recs), np.int64),
    }
    if method == "token-mince":
        gold = np.stack([r.gold_logprob.astype(np.float32) for r in recs])
        weights, ties, best = methods.token_weights(gold, covered)
        info["position_ties"] = int(ties.sum())
        info["chosen_positions"] = (weights == 1.0).sum(axis=0)
        # The per-position choice's own score: the gold token's cross-entropy under the winning candidate, in the
        # pivot's tokens (the pivot is always covered, so it is finite and never above the pivot's own).
        row_nll = float(-best.astype(np.float64).sum())
    else:
        w, teacher, tie = methods.sequence_weights(method, methods.bytes_scores(nll, piv.n_bytes))
        weights = np.broadcast_to(w, (p, len(recs)))
        info.update(teacher=teacher, tie=tie)
        row_nll = float(np.dot(w, nll))
    out_ids, out_lp, _, fallback = methods.mix(ids, lps, covered, weights, k)
    gold_ids = piv.input_ids[piv.positions + 1][:, None]
    at = out_ids == gold_ids
    gold = np.where(at.any(axis=1), np.where(at, out_lp, 0.0).sum(axis=1), -np.inf).astype(np.float32)
    info["fallback_positions"] = int(fallback.sum())
    # Positions where a distribution gives the pivot's gold token no mass (not among the kept ids, or no aligned
    # source token): there the fusion term trains the student away from the text. Each candidate's count, then
    # the fused target's (docs/results.md, section 5: MinCE's own-token score does not see this).
    kept = (ids == gold_ids[None]).any(axis=2) & covered
    info["gold_not_kept"] = np.append(p - kept.sum(axis=1), int((~at.any(axis=1)).sum()))
    rec = TopKRecord(
        id=piv.id,
        input_ids=piv.input_ids,
        offsets=piv.offsets,
        positions=piv.positions,
        topk_ids=out_ids,
        topk_logprobs=out_lp,
        gold_logprob=gold,
        nll=row_nll,
        n_bytes=piv.n_bytes,
        extra={"teacher": np.int32(info["teacher"])},
    )
    return rec, info


def fuse(
    pivot_store: str | os.PathLike,
    aligned: list[str | os.PathLike],
    out: str | os.PathLike,
    method: str = "mince",
    overwrite: bool = False,
) -> Path:
    """Write the training targets of one target (pivot + the aligned sources as candidates) to `out`."""
    if method not in methods.METHODS:
        raise FusechatError(f"unknown fusion method '{method}'; choose one of {', '.join(methods.METHODS)}")
    if not aligned:
        raise FusechatError("fuse needs at least one aligned store (--aligned)")
    piv = open_teacher_store(pivot_store, "pivot")
    stores = [_open_aligned(a, piv) for a in aligned]
    names = ["pivot"]
    for s in stores:
        name = str((s.manifest.get("source") or {}).get("model") or s.dir)
        names.append(name if name not in names else f"{name}#{len(names)}")
    fp = fingerprint(
        {
            "version": VERSION,
            "method": method,
            "pivot": [s["sha256"] for s in piv.manifest["shards"]],
            "aligned": [[s["sha256"] for s in a.manifest["shards"]] for a in stores],
        }
    )
    pm = piv.manifest
    manifest = {
        "stage": STAGE,
        "fingerprint": fp,
        "model": pm.get("model"),
        "model_dir": pm.get("model_dir"),
        "pivot": pm.get("model"),
        "pivot_dir": pm.get("model_dir"),
        "tokenizer_fingerprint": pm.get("tokenizer_fingerprint"),
        "vocab_size": pm.get("vocab_size"),
        "conversations": pm.get("conversations"),
        "conversations_fingerprint": pm.get("conversations_fingerprint"),
        "top_k": piv.k,
        "method": method,
        "candidates": [{"name": "pivot", "store": str(piv.dir)}]
        + [{"name": n, "store": str(s.dir)} for n, s in zip(names[1:], stores, strict=True)],
    }
    n = piv.n_shards
    teacher_column = pa.schema([("teacher", pa.int32())])
    with ShardedOutput(out, STAGE, fp, n, piv.k, "fusechat fuse", extra=teacher_column, overwrite=overwrite) as output:
        if output.up_to_date:
            return output.dir
        output.start(manifest)
        selection = {"conversations": dict.fromkeys(names, 0), "ties": 0, "position_ties": 0}
        chosen_positions = np.zeros(len(names), dtype=np.int64)
        fallback = 0
        gold_not_kept, positions = np.zeros(len(names) + 1, dtype=np.int64), 0
        # Cross-entropy of the supervised text per candidate and of the fused target (MinCE's premise: the fused
        # target is below every single teacher), summed over conversations as nats and bytes.
        nll_sums, fused_nll, n_bytes = np.zeros(len(names), dtype=np.float64), 0.0, 0
        bar = progress_bar(len(piv), f"fuse {method}", unit=" conv")
        for i in range(n):
            a_rows = piv.read_shard(i)
            b_rows = [s.read_shard(i) for s in stores]
            for s, rows in zip(stores, b_rows, strict=True):
                check_row_ids(
                    f"pivot store {piv.dir} and aligned store {s.dir}",
                    i,
                    [r.id for r in a_rows],
                    [r.id for r in rows],
                )
            infos = []
            # A finished shard is read again for its selection counts, which the manifest sums over all shards.
            with contextlib.nullcontext() if output.done(i) else output.shard(i) as writer:
                for j, a in enumerate(a_rows):
                    candidates = [a] + [rows[j] for rows in b_rows]
                    rec, info = fuse_record(method, candidates, piv.k)
                    infos.append(info)
                    nll_sums += [c.nll for c in candidates]
                    fused_nll += rec.nll
                    n_bytes += a.n_bytes
                    positions += len(a.positions)
                    if writer is not None:
                        writer.write(rec)
                    bar.update()
            for info in infos:
                if info["teacher"] >= 0:
                    selection["conversations"][names[info["teacher"]]] += 1
                selection["ties"] += int(info["tie"])
                selection["position_ties"] += info["position_ties"]
                chosen_positions += info["chosen_positions"]
                fallback += info["fallback_positions"]
                gold_not_kept += info["gold_not_kept"]
            log.info("%s: shard %d/%d fused", output.dir, i + 1, n)
        bar.close()
        if method == "token-mince":
            selection["positions"] = dict(zip(names, chosen_positions.tolist(), strict=True))
        selection["fallback_positions"] = fallback
        manifest["selection"] = selection
        bits = 1.0 / (math.log(2) * max(n_bytes, 1))
        manifest["bits_per_byte"] = {
            "candidates": {name: float(v * bits) for name, v in zip(names, nll_sums, strict=True)},
            "fused": float(fused_nll * bits),
            "bytes": int(n_bytes),
        }
        manifest["gold_not_kept"] = {
            "positions": int(positions),
            "candidates": dict(zip(names, gold_not_kept[:-1].tolist(), strict=True)),
            "fused": int(gold_not_kept[-1]),
        }
        return output.finish(manifest)
