"""The streaming JSON reader against `json.loads`, and its handling of cut-off and broken files."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusechat.data.jsonstream import JsonRecords
from fusechat.errors import FusechatError, InvalidRecordError

RECORDS = [
    {
        "id": "a",
        "conversations": [{"from": "human", "value": "hi [there], {x}"}, {"from": "gpt", "value": "yo"}],
    },
    {"id": "b", "n": 12345, "ok": True, "none": None, "f": -1.5e3, "s": 'quote " and \\ and \u00e9\n'},
    {"id": "c", "messages": [{"role": "user", "content": "日本語"}], "nested": {"deep": [1, [2, [3]]]}},
]


def read(path, chunk=1 << 20):
    reader = JsonRecords(path, chunk_chars=chunk)
    return [obj for _, _, obj in reader], reader


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(st.dictionaries(st.text(max_size=6), json_values, max_size=4), max_size=6),
    chunk=st.integers(1, 64),
    indent=st.sampled_from([None, 0, 2]),
    wrap=st.booleans(),
)
def test_stream_equals_json_loads(tmp_path_factory, records, chunk, indent, wrap):
    """Any list of objects, any window size, pretty or compact, bare or wrapped: the same records as json."""
    path = tmp_path_factory.mktemp("j") / "x.json"
    doc = {"meta": {"v": [1, 2]}, "rows": records, "after": "x"} if wrap and records else records
    path.write_text(json.dumps(doc, indent=indent, ensure_ascii=False), encoding="utf-8")
    got, reader = read(path, chunk)
    parsed = json.loads(path.read_text(encoding="utf-8"))
    assert got == (parsed["rows"] if wrap and records else parsed)
    assert reader.cut is None


def test_line_numbers_and_wrapper_key(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"version": "1", "data": RECORDS}, indent=2))
    reader = JsonRecords(path, chunk_chars=16)
    lines = [line for _, line, _ in reader]
    text_lines = path.read_text().splitlines()
    assert reader.key == "data"
    assert [text_lines[n - 1].strip() for n in lines] == ["{"] * 3
    assert lines == sorted(lines) and len(set(lines)) == 3


def test_cut_anywhere_keeps_exactly_the_complete_records(tmp_path):
    """Cut the document at every character: the records that end before the cut are kept, and only those."""
    text = json.dumps(RECORDS, indent=2, ensure_ascii=False)
    ends = []  # character offset just after each record's closing brace
    decoder, pos = json.JSONDecoder(), text.index("{")
    for _ in RECORDS:
        _, pos = decoder.raw_decode(text, pos)
        ends.append(pos)
        pos = text.find("{", pos)
    path = tmp_path / "cut.json"
    for cut in range(ends[0], len(text) - 1):  # the full text minus its closing bracket is still cut
        path.write_text(text[:cut], encoding="utf-8")
        got, reader = read(path, chunk=5)
        assert got == RECORDS[: sum(e <= cut for e in ends)], cut
        assert reader.cut is not None and reader.cut.complete_records == len(got)


def test_cut_before_the_first_record_is_an_error(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('[\n  {"id": "a", "conv')
    with pytest.raises(FusechatError, match=r"cut.json: ends .* at line 2 before its first complete record"):
        read(path)


@pytest.mark.parametrize(
    "text, line, record",
    [
        ('[\n{"a": 1},\n{"a": 2}\n{"a": 3}\n]', 4, 2),  # missing comma: found at the next record
        ('[\n{"a": 1},\n{"a": tru},\n{"a": 3}\n]', 3, 1),  # a bad literal in the middle
        ('[\n{"a": 1},\n{"a": "x\nbroken"}]', 3, 1),  # a raw newline inside a string
        ('[\n{"a": 1}\n] trailing', 3, None),
        ('"just a string"', 1, None),
    ],
)
def test_syntax_error_names_file_line_and_record(tmp_path, text, line, record):
    path = tmp_path / "bad.json"
    path.write_text(text)
    where = rf"bad.json: record {record}: " if record is not None else r"bad.json: "
    with pytest.raises(FusechatError, match=rf"{where}not valid JSON at line {line} column \d+") as info:
        read(path, chunk=4)
    assert isinstance(info.value, InvalidRecordError) == (record is not None)


def test_one_conversation_object_and_two_lists_are_refused(tmp_path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}))
    with pytest.raises(FusechatError, match="holds one conversation"):
        read(one)
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"train": [{"a": 1}], "test": [{"a": 2}]}))
    with pytest.raises(FusechatError, match="two lists of records"):
        read(two)
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    with pytest.raises(FusechatError, match="empty file"):
        read(empty)
