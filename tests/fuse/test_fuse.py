"""Fusion: MinCE per byte (ties mixed, not settled toward the pivot), AvgCE, token-level MinCE, fallback."""

from __future__ import annotations

import numpy as np
import pytest

from fusechat.align.stage import align
from fusechat.errors import FusechatError
from fusechat.fuse import fuse, methods
from fusechat.fuse.stage import fuse_record
from fusechat.store.format import TopKRecord, TopKStore


def rec(nll: float, n_bytes: int, ids, lps, covered=None, gold=None) -> TopKRecord:
    ids = np.asarray(ids, dtype=np.int32)
    p = len(ids)
    extra = {} if covered is None else {"covered": np.asarray(covered, dtype=bool)}
    return TopKRecord(
        id="c0",
        input_ids=np.array([0, 1, 2, 3, 4][: p + 1], dtype=np.int32),
        offsets=np.zeros((p + 1, 2), dtype=np.int32),
        positions=np.arange(p, dtype=np.int32),
        topk_ids=ids,
        topk_logprobs=np.log(np.asarray(lps, dtype=np.float64)).astype(np.float16),
        gold_logprob=np.asarray(gold if gold is not None else np.zeros(p), dtype=np.float16),
        nll=nll,
        n_bytes=n_bytes,
        extra=extra,
    )


def test_mince_compares_per_byte_not_per_token():
    # the source has the higher nll per token but the lower per byte (its tokens are longer)
    scores = methods.bytes_scores(np.array([30.0, 29.0]), 100)
    w, teacher, tie = methods.sequence_weights("mince", scores)
    assert teacher == 1 and not tie and w.tolist() == [0.0, 1.0]


def test_mince_exact_tie_is_mixed_and_reported():
    w, teacher, tie = methods.sequence_weights("mince", np.array([0.5, 0.5, 0.7], dtype=np.float32))
    assert teacher == -1 and tie and w.tolist() == [0.5, 0.5, 0.0]


def test_near_tie_that_bf16_would_merge_is_decided_in_float32():
    a, b = np.float32(0.50000), np.float32(0.50098)  # equal in bf16
    import torch

    assert torch.tensor(float(a)).bfloat16() == torch.tensor(float(b)).bfloat16()
    _, teacher, tie = methods.sequence_weights("mince", np.array([b, a], dtype=np.float32))
    assert teacher == 1 and not tie


def test_avgce_weights_are_softmax_of_minus_score():
    w, teacher, _ = methods.sequence_weights("avgce", np.array([1.0, 2.0], dtype=np.float32))
    assert teacher == -1
    np.testing.assert_allclose(w, np.exp([-1.0, -2.0]) / np.exp([-1.0, -2.0]).sum())


def test_mince_record_takes_the_source_and_falls_back_where_uncovered():
    piv = rec(20.0, 10, [[1, 2], [3, 4]], [[0.6, 0.2], [0.5, 0.5]])
    src = rec(5.0, 10, [[2, 1], [-1, -1]], [[0.7, 0.1], [1e-9, 1e-9]], covered=[True, False])
    out, info = fuse_record("mince", [piv, src], 2)
    assert info["teacher"] == 1 and info["fallback_positions"] == 1
    assert out.topk_ids[0].tolist() == [2, 1]
    np.testing.assert_allclose(np.exp(out.topk_logprobs[0].astype(float)), [0.875, 0.125], rtol=2e-3)
    assert out.topk_ids[1].tolist() == [3, 4]  # the pivot's own distribution
    np.testing.assert_allclose(np.exp(out.topk_logprobs[1].astype(float)), [0.5, 0.5], rtol=2e-3)
    # gold tokens 1, 2: the pivot keeps 1 only; the source keeps 1 and has no token at the second position; the
    # fused target takes the source's first row and the pivot's second
    assert info["gold_not_kept"].tolist() == [1, 1, 1]


def test_tie_mixes_both_candidates():
    piv = rec(5.0, 10, [[1, 2]], [[0.5, 0.5]])
    src = rec(5.0, 10, [[2, 3]], [[0.5, 0.5]], covered=[True])
    out, info = fuse_record("mince", [piv, src], 3)
    assert info["tie"] and info["teacher"] == -1
    assert out.topk_ids[0].tolist() == [2, 1, 3]
    np.testing.assert_allclose(np.exp(out.topk_logprobs[0].astype(float)), [0.5, 0.25, 0.25], rtol=2e-3)


def test_token_level_mince_picks_per_position():
    piv = rec(5.0, 10, [[1, 2], [3, 4]], [[0.6, 0.4], [0.5, 0.5]], gold=np.log([0.6, 0.1]))
    src = rec(9.0, 10, [[2, 1], [4, 3]], [[0.9, 0.1], [0.8, 0.2]], covered=[True, True], gold=np.log([0.1, 0.8]))
    out, info = fuse_record("token-mince", [piv, src], 2)
    assert out.topk_ids.tolist() == [[1, 2], [4, 3]]
    assert info["chosen_positions"].tolist() == [1, 1]
    # its score: the winner's gold cross-entropy at each position (pivot 0.6, then the source's 0.8)
    assert out.nll == pytest.approx(-np.log(0.6) - np.log(0.8), rel=1e-3)  # gold log-probs are stored fp16


def test_fuse_stage_pairwise_and_multi(world, tmp_path):
    piv = world["stores"]["bytelevel"]
    a1 = align(piv, world["stores"]["metaspace"], tmp_path / "a1", vocab_map="prefix")
    a2 = align(piv, world["stores"]["wordlevel"], tmp_path / "a2", vocab_map="mined")
    for method in methods.METHODS:
        out = fuse(piv, [a1, a2], tmp_path / f"multi-{method}", method=method)
        store = TopKStore(out, stage="fuse")
        m = store.manifest
        assert m["method"] == method and [c["name"] for c in m["candidates"]][0] == "pivot"
        assert m["pivot_dir"] == TopKStore(piv).manifest["model_dir"] and len(m["candidates"]) == 3
        for r in store:
            p = np.where(r.topk_ids >= 0, np.exp(r.topk_logprobs.astype(np.float64)), 0.0).sum(axis=1)
            np.testing.assert_allclose(p, 1.0, rtol=5e-3)
            assert r.extra["teacher"] >= -1
    sel = TopKStore(tmp_path / "multi-mince").manifest["selection"]
    assert sum(sel["conversations"].values()) + sel["ties"] == len(TopKStore(piv))
    pair = fuse(piv, [a1], tmp_path / "pair")
    assert len(TopKStore(pair).manifest["candidates"]) == 2
    missed = TopKStore(pair).manifest["gold_not_kept"]
    records = list(TopKStore(pair))
    assert missed["positions"] == sum(len(r.positions) for r in records)
    assert missed["fused"] == sum(int((~np.isfinite(r.gold_logprob.astype(np.float32))).sum()) for r in records)
    assert set(missed["candidates"]) == {"pivot", TopKStore(pair).manifest["candidates"][1]["name"]}


def test_fuse_bad_input(world, tmp_path):
    piv = world["stores"]["bytelevel"]
    with pytest.raises(FusechatError, match="unknown fusion method"):
        fuse(piv, [piv], tmp_path / "x", method="maxce")
    with pytest.raises(FusechatError, match="aligned store: .*'teach' output, expected 'align'"):
        fuse(piv, [piv], tmp_path / "x")
    other = align(world["stores"]["metaspace"], world["stores"]["wordlevel"], tmp_path / "other-pivot")
    with pytest.raises(FusechatError, match="vocabulary of another pivot"):
        fuse(piv, [other], tmp_path / "y")
