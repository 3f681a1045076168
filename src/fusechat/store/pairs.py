"""Checks that stores can be read side by side (align reads a pivot and a source store, fuse a pivot store and
aligned ones): the same conversations in the same order and sharding, with the same k.

Every failure names both stores and the fix, before any compute where the manifests can tell.
"""

from __future__ import annotations

import os

from fusechat.errors import FusechatError
from fusechat.store.format import TopKStore

TEACH = "teach"


def open_teacher_store(path: str | os.PathLike, role: str) -> TopKStore:
    """Open a complete teacher store, saying which role (pivot or source) a failure concerns."""
    try:
        return TopKStore(path, stage=TEACH)
    except FusechatError as e:
        raise FusechatError(f"{role} store: {e}") from None


def check_pair(a: TopKStore, b: TopKStore, what: str = "source") -> None:
    """Fail unless two stores hold the same conversations, shard for shard, with the same k."""
    names = f"pivot store {a.dir} and {what} store {b.dir}"
    ma, mb = a.manifest, b.manifest
    if ma.get("conversations_fingerprint") != mb.get("conversations_fingerprint"):
        raise FusechatError(
            f"{names} were made from different conversations (fingerprints "
            f"{ma.get('conversations_fingerprint')} "
            f"and {mb.get('conversations_fingerprint')}); run both teacher passes on the same conversations"
        )
    if a.k != b.k:
        raise FusechatError(f"{names} keep different top-k ({a.k} and {b.k}); rerun one teacher pass with --top-k")
    rows_a = [s["rows"] for s in ma["shards"]]
    rows_b = [s["rows"] for s in mb["shards"]]
    if rows_a != rows_b:
        raise FusechatError(
            f"{names} are sharded differently ({len(rows_a)} shards of {rows_a[:4]}... rows and "
            f"{len(rows_b)} of "
            f"{rows_b[:4]}...); rerun the teacher passes with the same --shards"
        )


def check_row_ids(names: str, shard: int, ids_a: list[str], ids_b: list[str]) -> None:
    if ids_a != ids_b:
        bad = next(i for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=True)) if x != y)
        raise FusechatError(
            f"{names}: shard {shard} row {bad} holds conversation {ids_a[bad]} in one and {ids_b[bad]} "
            "in the other; the stores are not in the same order, rerun the teacher passes from the same "
            "conversations"
        )
