"""The normalised bytes of every token, learned from each tokenizer's own decoder."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast

from fusechat.align.vocab import byte_level_alphabet, vocab_bytes
from tests.stores import CHATS, KINDS


@pytest.fixture(scope="module")
def tokenizers():
    return {kind: PreTrainedTokenizerFast(tokenizer_object=make()) for kind, make in KINDS.items()}


@pytest.mark.parametrize("kind", ["bytelevel", "metaspace"])
def test_pieces_spell_the_text_back(tokenizers, kind):
    tok = tokenizers[kind]
    vocab = vocab_bytes(tok)
    for user, assistant in CHATS:
        text = user + " " + assistant
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert b"".join(vocab.pieces[i] for i in ids) == text.encode("utf-8")


def test_space_markers_and_bytes_normalise_to_the_same_bytes(tokenizers):
    bl, ms = vocab_bytes(tokenizers["bytelevel"]), vocab_bytes(tokenizers["metaspace"])
    bl_tok, ms_tok = tokenizers["bytelevel"], tokenizers["metaspace"]
    assert bl.pieces[bl_tok.convert_tokens_to_ids("Ġis")] == b" is"
    assert ms.pieces[ms_tok.convert_tokens_to_ids("▁is")] == b" is"
    fallback = ms_tok.convert_tokens_to_ids("<0xE6>")
    assert ms.pieces[fallback] == b"\xe6" and ms.partial[fallback]
    stand_in = bl_tok.convert_tokens_to_ids(byte_level_alphabet()[0xE6])
    assert bl.pieces[stand_in] == b"\xe6" and bl.partial[stand_in]
    assert bl.pieces[bl_tok.convert_tokens_to_ids("<|im_start|>")] == b"<|im_start|>"
    assert not bl.partial[bl_tok.convert_tokens_to_ids("Ġis")]


def test_word_level_without_decoder(tokenizers):
    tok = tokenizers["wordlevel"]
    vocab = vocab_bytes(tok)
    the = tok.convert_tokens_to_ids("the")
    assert vocab.pieces[the].strip() == b"the"
    assert len(vocab) == tok.backend_tokenizer.get_vocab_size() and not np.any(vocab.partial)


def test_decoder_not_class_decides(tokenizers):
    """A byte-level pre-tokenizer with a plain decoder is not treated as byte-level: behaviour, not names."""
    from tokenizers import decoders

    tok = KINDS["bytelevel"]()
    tok.decoder = decoders.Metaspace()
    vocab = vocab_bytes(PreTrainedTokenizerFast(tokenizer_object=tok))
    assert vocab.pieces[tok.token_to_id("Ġis")] == "Ġis".encode()
