"""The real SmolLM2-135M-Instruct: bits per byte and a few GSM-Symbolic problems give plausible values."""

from __future__ import annotations

import json

import pytest

from fusechat.evaluate import evaluate
from tests.tiny_models import write_conversations

pytestmark = pytest.mark.real

CHATS = [
    [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
    ],
    [
        {"role": "user", "content": "Write a haiku about autumn."},
        {
            "role": "assistant",
            "content": "Crisp leaves drift and fall,\ngolden light on quiet paths,\nthe year breathes slowly.",
        },
    ],
    [
        {"role": "user", "content": "How do I reverse a list in Python?"},
        {"role": "assistant", "content": "Use `my_list.reverse()` to reverse in place, or `my_list[::-1]` for a copy."},
    ],
]


def test_smollm2_bpb_and_gsm(tmp_path):
    from fusechat.models.load import load_tokenizer, resolve_model_dir

    try:
        model_dir = resolve_model_dir("smollm2-135m-instruct")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"SmolLM2 is not installed: {e}")
    conv = write_conversations(tmp_path / "conv", CHATS, load_tokenizer(model_dir))
    scores = evaluate(
        {"smollm2": model_dir},
        "bpb,gsm",
        tmp_path / "out",
        conversations=conv,
        limits={"gsm": 4},
        max_new_tokens=200,
        cache_dir=tmp_path / "cache",
        progress=False,
    )["smollm2"]
    # A 135M chat model on plain English answers: well under the 8 bits of a byte, well above 0.3.
    assert 0.3 < scores["bpb"]["value"] < 2.5, scores["bpb"]
    assert scores["gsm"]["n"] == 4 and 0.0 <= scores["gsm"]["value"] <= 1.0
    items = (tmp_path / "out" / "smollm2" / "gsm.jsonl").read_text().splitlines()
    # The model follows the instruction well enough that a number is read from most answers.
    predicted = [json.loads(line)["predicted"] for line in items]
    assert sum(p is not None for p in predicted) >= 3, items
