"""The prepare stage end to end in Python: every file kind and format, supervision, length, ids, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusechat.data.conversations import Conversations, supervised_mask
from fusechat.data.prepare import counting_tokenizer, prefix_tokens, prepare
from fusechat.data.render import ChatRenderer
from fusechat.errors import FusechatError, InvalidRecordError
from fusechat.models.load import load_tokenizer
from tests.data.chatdata import CHATS, SUFFIX, as_format, write_records

FORMATS = ("openai", "sharegpt", "alpaca")
CONTAINERS = ("jsonl", "json", "json-object", "parquet")


def write(tmp_path, fmt, container="jsonl", chats=CHATS, name="chats"):
    records = [as_format(chat, fmt, f"c{i}") for i, chat in enumerate(chats)]
    return write_records(tmp_path / f"{name}{SUFFIX[container]}", records, container)


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_file_kind_and_format(tmp_path, pivot, fmt, container):
    out = prepare([write(tmp_path, fmt, container)], str(pivot), tmp_path / "out")
    conv = Conversations(out)
    renderer = ChatRenderer(load_tokenizer(pivot))
    expected = [renderer.render(chat) for chat in CHATS]
    assert conv.ids == ["c0", "c1", "c2"]
    assert conv.texts == [r.text for r in expected]
    assert [s.tolist() for s in conv.spans] == [[list(x) for x in r.spans] for r in expected]
    assert [conv.messages(i) for i in range(len(conv))] == CHATS  # system prompt and all turns kept
    assert conv.manifest["inputs"][0]["format"] == fmt
    assert conv.manifest["counts"]["kept"] == 3


@pytest.mark.parametrize("fmt", FORMATS)
def test_supervised_tokens_are_exactly_the_assistant_tokens(tmp_path, pivot, fmt):
    """Tokenized with the pivot's offsets, the supervised tokens cover exactly the assistant content and the
    turn-closing marker of every assistant turn, and nothing of the system or user turns."""
    conv = Conversations(prepare([write(tmp_path, fmt)], str(pivot), tmp_path / "out"))
    tok = load_tokenizer(pivot)
    closer = "<|im_end|>" if "<|im_end|>" in conv.texts[0] else "<end_of_turn>"
    for i, text in enumerate(conv.texts):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = np.array(enc["offset_mapping"])
        mask = supervised_mask(offsets, conv.spans[i])
        covered = np.zeros(len(text), dtype=bool)
        for (s, e), m in zip(offsets, mask, strict=True):
            covered[s:e] |= m
        runs = _runs(covered)
        wanted = [m["content"].strip() + closer for m in CHATS[i] if m["role"] == "assistant"]
        assert [text[s:e] for s, e in runs] == wanted
        assert tok.decode([t for t, m in zip(enc["input_ids"], mask, strict=True) if m]).replace(" ", "") == (
            "".join(wanted).replace(" ", "")
        )


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def test_long_conversations_are_truncated_on_a_turn_boundary(tmp_path, bpe_pivot):
    tok = load_tokenizer(bpe_pivot)
    renderer = ChatRenderer(tok)
    first_turn = renderer.render(CHATS[0][:3]).text
    full = renderer.render(CHATS[0]).text
    n_first, n_full = (len(tok(t, add_special_tokens=False)["input_ids"]) for t in (first_turn, full))
    shortest = min(len(tok(renderer.render(c).text, add_special_tokens=False)["input_ids"]) for c in CHATS[1:])
    assert n_first < n_full and shortest <= n_first
    data = write(tmp_path, "openai")

    conv = Conversations(prepare([data], str(bpe_pivot), tmp_path / "t", max_length=n_full - 1))
    assert conv.texts[0] == first_turn
    assert conv.messages(0) == CHATS[0][:3] and len(conv.spans[0]) == 1
    assert conv.manifest["counts"]["truncated"] == 1 and conv.manifest["counts"]["kept"] == 3

    conv = Conversations(prepare([data], str(bpe_pivot), tmp_path / "d", max_length=n_full - 1, on_long="drop"))
    assert conv.ids == ["c1", "c2"]
    assert conv.manifest["counts"]["dropped_too_long"] == 1 and conv.manifest["counts"]["truncated"] == 0

    # Not even the first turn fits: dropped under either rule.
    conv = Conversations(prepare([data], str(bpe_pivot), tmp_path / "x", max_length=n_first - 1))
    assert "c0" not in conv.ids and conv.manifest["counts"]["dropped_too_long"] >= 1
    for i in range(len(conv)):
        assert len(tok(conv.texts[i], add_special_tokens=False)["input_ids"]) <= n_first - 1


def bad_file(tmp_path):
    good = as_format(CHATS[1], "openai", "g")
    lines = [
        json.dumps(good),
        '{"messages": [',  # not JSON (and not the last line, so not a cut)
        json.dumps({"messages": [{"role": "user", "content": "q"}]}),
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]}),
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}),
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}]}),
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": {"x": 1}}]}),
        json.dumps(as_format(CHATS[2], "openai", "h")),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_record_stops_with_file_and_record(tmp_path, bpe_pivot):
    with pytest.raises(InvalidRecordError, match=r"mixed.jsonl: record 1: line 2 is not valid JSON .*--skip-invalid"):
        prepare([bad_file(tmp_path)], str(bpe_pivot), tmp_path / "out")
    assert not (tmp_path / "out" / "conversations.parquet").exists()


def test_skip_invalid_counts_per_reason(tmp_path, bpe_pivot):
    conv = Conversations(prepare([bad_file(tmp_path)], str(bpe_pivot), tmp_path / "out", skip_invalid=True))
    assert conv.ids == ["g", "h"]
    skipped = conv.manifest["counts"]["skipped_invalid"]
    assert skipped == {
        "empty_message": 1,
        "invalid_json": 1,
        "no_assistant_turn": 2,  # user/user has no assistant turn either: that reason is checked first
        "non_string_content": 1,
        "unknown_role": 1,
    }
    assert conv.manifest["counts"]["read"] == 8


def test_not_alternating_is_counted(tmp_path, bpe_pivot):
    records = [as_format(CHATS[1], "openai", "a")]
    u, a = {"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}
    records.append({"messages": [u, u, a]})
    path = write_records(tmp_path / "x.json", records, "json")
    with pytest.raises(InvalidRecordError, match=r"x.json: record 1: message 1 is user where assistant is due"):
        prepare([path], str(bpe_pivot), tmp_path / "o1")
    conv = Conversations(prepare([path], str(bpe_pivot), tmp_path / "o2", skip_invalid=True))
    assert conv.manifest["counts"]["skipped_invalid"] == {"not_alternating": 1}


def test_ids_own_hashed_and_deduplicated(tmp_path, bpe_pivot):
    a = as_format(CHATS[1], "sharegpt", "same")
    b = as_format(CHATS[2], "sharegpt", "same")
    c = {"conversations": a["conversations"]}  # no id: a content hash
    path = write_records(tmp_path / "ids.json", [a, b, c, c], "json")
    conv = Conversations(prepare([path], str(bpe_pivot), tmp_path / "out"))
    assert conv.ids[:2] == ["same", "same#2"]
    assert len(conv.ids[2]) == 16 and conv.ids[3] == conv.ids[2] + "#2"
    assert conv.manifest["counts"]["ids_renamed"] == 2
    again = Conversations(prepare([path], str(bpe_pivot), tmp_path / "again"))
    assert again.ids == conv.ids and again.fingerprint == conv.fingerprint


def test_several_inputs_limit_and_manifest(tmp_path, bpe_pivot, sp_pivot):
    first = write(tmp_path, "openai", "jsonl", name="a")
    second = write(tmp_path, "alpaca", "parquet", name="b")
    out = prepare([first, second], str(bpe_pivot), tmp_path / "out", limit=4)
    conv = Conversations(out)
    assert conv.ids == ["c0", "c1", "c2", "c0#2"]
    m = conv.manifest
    assert list(m)[-1] == "complete" and m["complete"] is True
    assert (m["stage"], m["format"], m["format_version"]) == ("prepare", "fusechat.conversations", 1)
    assert m["pivot"] == str(bpe_pivot) and len(m["tokenizer_fingerprint"]) == 16
    assert [i["format"] for i in m["inputs"]] == ["openai", "alpaca"]
    assert all(len(i["sha256"]) == 64 for i in m["inputs"])
    assert m["counts"]["read"] == 4 and m["max_length"] == 2048
    sp = Conversations(prepare([first, second], str(sp_pivot), tmp_path / "sp", limit=4))
    assert sp.fingerprint != conv.fingerprint and sp.manifest["tokenizer_fingerprint"] != m["tokenizer_fingerprint"]


def test_rerun_is_skipped_and_new_settings_are_refused_unless_overwrite(tmp_path, bpe_pivot):
    data = write(tmp_path, "openai")
    out = prepare([data], str(bpe_pivot), tmp_path / "out")
    stamp = (out / "conversations.parquet").stat().st_mtime_ns
    prepare([data], str(bpe_pivot), out)
    assert (out / "conversations.parquet").stat().st_mtime_ns == stamp
    with pytest.raises(FusechatError, match="other inputs or settings.*--overwrite"):
        prepare([data], str(bpe_pivot), out, limit=1)
    assert (out / "conversations.parquet").stat().st_mtime_ns == stamp
    prepare([data], str(bpe_pivot), out, limit=1, overwrite=True)
    assert len(Conversations(out)) == 1


def test_cut_json_list_is_recovered_and_reported(tmp_path, bpe_pivot):
    full = json.dumps([as_format(c, "sharegpt", f"c{i}") for i, c in enumerate(CHATS)], indent=2)
    path = tmp_path / "cut.json"
    path.write_text(full[: full.index('"c2"') + 10])  # stops inside the third record
    conv = Conversations(prepare([path], str(bpe_pivot), tmp_path / "out"))
    assert conv.ids == ["c0", "c1"]
    assert conv.manifest["inputs"][0]["cut_off"]["line"] > 1
    assert conv.manifest["inputs"][0]["records"] == 2


def test_output_dir_not_ours_is_refused(tmp_path, bpe_pivot):
    data = write(tmp_path, "openai")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FusechatError, match="not a fusechat 'prepare' output"):
        prepare([data], str(bpe_pivot), other)
    teach = tmp_path / "teach"
    teach.mkdir()
    (teach / "manifest.json").write_text(json.dumps({"stage": "teach", "complete": True}))
    with pytest.raises(FusechatError, match="holds a 'teach' output"):
        prepare([data], str(bpe_pivot), teach)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"max_length": 0}, "--max-length must be at least 1"),
        ({"on_long": "cut"}, "--on-long must be one of truncate, drop"),
        ({"fmt": "chatml"}, "--format must be auto or one of"),
        ({"limit": 0}, "--limit must be at least 1"),
    ],
)
def test_bad_settings(tmp_path, bpe_pivot, kwargs, words):
    with pytest.raises(FusechatError, match=words):
        prepare([write(tmp_path, "openai")], str(bpe_pivot), tmp_path / "out", **kwargs)


def test_missing_input_and_unknown_name(tmp_path, bpe_pivot):
    with pytest.raises(FusechatError, match="nothere.jsonl: no such file or directory, and not a named data set"):
        prepare([tmp_path / "nothere.jsonl"], str(bpe_pivot), tmp_path / "out")


def test_pivot_without_template_fails_before_reading(tmp_path, bpe_pivot):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(bpe_pivot, bare)
    for f in bare.glob("chat_template*"):
        f.unlink()
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(FusechatError, match="has no chat template; give one with --chat-template FILE"):
        prepare([write(tmp_path, "openai")], str(bare), tmp_path / "out")
    template = tmp_path / "t.jinja"
    template.write_text((bpe_pivot / "chat_template.jinja").read_text())
    out = prepare([write(tmp_path, "openai")], str(bare), tmp_path / "out2", chat_template=template)
    assert Conversations(out).manifest["chat_template"]["origin"] == str(template)


def test_counting_tokenizer_counts_like_the_pivot(pivot):
    """The fast token count used for max_length equals the pivot tokenizer's own call."""
    tok = load_tokenizer(pivot)
    renderer = ChatRenderer(tok)
    texts = [renderer.render(c).text for c in CHATS] + ["", " ", "  two  spaces\n\n\n", "日本語 naïve"]
    fast = counting_tokenizer(tok).encode_batch(texts, add_special_tokens=False)
    assert [e.ids for e in fast] == tok(texts, add_special_tokens=False)["input_ids"]


def test_prefix_token_count_equals_encoding_the_prefix(pivot, tmp_path):
    """The count read off the whole encoding equals encoding the prefix alone, at every turn cut, for the
    pivot's template and for a template with no added tokens at the cuts (the slow path)."""
    tok = load_tokenizer(pivot)
    fast = counting_tokenizer(tok)
    added = frozenset(fast.get_added_tokens_decoder())
    plain = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    for renderer in (ChatRenderer(tok), ChatRenderer(tok, plain, "plain")):
        for chat in CHATS:
            r = renderer.render(chat)
            enc = fast.encode(r.text, add_special_tokens=False)
            starts = [s for s, _ in enc.offsets]
            for end in [*r.cuts, *range(0, len(r.text), 7)]:
                want = len(tok(r.text[:end], add_special_tokens=False)["input_ids"])
                assert prefix_tokens(fast, r.text, end, starts, enc.ids, added) == want


def test_cut_jsonl_last_line_is_recovered(tmp_path, bpe_pivot):
    lines = [json.dumps(as_format(c, "openai", f"c{i}")) for i, c in enumerate(CHATS)]
    path = tmp_path / "cut.jsonl"
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])  # the last line stops mid-record
    conv = Conversations(prepare([path], str(bpe_pivot), tmp_path / "out"))
    assert conv.ids == ["c0", "c1"]
    assert conv.manifest["inputs"][0]["cut_off"]["line"] == 3
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40] + "\n")  # a bad line that ends: not a cut
    with pytest.raises(InvalidRecordError, match="cut.jsonl: record 2: line 3 is not valid JSON"):
        prepare([path], str(bpe_pivot), tmp_path / "out2")


def test_generated_source(tmp_path, bpe_pivot):
    """A data set made in code plugs in beside files: its description reaches the manifest."""
    from fusechat.data.readers import GeneratedSource

    source = GeneratedSource(
        "arith",
        lambda: (as_format(c, "openai", f"g{i}") for i, c in enumerate(CHATS)),
        {"seed": 3, "size": 3},
    )
    conv = Conversations(prepare([source, write(tmp_path, "alpaca")], str(bpe_pivot), tmp_path / "out"))
    assert conv.ids == ["g0", "g1", "g2", "c0", "c1", "c2"]
    assert conv.manifest["inputs"][0] == {"name": "arith", "seed": 3, "size": 3, "format": "openai"}


def test_json_syntax_error_stops_even_with_skip_invalid(tmp_path, bpe_pivot):
    """In one JSON document the records after a fault cannot be found: the file stops, naming the record."""
    good = json.dumps(as_format(CHATS[1], "openai", "a"))
    path = tmp_path / "broken.json"
    path.write_text(f"[\n{good},\n{good[:-1]},\n{good}\n]\n")  # the second record misses its closing brace
    with pytest.raises(InvalidRecordError, match=r"broken.json: record 1: not valid JSON at line \d+"):
        prepare([path], str(bpe_pivot), tmp_path / "out", skip_invalid=True)


@pytest.mark.parametrize(
    "text, kind",
    [
        ('{"a": 1}\n{"a": 2}\n', "jsonl"),
        ('\n\n{"a": 1}\n\n{"a": 2}', "jsonl"),
        ('[{"a": 1},\n{"a": 2}]', "json"),
        ('{"data": [{"a": 1}]}', "json"),
        ('{"data": [{"a": 1}]}\n', "json"),
        ('{\n "data": [\n  {"a": 1}\n ]\n}\n', "json"),
        ("[1]\n[2]\n", "json"),
    ],
)
def test_json_or_json_lines_from_the_text(tmp_path, text, kind):
    from fusechat.data.readers import file_kind

    path = tmp_path / "x.json"
    path.write_text(text)
    assert file_kind(path) == kind


@pytest.mark.parametrize("on_long", ["truncate", "drop"])
@pytest.mark.parametrize("chars_per_token", [1, 4])
def test_length_rule_on_a_prefix_equals_the_whole_text_rule(tmp_path, bpe_pivot, monkeypatch, on_long, chars_per_token):
    """Texts over max_length x CHARS_PER_TOKEN characters are measured on a prefix (growing fourfold when it
    proves nothing, up to the whole text): with the bound made tiny, so that every path is taken, the stored
    conversations are exactly those of the whole-text rule (a bound no text reaches)."""
    import fusechat.data.prepare as stage

    word = "lorem ipsum dolor sit amet " * 4
    chats = [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": word * n}] * turns
        for n, turns in ((1, 1), (3, 2), (12, 3), (40, 2), (1, 5))
    ]
    chats.append([{"role": "user", "content": "a" * 3000}, {"role": "assistant", "content": "ok"}])  # few tokens
    data = write(tmp_path, "openai", chats=chats)
    kept = {}
    for bound in (10**9, chars_per_token):
        monkeypatch.setattr(stage, "CHARS_PER_TOKEN", bound)
        monkeypatch.setattr(stage, "MARGIN", 8)
        out = prepare([data], str(bpe_pivot), tmp_path / f"out-{bound}", max_length=300, on_long=on_long)
        conv = Conversations(out)
        kept[bound] = (conv.ids, conv.texts, [s.tolist() for s in conv.spans], conv.manifest["counts"])
    assert kept[chars_per_token] == kept[10**9]
    assert kept[10**9][3]["dropped_too_long"] + kept[10**9][3]["truncated"] >= 3  # the long ones were long
