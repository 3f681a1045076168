"""The alignment stage's inputs beyond the stores themselves: the tokenizers and the rendered texts.

A store's ids only mean something with the tokenizer it was made with, and offsets only with the text they
index; every failure here names the store and the fix.
"""

from __future__ import annotations

import logging
from typing import Any

from fusechat.errors import FusechatError
from fusechat.store.format import TopKStore

log = logging.getLogger(__name__)

MAP_FILE = "vocab_map.npz"


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
    from fusechat.models.load import load_tokenizer, tokenizer_fingerprint

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
