"""The align stage on real tiny stores: self-alignment, coverage statistics, caching, resume and bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from transformers import AutoTokenizer

from fusechat.align.maps import exact_map
from fusechat.align.stage import align
from fusechat.align.vocab import vocab_bytes
from fusechat.errors import FusechatError
from fusechat.store.format import TopKStore
from tests.stores import CHATS, write_conversations, write_teacher_store


@pytest.mark.parametrize("kind", ["bytelevel", "metaspace", "wordlevel"])
@pytest.mark.parametrize("alignment", ["offsets", "dtw"])
def test_aligning_a_store_with_itself_gives_back_its_distributions(world, tmp_path, kind, alignment):
    store = world["stores"][kind]
    out = align(store, store, tmp_path / "self", alignment=alignment)
    orig, got = TopKStore(store), TopKStore(out, stage="align")
    vocab = vocab_bytes(AutoTokenizer.from_pretrained(world["models"][kind]))
    canon = exact_map(vocab, vocab)  # ids spelling the same bytes (a byte-fallback twin) become one id
    assert got.manifest["coverage"]["covered_share"] == 1.0
    assert got.manifest["coverage"]["mass_kept_share"] == pytest.approx(1.0)
    for a, b in zip(orig, got, strict=True):
        assert a.id == b.id and np.array_equal(a.positions, b.positions)
        assert np.all(b.extra["covered"])
        for t in range(len(a.positions)):
            ids = canon[a.topk_ids[t]].tolist()
            have = dict(zip(b.topk_ids[t].tolist(), b.topk_logprobs[t].tolist(), strict=True))
            if len(set(ids)) == len(ids):
                assert have == dict(zip(ids, a.topk_logprobs[t].tolist(), strict=True))
            else:
                want: dict[int, float] = {}
                for i, lp in zip(ids, a.topk_logprobs[t].astype(np.float64), strict=True):
                    want[i] = want.get(i, 0.0) + np.exp(lp)
                assert {i: np.exp(v) for i, v in have.items() if i >= 0} == pytest.approx(want, rel=2e-3)
        same = canon[a.input_ids[a.positions + 1]] == a.input_ids[a.positions + 1]
        assert np.array_equal(a.gold_logprob[same], b.gold_logprob[same])
        assert a.nll == b.nll and a.n_bytes == b.n_bytes


def test_cross_tokenizer_alignment_statistics_and_cache(world, tmp_path):
    piv, src = world["stores"]["bytelevel"], world["stores"]["metaspace"]
    shares = {}
    for name in ["exact", "prefix", "mined", "stats"]:
        m = TopKStore(align(piv, src, tmp_path / name, vocab_map=name)).manifest
        cov = m["coverage"]
        assert 0 < cov["covered"] < cov["positions"]
        assert m["vocab_map"]["method"] == name and (tmp_path / name / "vocab_map.npz").is_file()
        assert (
            m["source"]["store"] == str(src)
            and m["tokenizer_fingerprint"] == TopKStore(piv).manifest["tokenizer_fingerprint"]
        )
        shares[name] = cov["mass_kept_share"]
    assert shares["prefix"] >= shares["exact"] and shares["mined"] >= shares["exact"]
    assert shares["exact"] < 1.0


def test_rerun_is_skipped_and_a_lost_shard_is_redone(world, tmp_path):
    piv, src = world["stores"]["bytelevel"], world["stores"]["metaspace"]
    out = align(piv, src, tmp_path / "a")
    before = json.loads((out / "manifest.json").read_text())
    shard = out / before["shards"][1]["file"]
    shard.unlink()
    (out / "manifest.json").write_text(json.dumps({**before, "complete": False}))
    align(piv, src, out)
    after = json.loads((out / "manifest.json").read_text())
    assert after["complete"] and after["shards"][1]["sha256"] == before["shards"][1]["sha256"]
    assert after["coverage"] == before["coverage"]


def test_unknown_names_fail_before_any_work(world, tmp_path):
    s = world["stores"]["bytelevel"]
    with pytest.raises(FusechatError, match="unknown vocabulary map 'fuzzy'"):
        align(s, s, tmp_path / "x", vocab_map="fuzzy")
    with pytest.raises(FusechatError, match="unknown alignment"):
        align(s, s, tmp_path / "x", alignment="greedy")
    assert not (tmp_path / "x").exists()


def test_stores_from_different_conversations(world, tmp_path):
    conv = write_conversations(tmp_path / "conv2", CHATS[:4])
    other = write_teacher_store(tmp_path / "other", world["models"]["metaspace"], conv)
    with pytest.raises(FusechatError, match="different conversations") as e:
        align(world["stores"]["bytelevel"], other, tmp_path / "out")
    assert str(world["stores"]["bytelevel"]) in str(e.value) and str(other) in str(e.value)


def test_incomplete_store_and_k_mismatch(world, tmp_path):
    bad = tmp_path / "incomplete"
    shutil.copytree(world["stores"]["metaspace"], bad)
    m = json.loads((bad / "manifest.json").read_text())
    (bad / "manifest.json").write_text(json.dumps({**m, "complete": False}))
    with pytest.raises(FusechatError, match="source store.*did not finish"):
        align(world["stores"]["bytelevel"], bad, tmp_path / "o1")
    k3 = write_teacher_store(tmp_path / "k3", world["models"]["metaspace"], world["conv"], k=3)
    with pytest.raises(FusechatError, match="different top-k"):
        align(world["stores"]["bytelevel"], k3, tmp_path / "o2")


def test_reordered_rows_and_other_texts_are_caught(world, tmp_path):
    src = tmp_path / "swapped"
    shutil.copytree(world["stores"]["metaspace"], src)
    m = json.loads((src / "manifest.json").read_text())
    a, b = (src / m["shards"][0]["file"]), (src / m["shards"][1]["file"])
    if m["shards"][0]["rows"] == m["shards"][1]["rows"]:
        tmp = a.read_bytes()
        a.write_bytes(b.read_bytes())
        b.write_bytes(tmp)
        # The manifest must describe the swapped files, or the shard checksums (rightly) refuse them first.
        s0, s1 = m["shards"]
        for key in ("bytes", "sha256"):
            s0[key], s1[key] = s1[key], s0[key]
        (src / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(FusechatError, match="not in the same order"):
            align(world["stores"]["bytelevel"], src, tmp_path / "o")


def test_columnar_reader_equals_a_plain_row_reading(world, tmp_path):
    """store.read_shard slices flat Arrow columns; a plain reading row by row through to_pylist must agree."""
    from fusechat.fuse import fuse

    aligned = align(world["stores"]["bytelevel"], world["stores"]["metaspace"], tmp_path / "a")
    fused = fuse(world["stores"]["bytelevel"], [aligned], tmp_path / "f")
    for path in (world["stores"]["metaspace"], aligned, fused):
        store = TopKStore(path)
        for i in range(store.n_shards):
            for x, row in zip(store.read_shard(i), store.read_table(i).to_pylist(), strict=True):
                assert x.id == row["id"] and x.n_bytes == row["n_bytes"]
                assert np.float32(x.nll) == np.float32(row["nll"])
                for f in ("input_ids", "offsets", "positions", "topk_ids", "topk_logprobs", "gold_logprob"):
                    a, b = getattr(x, f), np.asarray(row[f], dtype=getattr(x, f).dtype).reshape(getattr(x, f).shape)
                    assert np.array_equal(a, b), f
                assert set(x.extra) == set(row) - {"id", "input_ids", "offsets", "positions", "topk_ids"} - {
                    "topk_logprobs",
                    "gold_logprob",
                    "nll",
                    "n_bytes",
                }
                for key in x.extra:
                    assert np.array_equal(np.asarray(x.extra[key]), np.asarray(row[key]))


def test_dtw_refuses_a_table_too_large_for_memory(world, tmp_path, monkeypatch):
    from fusechat.align import stage

    monkeypatch.setattr(stage, "DTW_MAX_CELLS", 100)
    s = world["stores"]["bytelevel"]
    with pytest.raises(FusechatError, match="use --alignment offsets"):
        align(s, world["stores"]["metaspace"], tmp_path / "d", alignment="dtw")
