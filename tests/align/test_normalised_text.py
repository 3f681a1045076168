"""Exact alignment across tokenizers whose normaliser recomposes text (NFC), held to a plain byte-level reference.

Qwen2's tokenizer applies NFC: `e` + U+0301 becomes `é`, decomposed Hangul jamo become one syllable, and the
offsets it reports cover only the first original character of each, leaving the absorbed marks to no token.
The reference below never reads offsets: it finds, for every byte offset of the original text, which token of
each tokenization comes right after exactly the text before it (spelled the way that tokenizer spells text),
and pairs the tokens of the two tokenizations that do.
"""

from __future__ import annotations

import json
import lzma
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from tokenizers import normalizers

from fusechat.align.sequence import byte_boundaries, check_same_text, recomposed_offsets
from fusechat.align.stage import align, next_token_match, vocab_context
from fusechat.align.vocab import vocab_bytes
from fusechat.data.conversations import Conversations
from fusechat.errors import FusechatError
from fusechat.store.format import TopKRecord, TopKStore
from tests.stores import byte_level_tokenizer, save_model_dir, write_conversations, write_teacher_store


def nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def same(s: str) -> str:
    return s


def token_starts(text: str, spell, pieces: list[bytes]) -> dict[int, int]:
    """Original byte offset x -> the token whose preceding pieces spell exactly the text before x.

    `spell(s)` is what the tokenizer's pieces spell for a text s (its normal form). The tokenization's text
    splits at character boundary i when spelling both sides apart gives the whole; inside a character the
    normaliser leaves unchanged, at each of its bytes (byte-level pieces of a split character).
    """
    full = spell(text).encode()
    assert b"".join(pieces) == full
    before, spelled = {}, b""
    for k, piece in enumerate(pieces):
        before[spelled] = k
        spelled += piece
    out, x = {}, 0
    for i in range(len(text) + 1):
        head = spell(text[:i]).encode()
        if head + spell(text[i:]).encode() == full and head in before:
            out[x] = before[head]
        if i < len(text):
            char = text[i].encode()
            if head + char + spell(text[i + 1 :]).encode() == full:
                for r in range(1, len(char)):
                    if head + char[:r] in before:
                        out[x + r] = before[head + char[:r]]
            x += len(char)
    return out


def reference_pairs(text: str, spell_p, pieces_p, spell_s, pieces_s) -> set[tuple[int, int]]:
    """(j, j'): pivot token j and source token j' come right after the same original text (neither first)."""
    at_p, at_s = token_starts(text, spell_p, pieces_p), token_starts(text, spell_s, pieces_s)
    return {(at_p[x], at_s[x]) for x in at_p.keys() & at_s.keys() if at_p[x] > 0 and at_s[x] > 0}


def record(tok, text: str) -> TopKRecord:
    """A record holding only what the alignment reads: the tokenization and its offsets."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    empty = np.zeros(0, dtype=np.int32)
    return TopKRecord(
        id="x",
        input_ids=np.array(enc["input_ids"], dtype=np.int32),
        offsets=np.array(enc["offset_mapping"], dtype=np.int32).reshape(-1, 2),
        positions=empty,
        topk_ids=empty.reshape(0, 1),
        topk_logprobs=empty.reshape(0, 1).astype(np.float16),
        gold_logprob=empty.astype(np.float16),
        nll=0.0,
        n_bytes=0,
    )


def offsets_pairs(piv_tok, src_tok, text: str, vocabs=None, ignore_normalisers: bool = False):
    """The exact offset alignment's pairs (j, j') through the stage's code, and both tokenizations' pieces."""
    vp, vs = vocabs or (vocab_bytes(piv_tok), vocab_bytes(src_tok))
    ctx = vocab_context(vp, vs, "offsets")
    if ignore_normalisers:  # the rule before normalisers were read: every gap goes to the next token
        ctx.update(piv_normalize=None, src_normalize=None)
    a, b = record(piv_tok, text), record(src_tok, text)
    m = next_token_match("offsets", a, b, ctx, text)
    pairs = {(j, int(m[j])) for j in np.nonzero(m >= 0)[0].tolist()}
    return pairs, [vp.pieces[i] for i in a.input_ids], [vs.pieces[i] for i in b.input_ids]


DECOMPOSED = (
    "Voilà: cafe\u0301 au lait, man\u0303ana, nai\u0308ve re\u0301sume\u0301!\n"
    + unicodedata.normalize("NFD", "한국어 문장입니다. 갥걊 한글")
    + "\n日本語 café (composed) and e\u0301\u0301x, q\u0301 e\u0323\u0301.\n"
)


def test_a_recomposed_mark_belongs_to_the_token_before_it():
    text = "cafe\u0301 x"
    qwen_like = np.array([(0, 2), (2, 4), (5, 7)])  # "ca", "fé" (covers `fe`: the mark is in no token), " x"
    assert recomposed_offsets(qwen_like, text, nfc).tolist() == [[0, 2], [2, 5], [5, 7]]
    assert recomposed_offsets(qwen_like, text, None).tolist() == qwen_like.tolist()
    hangul = unicodedata.normalize("NFD", "한 x")  # 3 jamo; the syllable's two byte-level pieces report (0, 1)
    assert recomposed_offsets(np.array([(0, 1), (0, 1), (3, 5)]), hangul, nfc).tolist() == [[0, 3], [0, 3], [3, 5]]
    # at the end of the text, and after a mark the normaliser leaves alone
    assert recomposed_offsets(np.array([(0, 3), (3, 4)]), "cafe\u0301", nfc).tolist() == [[0, 3], [3, 5]]
    # a gap the normaliser does not explain (trimmed whitespace) still belongs to the next token
    assert recomposed_offsets(np.array([(0, 5), (6, 11)]), "Hello world", nfc).tolist() == [[0, 5], [6, 11]]
    strip = normalizers.Sequence([normalizers.NFC(), normalizers.Strip()]).normalize_str
    assert recomposed_offsets(np.array([(0, 5), (6, 11)]), "Hello world", strip).tolist() == [[0, 5], [6, 11]]


def test_a_text_ending_in_a_recomposed_mark_is_the_text_its_tokens_came_from():
    text = "ok cafe\u0301"
    offsets = np.array([(0, 2), (2, 6), (6, 7)])  # Qwen-like: "ok", " caf", "é" reported as (6, 7)
    with pytest.raises(FusechatError, match="another text"):
        check_same_text("c0", text, {"source": offsets}, "stores")
    check_same_text("c0", text, {"source": recomposed_offsets(offsets, text, nfc)}, "stores")
    longer = np.array([(0, 2), (2, 9), (10, 12)])  # offsets from another, longer text: refused, not a crash
    with pytest.raises(FusechatError, match="another text"):
        check_same_text("c0", text, {"source": recomposed_offsets(longer, text, nfc)}, "stores")


def test_pieces_inside_a_recomposed_character_start_nothing():
    # Qwen splits the recomposed 갥 (3 jamo in the text, 9 bytes) into two pieces of its 3 NFC bytes, both
    # reported at (0, 1): the second starts after the syllable's first NFC byte, a place the text does not have
    text = unicodedata.normalize("NFD", "갥 x")
    offsets, nbytes = np.array([(0, 1), (0, 1), (3, 5)]), np.array([2, 1, 2])
    assert byte_boundaries(offsets, nbytes, text).tolist() == [0, 2, 3]  # without the normaliser: wrong
    assert byte_boundaries(offsets, nbytes, text, nfc).tolist() == [0, -1, 9]


def tiny_pair(tmp: Path) -> tuple[Path, Path]:
    """A byte-level tokenizer and the same one with an NFC normaliser (as Qwen2's), as model directories."""
    plain, composing = byte_level_tokenizer(), byte_level_tokenizer()
    composing.normalizer = normalizers.NFC()
    return save_model_dir(tmp / "plain", plain, seed=0), save_model_dir(tmp / "nfc", composing, seed=1)


def test_tiny_nfc_tokenizer_aligns_like_the_reference(tmp_path):
    from transformers import AutoTokenizer

    plain_dir, nfc_dir = tiny_pair(tmp_path)
    plain, composing = AutoTokenizer.from_pretrained(plain_dir), AutoTokenizer.from_pretrained(nfc_dir)
    text = "Say cafe\u0301 x and nai\u0308ve, " + unicodedata.normalize("NFD", "한국어") + " done."
    gaps = composing(text, return_offsets_mapping=True)["offset_mapping"]
    assert any(b[0] > a[1] for a, b in zip(gaps, gaps[1:], strict=False))  # the offsets do skip the marks
    for piv, src, sp, ss in ((plain, composing, same, nfc), (composing, plain, nfc, same)):
        pairs, pp, ps = offsets_pairs(piv, src, text)
        assert pairs == reference_pairs(text, sp, pp, ss, ps)
        old, _, _ = offsets_pairs(piv, src, text, ignore_normalisers=True)
        assert old != pairs  # the test can fail: the rule without the normaliser pairs wrong tokens


def test_aligned_store_takes_each_position_from_the_source_position_the_reference_names(tmp_path):
    """Through the stage: covered positions and their distributions, against the reference."""
    from transformers import AutoTokenizer

    plain_dir, nfc_dir = tiny_pair(tmp_path / "models")
    chats = [
        ("Say it.", "cafe\u0301 x, nai\u0308ve re\u0301sume\u0301 and man\u0303ana."),
        ("Korean?", unicodedata.normalize("NFD", "한국어 문장입니다. 한글") + " ok"),
    ]
    conv = write_conversations(tmp_path / "conv", chats)
    piv_store = write_teacher_store(tmp_path / "piv", plain_dir, conv, n_shards=1)
    src_store = write_teacher_store(tmp_path / "src", nfc_dir, conv, n_shards=1)
    out = align(piv_store, src_store, tmp_path / "aligned")
    plain, composing = AutoTokenizer.from_pretrained(plain_dir), AutoTokenizer.from_pretrained(nfc_dir)
    vp, vs = vocab_bytes(plain), vocab_bytes(composing)
    conversations = Conversations(conv)
    texts = dict(zip(conversations.ids, conversations.texts, strict=True))
    piv_rows, src_rows = TopKStore(piv_store).read_shard(0), TopKStore(src_store).read_shard(0)
    for got, a, b in zip(TopKStore(out).read_shard(0), piv_rows, src_rows, strict=True):
        text = texts[a.id]
        pairs = reference_pairs(
            text, same, [vp.pieces[i] for i in a.input_ids], nfc, [vs.pieces[i] for i in b.input_ids]
        )
        source_row = {int(u): r for r, u in enumerate(b.positions)}
        want = {}
        for j, jj in pairs:  # pivot position j - 1 predicts what source position jj - 1 does
            if jj - 1 in source_row:
                want[j - 1] = source_row[jj - 1]
        covered = {int(t) for t, c in zip(a.positions, got.extra["covered"], strict=True) if c}
        assert covered == {t for t in want if t in set(a.positions.tolist())}
        assert len(covered) > 0
        for row, t in enumerate(a.positions.tolist()):
            if t in covered:  # same vocabulary on both sides: the exact map is the identity
                r = want[t]
                assert dict(zip(got.topk_ids[row].tolist(), got.topk_logprobs[row].tolist(), strict=True)) == (
                    dict(zip(b.topk_ids[r].tolist(), b.topk_logprobs[r].astype(np.float32).tolist(), strict=True))
                )


SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "tokenizers"
REAL = {  # name -> what its pieces spell for a text
    "qwen2.5-coder-0.5b-instruct": nfc,  # its normaliser is NFC (checked below)
    "smollm2-135m-instruct": same,  # no normaliser
    "gemma-3-270m": same,  # its normaliser writes spaces as `▁`, its decoder writes them back
}


@pytest.fixture(scope="module")
def real_toks(tmp_path_factory):
    """The real tokenizers from the shared folder beside the checkout (skipped where it is absent)."""
    if not all((SHARED / name / "tokenizer.json.xz").is_file() for name in REAL):
        pytest.skip(f"{SHARED}: the real tokenizers are not there")
    from fusechat.models.load import load_tokenizer

    root = tmp_path_factory.mktemp("real-tokenizers")
    toks = {}
    for name in REAL:
        d = root / name
        d.mkdir()
        (d / "tokenizer.json").write_bytes(lzma.decompress((SHARED / name / "tokenizer.json.xz").read_bytes()))
        for f in ("tokenizer_config.json", "chat_template.jinja"):
            if (SHARED / name / f).is_file():
                shutil.copy(SHARED / name / f, d / f)
        tok = load_tokenizer(d)
        toks[name] = (tok, vocab_bytes(tok))
    spec = json.loads(toks["qwen2.5-coder-0.5b-instruct"][0].backend_tokenizer.to_str())["normalizer"]
    assert spec == {"type": "NFC"}
    return toks


@pytest.mark.real
@pytest.mark.parametrize(
    "pivot,source",
    [
        ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"),
        ("qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"),
        ("gemma-3-270m", "qwen2.5-coder-0.5b-instruct"),
        ("qwen2.5-coder-0.5b-instruct", "gemma-3-270m"),
        ("smollm2-135m-instruct", "gemma-3-270m"),
    ],
)
def test_real_tokenizers_on_decomposed_text_match_the_byte_level_reference(real_toks, pivot, source):
    (piv_tok, vp), (src_tok, vs) = real_toks[pivot], real_toks[source]
    pairs, pp, ps = offsets_pairs(piv_tok, src_tok, DECOMPOSED, (vp, vs))
    assert pairs == reference_pairs(DECOMPOSED, REAL[pivot], pp, REAL[source], ps)
    assert len(pairs) > 0.3 * min(len(pp), len(ps))
    old, _, _ = offsets_pairs(piv_tok, src_tok, DECOMPOSED, (vp, vs), ignore_normalisers=True)
    if "qwen" in pivot + source:
        assert old != pairs  # one wrong and one lost pair per decomposed sequence before the fix
    else:
        assert old == pairs
