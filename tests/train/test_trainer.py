"""The collator, the head description, and the trainer's loss on a tiny Llama-style model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusechat.errors import FusechatError
from fusechat.store.format import TopKStore
from fusechat.train import head as head_module
from fusechat.train.data import FusionCollator, TargetsDataset, pack_rows
from fusechat.train.dense import dense_fusion_loss
from fusechat.train.head import check_head, final_hidden, head_of
from fusechat.train.loss import fusion_loss


@pytest.fixture(scope="module")
def pivot_model(tiny):
    from fusechat.models.load import load_model

    return load_model(tiny["pivot"]).eval()


@pytest.fixture(scope="module")
def dataset(tiny):
    return TargetsDataset(TopKStore(tiny["targets"]))


def batch_loss(model, batch, lam=0.7, **kw):
    """The trainer's loss path: final hidden states, gathered at supervised positions, chunked loss."""
    labels = batch["labels"]
    sup = labels[:, 1:] != -100
    hidden = final_hidden(model, batch)[:, :-1][sup]
    return fusion_loss(
        hidden,
        head_of(model),
        labels[:, 1:][sup],
        batch["target_ids"],
        batch["target_logprobs"],
        lam=lam,
        **kw,
    )


def test_collator_pads_to_the_longest_and_aligns_labels_with_targets(dataset):
    examples = [dataset[i] for i in (0, 1, 2)]
    batch = FusionCollator(pad_id=0)(examples)
    lengths = [len(e["input_ids"]) for e in examples]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    n = sum(len(e["positions"]) for e in examples)
    assert int((batch["labels"][:, 1:] != -100).sum()) == n == batch["target_ids"].shape[0]
    # the first supervised label of row 1 is its token after its first supervised position
    e = examples[1]
    t = int(e["positions"][0])
    assert batch["labels"][1, t + 1] == e["input_ids"][t + 1]
    offset = len(examples[0]["positions"])
    assert np.array_equal(batch["target_ids"][offset].numpy(), e["topk_ids"][0])


def test_truncation_drops_positions_beyond_max_length(tiny):
    ds = TargetsDataset(TopKStore(tiny["targets"]), max_length=20)
    e = ds[0]
    assert len(e["input_ids"]) == 20
    assert (e["positions"] < 19).all() and len(e["topk_ids"]) == len(e["positions"])


def test_pack_rows_first_fit():
    rows = pack_rows([5, 3, 4, 2, 6], max_length=8)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3, 4]
    assert all(sum([5, 3, 4, 2, 6][i] for i in r) <= 8 for r in rows)
    assert len(rows) == 3


def test_head_matches_the_models_logits(pivot_model, dataset):
    batch = FusionCollator()([dataset[0]])
    assert check_head(pivot_model, batch) < 1e-4
    h = head_of(pivot_model)
    assert h.weight is pivot_model.get_input_embeddings().weight  # tied embeddings: one tensor


def test_softcapped_head_is_read_from_the_config_and_checked(tiny, dataset, monkeypatch):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=tiny["vocab"],
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=0.5,  # tiny cap: a wrong head description shows at once
    )
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config).eval()
    batch = FusionCollator()([dataset[0]])
    assert head_of(model).softcap == 0.5
    check_head(model, batch)
    monkeypatch.setattr(head_module, "LOGIT_QUIRKS", {})
    with pytest.raises(FusechatError, match="output head could not be reproduced"):
        check_head(model, batch)


def test_trainer_loss_equals_dense_loss_on_full_logits(pivot_model, dataset):
    model = pivot_model
    batch = FusionCollator(pad_id=0)([dataset[i] for i in (0, 3, 4)])
    model.zero_grad()
    batch_loss(model, batch).loss.backward()
    chunked = [p.grad.clone() for p in model.parameters()]
    # the reference: full logits over (B, L, V) from the model itself, dense (B, L, V) targets
    model.zero_grad()
    sup = batch["labels"][:, 1:] != -100
    k = batch["target_ids"].shape[1]
    ids = torch.full((*sup.shape, k), -1, dtype=torch.long)
    lps = torch.full((*sup.shape, k), float("-inf"))
    ids[sup], lps[sup] = batch["target_ids"], batch["target_logprobs"]
    hidden = final_hidden(model, batch)[:, :-1]
    ref = dense_fusion_loss(hidden, head_of(model), batch["labels"][:, 1:], ids, lps, lam=0.7)
    ref.backward()
    with torch.no_grad():
        ours = batch_loss(model, batch).loss
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    for a, p in zip(chunked, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)
    model.zero_grad()


def test_packing_gives_the_same_loss_as_padding(pivot_model, dataset):
    examples = [dataset[i] for i in (0, 1, 2, 5)]
    with torch.no_grad():
        padded = batch_loss(pivot_model, FusionCollator(pad_id=0)(examples))
        packed_batch = FusionCollator(pad_id=0, pack=True, max_length=512)(examples)
        packed = batch_loss(pivot_model, packed_batch)
    assert packed_batch["input_ids"].shape[0] < len(examples)
    assert packed.positions == padded.positions
    torch.testing.assert_close(packed.loss, padded.loss, rtol=1e-5, atol=1e-6)
