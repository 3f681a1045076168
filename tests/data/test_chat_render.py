"""Rendering with the pivot's template and locating the supervised spans, against hand-written renderings."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusechat.data.render import ChatRenderer, TemplateRefused, read_template
from fusechat.errors import FusechatError
from fusechat.models.load import load_tokenizer
from tests.data.chatdata import CHATS


def chatml_by_hand(chat):
    """The ChatML rendering and spans, written out by hand: the oracle for the bpe pivot."""
    text, spans = "", []
    for m in chat:
        head = f"<|im_start|>{m['role']}\n"
        if m["role"] == "assistant":
            spans.append((len(text) + len(head), len(text) + len(head) + len(m["content"]) + len("<|im_end|>")))
        text += head + m["content"] + "<|im_end|>\n"
    return text, spans


def turns_by_hand(chat):
    """The Gemma-like rendering (system folded into the first user turn, content trimmed) and its spans."""
    text, spans, system = "<bos>", [], ""
    for m in chat:
        if m["role"] == "system":
            system = m["content"].strip() + "\n\n"
            continue
        role = "model" if m["role"] == "assistant" else "user"
        head = f"<start_of_turn>{role}\n"
        body = m["content"].strip()
        if role == "user" and system:
            body, system = system + body, ""
        if role == "model":
            spans.append((len(text) + len(head), len(text) + len(head) + len(body) + len("<end_of_turn>")))
        text += head + body + "<end_of_turn>\n"
    return text, spans


@pytest.mark.parametrize("chat", CHATS)
def test_spans_match_the_hand_written_rendering(bpe_pivot, sp_pivot, chat):
    for pivot, oracle in ((bpe_pivot, chatml_by_hand), (sp_pivot, turns_by_hand)):
        rendered = ChatRenderer(load_tokenizer(pivot)).render(chat)
        text, spans = oracle(chat)
        assert rendered.text == text
        assert rendered.spans == spans
        assert rendered.cuts[-1] == len(text)


def test_trimmed_content_is_found(sp_pivot):
    chat = [{"role": "user", "content": "  hi  "}, {"role": "assistant", "content": "\n  Hello there.  \n"}]
    rendered = ChatRenderer(load_tokenizer(sp_pivot)).render(chat)
    s, e = rendered.spans[0]
    assert rendered.text[s:e] == "Hello there.<end_of_turn>"


def test_truncated_is_a_prefix_render(bpe_pivot):
    renderer = ChatRenderer(load_tokenizer(bpe_pivot))
    full = renderer.render(CHATS[0])
    cut = full.truncated(1)
    assert cut.text == renderer.render(CHATS[0][:3]).text
    assert cut.spans == full.spans[:1]


def test_no_template_is_a_clear_error(bpe_pivot, tmp_path):
    tok = load_tokenizer(bpe_pivot)
    tok.chat_template = None
    with pytest.raises(FusechatError, match="has no chat template; give one with --chat-template FILE"):
        ChatRenderer(tok)


def test_given_template_replaces_the_pivots(bpe_pivot, tmp_path):
    path = tmp_path / "plain.jinja"
    path.write_text(
        "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
    )
    renderer = ChatRenderer(load_tokenizer(bpe_pivot), read_template(path), str(path))
    r = renderer.render(CHATS[1])
    assert r.text == "USER: Write a poem about the sea.\nASSISTANT: Waves,\nsalt\n\nand wind.\n"
    # No closing text in this template: the span is the content alone, without the newline after it.
    assert [r.text[s:e] for s, e in r.spans] == ["Waves,\nsalt\n\nand wind."]


def test_template_without_generation_prompt_keeps_header_out(bpe_pivot):
    template = "{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}</s>\n{% endfor %}"
    r = ChatRenderer(load_tokenizer(bpe_pivot), template, "t").render(CHATS[1])
    assert [r.text[s:e] for s, e in r.spans] == ["Waves,\nsalt\n\nand wind.</s>"]


@pytest.mark.parametrize(
    "template, words",
    [
        (
            "{% for m in messages %}{{ m['content'] | upper }}|{% endfor %}",
            "does not appear in its rendering",
        ),
        (
            "{% for m in messages %}{% if loop.last %}{{ m['content'] }}{% else %}x{% endif %}|{% endfor %}",
            "differently once later turns follow",
        ),
        ("{% for m in messages %}{{ m['content'] }", "Jinja syntax error"),
    ],
)
def test_unusable_templates_fail_before_any_data(bpe_pivot, template, words):
    with pytest.raises(FusechatError, match=words):
        ChatRenderer(load_tokenizer(bpe_pivot), template, "bad.jinja")


def test_template_refusing_a_conversation(bpe_pivot):
    template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('no system role') }}{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    renderer = ChatRenderer(load_tokenizer(bpe_pivot), template, "nosys.jinja")
    with pytest.raises(TemplateRefused, match="no system role"):
        renderer.render(CHATS[0])
    assert renderer.render(CHATS[1]).spans


def test_read_template_errors(tmp_path):
    with pytest.raises(FusechatError, match="missing.jinja: cannot read the chat template"):
        read_template(tmp_path / "missing.jinja")
    (tmp_path / "empty.jinja").write_text(" \n")
    with pytest.raises(FusechatError, match="empty.jinja: the chat template file is empty"):
        read_template(tmp_path / "empty.jinja")


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(str.strip)
_chats = st.builds(
    lambda system, turns: (
        ([{"role": "system", "content": system}] if system else [])
        + [m for u, a in turns for m in ({"role": "user", "content": u}, {"role": "assistant", "content": a})]
    ),
    st.none() | _text,
    st.lists(
        st.tuples(_text, _text | st.sampled_from(["<|im_end|>", "<end_of_turn>", "model", "ok"])),
        min_size=1,
        max_size=4,
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chat=_chats)
def test_spans_match_by_hand_for_any_text(bpe_pivot, sp_pivot, chat):
    """Any content (whitespace at the edges, markers and repeats inside, any script): the spans found from the
    template's behaviour equal the hand-written ones, for a template that keeps content and one that trims."""
    for pivot, oracle in ((bpe_pivot, chatml_by_hand), (sp_pivot, turns_by_hand)):
        rendered = _renderer(pivot).render(chat)
        assert (rendered.text, rendered.spans) == oracle(chat)


_RENDERERS: dict = {}


def _renderer(pivot):
    if pivot not in _RENDERERS:
        _RENDERERS[pivot] = ChatRenderer(load_tokenizer(pivot))
    return _RENDERERS[pivot]
