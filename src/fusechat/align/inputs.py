"""The inputs of the alignment and fusion stages, checked before any compute: stores, tokenizers, texts.

Two stores are only comparable when they hold the same conversations in the same order with the same k, and a
store's ids only mean something with the tokenizer it was made with; every failure here names both stores and
the fix. Also where a stage decides whether its output directory is already up to date.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from fusechat.errors import FusechatError
from fusechat.manifest import MANIFEST, read_manifest
from fusechat.store import TopKStore

log = logging.getLogger(__name__)

TEACH = "teach"
MAP_FILE = "vocab_map.npz"


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


def conversation_texts(store: TopKStore) -> dict[str, str]:
    """The rendered texts by id, when the store's conversations directory is still there and unchanged."""
    from fusechat.data.conversations import Conversations

    path = store.manifest.get("conversations")
    try:
        conv = Conversations(path) if path else None
    except FusechatError:
        conv = None
    if conv is None or conv.fingerprint != store.manifest.get("conversations_fingerprint"):
        log.warning("%s: its conversations are not readable; texts are checked by supervised bytes only", store.dir)
        return {}
    return dict(zip(conv.ids, conv.texts, strict=True))


def load_store_tokenizer(store: TopKStore, role: str) -> Any:
    """The tokenizer whose ids a store holds, checked against the fingerprint its manifest recorded."""
    from fusechat.models import load_tokenizer, tokenizer_fingerprint

    spec = store.manifest.get("model_dir") or store.manifest.get("model")
    if not spec:
        raise FusechatError(f"{role} store {store.dir}: manifest names no model_dir; rerun its teacher pass")
    tok = load_tokenizer(spec)
    want = store.manifest.get("tokenizer_fingerprint")
    if want and tokenizer_fingerprint(tok) != want:
        raise FusechatError(
            f"{role} store {store.dir}: the tokenizer now in {spec} is not the one the store was made with "
            f"(fingerprint {tokenizer_fingerprint(tok)}, manifest {want}); restore it or rerun the teacher "
            "pass"
        )
    return tok


def up_to_date(out: Path, stage: str, fp: str) -> bool:
    """True if `out` holds a complete output of these inputs; if it holds another one, clear its shards."""
    if not (out / MANIFEST).is_file():
        return False
    old = read_manifest(out, stage=stage, require_complete=False)
    if old.get("fingerprint") == fp:
        # A shard deleted after the fact (the recovery for a corrupted one) makes the output resumable again.
        whole = all(
            (out / s["file"]).is_file() and (out / s["file"]).stat().st_size == s.get("bytes")
            for s in old.get("shards") or []
        )
        if old.get("complete") and whole:
            log.info("%s: up to date", out)
        return bool(old.get("complete")) and whole
    for f in out.iterdir():
        if f.name.startswith("shard-") or f.name == MAP_FILE:
            f.unlink()
    return False
