"""Normalising OpenAI, TRL prompt/completion, ShareGPT and Alpaca records, and one clear error per bad record."""

from __future__ import annotations

import pytest

from fusechat.data.formats import BadRecord, detect_format, normalise
from fusechat.data.readers import RawRecord
from fusechat.errors import InvalidRecordError


def raw(data, record=7, line=9, error=None):
    return RawRecord("chats.jsonl", record, line, data, error)


def test_openai_with_content_parts_and_system():
    conv = normalise(
        raw(
            {
                "id": 42,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}],
                    },
                    {"role": "assistant", "content": "Hello."},
                ],
            }
        ),
        None,
    )
    assert conv.own_id == "42"
    assert conv.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi\nthere"},
        {"role": "assistant", "content": "Hello."},
    ]


def test_trl_conversational_prompt_completion():
    """TRL's conversational prompt-completion: the prompt's messages (a system one too), then the completion's."""
    data = {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        "completion": [{"role": "assistant", "content": "4"}],
    }
    conv = normalise(raw(data), None)
    assert conv.messages == [*data["prompt"], *data["completion"]]
    multi = {"prompt": [U, A, U], "completion": [A]}
    assert [m["role"] for m in normalise(raw(multi), "prompt_completion").messages] == ["user", "assistant"] * 2


def test_trl_standard_prompt_completion():
    conv = normalise(raw({"prompt": "The sky is", "completion": " blue."}), None)
    assert conv.messages == [{"role": "user", "content": "The sky is"}, {"role": "assistant", "content": " blue."}]


def test_trl_messages_is_the_openai_format():
    data = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    assert normalise(raw(data), None).messages == data["messages"]


@pytest.mark.parametrize("assistant", ["gpt", "GPT", "chatgpt", "bing", "bard", "assistant", "model"])
@pytest.mark.parametrize("user", ["human", "user", "Human"])
def test_sharegpt_role_aliases(user, assistant):
    data = {"conversations": [{"from": user, "value": "q"}, {"from": assistant, "value": "a"}]}
    conv = normalise(raw(data), "sharegpt")
    assert [m["role"] for m in conv.messages] == ["user", "assistant"]
    assert conv.own_id is None and len(conv.content_id()) == 16


def test_alpaca_instruction_input_system_history():
    data = {
        "instruction": "Summarise.",
        "input": "A long text.",
        "output": "Short.",
        "system": "You summarise.",
        "history": [["Hi", "Hello!"]],
    }
    conv = normalise(raw(data), None)
    assert conv.messages == [
        {"role": "system", "content": "You summarise."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Summarise.\n\nA long text."},
        {"role": "assistant", "content": "Short."},
    ]


def test_trailing_user_turn_is_trimmed():
    data = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    data["messages"].append({"role": "user", "content": "and?"})
    conv = normalise(raw(data), "openai")
    assert conv.trimmed_trailing_user and [m["content"] for m in conv.messages] == ["q", "a"]


def test_leading_assistant_turn_is_trimmed():
    data = {"conversations": [{"from": "system", "value": "s"}, {"from": "gpt", "value": "Sure, here it is."}]}
    data["conversations"] += [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    conv = normalise(raw(data), None)
    assert conv.trimmed_leading_assistant and [m["content"] for m in conv.messages] == ["s", "q", "a"]


def test_content_id_is_stable_and_content_based():
    a = normalise(raw({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}), None)
    b = normalise(raw({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}), None)
    # Golden: sha256 of the compact JSON of the normalised messages, so ids survive across runs and versions.
    assert a.content_id() == b.content_id() == "42be829f502e46bd"
    c = normalise(raw({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}), None)
    assert c.content_id() != a.content_id()


U = {"role": "user", "content": "q"}
A = {"role": "assistant", "content": "a"}
S = {"role": "system", "content": "s"}


@pytest.mark.parametrize(
    "data, reason, words",
    [
        (None, "invalid_json", "line 9 is not valid JSON"),
        ({"messages": [U]}, "no_assistant_turn", "has no assistant turn"),
        (
            {"messages": [U, {"role": "tool", "content": "x"}, A]},
            "unknown_role",
            "message 1 has unknown role 'tool'",
        ),
        ({"messages": [U, {"role": "assistant", "content": "  \n"}]}, "empty_message", "message 1 is empty"),
        ({"messages": [U, {"role": "assistant"}]}, "empty_message", "message 1 has no content"),
        ({"messages": [U, {"role": "assistant", "content": 5}]}, "non_string_content", "of type int"),
        (
            {"messages": [U, {"role": "assistant", "content": [{"type": "image_url", "image_url": {}}]}]},
            "non_string_content",
            "part 0 of type 'image_url'",
        ),
        ({"messages": [U, U, A]}, "not_alternating", "message 1 is user where assistant is due"),
        ({"messages": [A]}, "not_alternating", "message 0 is assistant where user is due"),
        ({"messages": [A, A, U, A]}, "not_alternating", "message 1 is assistant where user is due"),
        ({"messages": [S, A, U, U, A]}, "not_alternating", "message 3 is user where assistant is due"),
        ({"messages": [U, A, A]}, "not_alternating", "message 2 is assistant where user is due"),
        ({"messages": [S, U, A, S, U, A]}, "not_alternating", "message 3 is a system message"),
        ({"messages": "hello"}, "not_a_conversation", "has no 'messages' list"),
        (
            {"text": "x", "label": "y"},
            "not_a_conversation",
            "no known chat format (keys: 'label', 'text'); expected 'messages' (OpenAI/TRL), 'prompt' and "
            "'completion' (TRL)",
        ),
        ({"prompt": "x", "chosen": "y", "rejected": "z"}, "not_a_conversation", "is a preference pair"),
        ({"prompt": [U], "completion": "y"}, "not_a_conversation", "as a list and a str; expected two message"),
        ({"prompt": [U], "completion": [A, U]}, "not_alternating", "the completion ends with a user message"),
        ({"prompt": [U], "completion": [U, A]}, "not_alternating", "message 1 is user where assistant is due"),
        ([1, 2], "not_a_conversation", "is a JSON list, not an object"),
        ({"instruction": "x", "output": 3}, "non_string_content", "'output' has content of type int"),
        ({"instruction": " ", "input": "", "output": "y"}, "empty_message", "'instruction' is empty"),
    ],
)
def test_bad_records_raise_one_clear_error(data, reason, words):
    error = "line 9 is not valid JSON (Expecting value at column 3)" if reason == "invalid_json" else None
    with pytest.raises(BadRecord) as info:
        normalise(raw(data, error=error), None)
    e = info.value
    assert isinstance(e, InvalidRecordError)
    assert e.reason == reason
    message = str(e)
    assert message.startswith("chats.jsonl: record 7: ") and words in message
    assert "\n" not in message
    if reason != "invalid_json":
        assert "(line 9)" in message
    assert "--skip-invalid" in message or "--format" in message


def test_detect_format():
    assert detect_format({"messages": []}) == "openai"
    assert detect_format({"conversations": []}) == "sharegpt"
    assert detect_format({"instruction": "", "output": ""}) == "alpaca"
    assert detect_format({"prompt": [], "completion": []}) == "prompt_completion"
    assert detect_format({"instruction": ""}) is None
    assert detect_format([]) is None


def test_file_format_is_kept_for_later_records():
    """A file read as openai: a ShareGPT record in it is reported, not silently accepted."""
    with pytest.raises(BadRecord, match="has no 'messages' list .* read as openai"):
        normalise(raw({"conversations": [U, A]}), "openai")
