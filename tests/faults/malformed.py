"""Malformed chat data, generated: every kind of bad record `fusechat prepare` can meet, in every file kind and
chat format it reads, each with the outcome it must have.

A `Case` is one record of an input file: good (with the normalised messages it must be stored as), too long
(dropped by the length rule), or bad (with the skip-count reason it must be rejected under). Some cases are raw
bytes rather than a JSON value (a broken line, bytes that are not UTF-8), and some cannot exist in a given file
kind (Parquet has no syntax to break and no mixed column types); `FAULTS` says which. oracle.py writes cases
into files and checks what prepare did with them.

Hypothesis strategies draw the texts, the fault kinds and their positions, so the tests (test_bad_input.py) and
the counting script (count_bad_input.py) share one generator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

CONTAINERS = ("jsonl", "json", "parquet")
FORMATS = ("openai", "sharegpt", "alpaca")
SUFFIX = {"jsonl": ".jsonl", "json": ".json", "parquet": ".parquet"}
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}
KEEP, LONG, FATAL = "keep", "too_long", "fatal"  # outcomes besides a skip reason; FATAL stops the file


@dataclass
class Case:
    """One record and its required outcome: KEEP (stored as `messages`), LONG, FATAL or a skip reason."""

    kind: str
    outcome: str
    record: Any = None  # a JSON value, unless `raw` is set
    raw: bytes | None = None  # the record's bytes as they appear in the file (JSONL and JSON only)
    messages: list[dict] | None = None
    truncated: bool = False

    def __repr__(self) -> str:  # short: a failing example may hold a 1 MB message
        shown = repr(self.raw if self.raw is not None else self.record)
        cut = f"...({len(shown)} chars)" if len(shown) > 300 else ""
        return f"Case({self.kind}, {self.outcome}, {shown[:300]}{cut})"


# Text: any printable or control character (NUL, escapes, BOMs, bidi marks, emoji), but no lone surrogates,
# with at least one non-space character.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=24).filter(
    lambda s: s.strip() and "REFUSE" not in s
)


@st.composite
def chats(draw: st.DrawFn, turns: int | None = None) -> list[dict]:
    """A valid normalised chat: optional system message, then 1-3 user/assistant pairs."""
    n = turns or draw(st.integers(1, 3))
    out = [{"role": "system", "content": draw(TEXT)}] if draw(st.booleans()) else []
    for _ in range(n):
        out += [{"role": "user", "content": draw(TEXT)}, {"role": "assistant", "content": draw(TEXT)}]
    return out


def as_record(chat: list[dict], fmt: str, cid: Any = None, roles: dict[str, str] | None = None) -> dict:
    """A normalised chat written in an input format (roles renamed by `roles` if given)."""
    if fmt == "alpaca":
        system = [m["content"] for m in chat if m["role"] == "system"]
        body = [m["content"] for m in chat if m["role"] != "system"]
        pairs = [[body[i], body[i + 1]] for i in range(0, len(body) - 2, 2)]
        rec: dict[str, Any] = {"instruction": body[-2], "input": "", "output": body[-1], "history": pairs}
        if system:
            rec["system"] = system[0]
    elif fmt == "openai":
        rec = {"messages": [{"role": (roles or {}).get(m["role"], m["role"]), "content": m["content"]} for m in chat]}
    else:
        names = roles or SHAREGPT_ROLES
        rec = {"conversations": [{"from": names.get(m["role"], m["role"]), "value": m["content"]} for m in chat]}
    if cid is not None:
        rec["id"] = cid
    return rec


def _turns(rec: dict) -> list:
    return rec["messages"] if "messages" in rec else rec["conversations"]


def _set(rec: dict, i: int, key: str, value: Any, missing: bool = False) -> dict:
    """Set (or remove) a key of message i, under the format's own key names."""
    m = _turns(rec)[i]
    name = {"role": "role" if "role" in m else "from", "content": "content" if "content" in m else "value"}[key]
    if missing:
        del m[name]
    else:
        m[name] = value
    return rec


JUNK = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.dictionaries(st.text(max_size=3), st.integers())
)
ODD_ROLE = st.one_of(
    st.sampled_from(["tool", "function", "observation", "", " ", "usr", "ASSISTANT2", "sys tem", "\x00"]), JUNK
)


def _deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


# Each fault: (formats it applies to, containers it can be written in, outcome, builder(draw, fmt) -> Case args).
Builder = Callable[[st.DrawFn, str], dict]
LISTS = ("openai", "sharegpt")
TEXTUAL = ("jsonl", "json")


def _good(draw: st.DrawFn, fmt: str) -> dict:
    chat = draw(chats())
    cid = draw(st.one_of(st.none(), st.text(max_size=6), st.integers(), JUNK))
    return {"record": as_record(chat, fmt, cid), "messages": chat}


def _role_case(draw: st.DrawFn, fmt: str) -> dict:
    """Role names in any letter case and with spaces around them are accepted, and mapped."""
    chat = draw(chats())
    table = SHAREGPT_ROLES if fmt == "sharegpt" else {r: r for r in SHAREGPT_ROLES}
    roles = {r: f" {draw(st.sampled_from([n, n.upper(), n.title()]))}\t" for r, n in table.items()}
    return {"record": as_record(chat, fmt, roles=roles), "messages": chat}


def _trailing_user(draw: st.DrawFn, fmt: str) -> dict:
    chat = draw(chats())
    extra = {"role": "user", "content": draw(TEXT)}
    return {"record": as_record(chat + [extra], fmt), "messages": chat}


def _leading_assistant(draw: st.DrawFn, fmt: str) -> dict:
    chat = draw(chats())
    lead = int(chat[0]["role"] == "system")
    full = chat[:lead] + [{"role": "assistant", "content": draw(TEXT)}] + chat[lead:]
    return {"record": as_record(full, fmt), "messages": chat}


def _long(draw: st.DrawFn, fmt: str) -> dict:
    """A 1 MB message: the whole chat is dropped, or (when it comes after a first exchange) cut before it."""
    chat = draw(chats(turns=1))
    huge = draw(st.sampled_from(["a", "é", "日", "\x00", " x"])) * (1 << 20)
    if draw(st.booleans()):
        rec = as_record([*chat[:-1], {"role": "assistant", "content": huge}], fmt)
        return {"record": rec, "outcome": LONG}
    tail = [{"role": "user", "content": huge}, {"role": "assistant", "content": "ok"}]
    return {"record": as_record(chat + tail, fmt), "messages": chat, "truncated": True, "outcome": KEEP}


def _with(mutate: Callable[[st.DrawFn, dict], Any]) -> Builder:
    def build(draw: st.DrawFn, fmt: str) -> dict:
        rec = as_record(draw(chats()), fmt)
        out = mutate(draw, rec)
        return {"record": rec if out is None else out}

    return build


def _pick(draw: st.DrawFn, rec: dict) -> int:
    return draw(st.integers(0, len(_turns(rec)) - 1))


def _chat_of(roles: list[str]) -> Builder:
    def build(draw: st.DrawFn, fmt: str) -> dict:
        return {"record": as_record([{"role": r, "content": draw(TEXT)} for r in roles], fmt)}

    return build


def _line(make: Callable[[st.DrawFn], bytes]) -> Builder:
    return lambda draw, fmt: {"raw": make(draw)}


def _json_bytes(draw: st.DrawFn, fmt: str) -> bytes:
    return json.dumps(as_record(draw(chats()), fmt)).encode()


def _broken(draw: st.DrawFn, fmt: str) -> dict:
    """A record whose JSON is cut or damaged in the middle of the file."""
    text = _json_bytes(draw, fmt)
    how = draw(st.sampled_from(["cut", "comma", "quote", "bom"]))
    if how == "cut":
        return {"raw": text[: draw(st.integers(1, len(text) - 1))]}
    if how == "comma":
        return {"raw": text[:-1] + b",}"}
    if how == "quote":
        return {"raw": text.replace(b'"', b"'", 1)}
    return {"raw": b" \xef\xbb\xbf" + text}  # a BOM in mid-file (a first-line BOM is allowed)


def _inside_text(draw: st.DrawFn, fmt: str, bad: bytes) -> dict:
    """A record whose first message text (Alpaca: the output) has `bad` bytes written into it."""
    text = _json_bytes(draw, fmt)
    key = {"openai": b'"content": "', "sharegpt": b'"value": "', "alpaca": b'"output": "'}[fmt]
    i = text.index(key) + len(key)
    return {"raw": text[:i] + bad + text[i:]}


def _not_utf8(draw: st.DrawFn, fmt: str) -> dict:
    """Bytes that are not UTF-8 inside a message's text (a Latin-1 file, a cut multi-byte character)."""
    bad = draw(st.sampled_from([b"\xff", b"\xe9", b"\xc3", b"\xe6\x97", b"\xed\xa0\x80", b"\x80abc"]))
    return _inside_text(draw, fmt, bad)


def _lone_surrogate(draw: st.DrawFn, fmt: str) -> dict:
    """A \\uD800-\\uDFFF escape without its pair: valid JSON, but not text any tokenizer or writer accepts."""
    return _inside_text(draw, fmt, draw(st.sampled_from([b"\\ud800", b"\\udfff", b"\\udc80x", b"\\ude00\\ud83d"])))


FAULTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str, Builder]] = {
    # accepted, possibly after a documented trim or rename
    "good": (FORMATS, CONTAINERS, KEEP, _good),
    "role_spelling": (LISTS, CONTAINERS, KEEP, _role_case),
    "trailing_user": (LISTS, CONTAINERS, KEEP, _trailing_user),
    "leading_assistant": (LISTS, CONTAINERS, KEEP, _leading_assistant),
    "message_1mb": (FORMATS, CONTAINERS, LONG, _long),
    # the file's text itself
    "broken_json": (FORMATS, ("jsonl",), "invalid_json", _broken),
    "broken_json_in_list": (FORMATS, ("json",), FATAL, _broken),
    "not_utf8": (FORMATS, TEXTUAL, "invalid_text", _not_utf8),
    "nested_100k": (FORMATS, ("jsonl",), "invalid_json", _line(lambda d: b'{"messages": ' + b"[" * 100_000)),
    "lone_surrogate": (FORMATS, TEXTUAL, "invalid_text", _lone_surrogate),
    # wrong types at every level
    "record_not_object": (
        FORMATS,
        TEXTUAL,
        "not_a_conversation",
        lambda d, f: {
            "record": d(
                st.one_of(JUNK, st.lists(st.integers(), max_size=3), st.none(), st.text(max_size=5)).filter(
                    lambda v: not isinstance(v, dict)
                )
            )
        },
    ),  # noqa: E501
    "no_chat_keys": (
        FORMATS,
        TEXTUAL,
        "not_a_conversation",
        lambda d, f: {"record": {"prompt": d(TEXT), "answer\n" + d(st.text(max_size=4)): d(TEXT)}},
    ),  # noqa: E501
    "turns_not_list": (
        LISTS,
        TEXTUAL,
        "not_a_conversation",
        _with(lambda d, r: r.update({next(iter(r)): d(st.one_of(JUNK, st.text(max_size=5), st.none()))})),
    ),  # noqa: E501
    "turns_null": (LISTS, CONTAINERS, "not_a_conversation", _with(lambda d, r: r.update({next(iter(r)): None}))),
    "message_not_object": (
        LISTS,
        TEXTUAL,
        "not_a_conversation",
        _with(
            lambda d, r: _turns(r).__setitem__(
                _pick(d, r),
                d(
                    st.one_of(JUNK, st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2)).filter(
                        lambda v: not isinstance(v, dict)
                    )
                ),
            )
        ),
    ),  # noqa: E501
    "unknown_role": (LISTS, TEXTUAL, "unknown_role", _with(lambda d, r: _set(r, _pick(d, r), "role", d(ODD_ROLE)))),
    "role_null": (LISTS, CONTAINERS, "unknown_role", _with(lambda d, r: _set(r, _pick(d, r), "role", None))),
    "role_missing": (LISTS, TEXTUAL, "unknown_role", _with(lambda d, r: _set(r, _pick(d, r), "role", None, True))),
    "content_wrong_type": (
        LISTS,
        TEXTUAL,
        "non_string_content",
        _with(lambda d, r: _set(r, _pick(d, r), "content", d(JUNK))),
    ),  # noqa: E501
    "content_image_part": (
        ("openai",),
        TEXTUAL,
        "non_string_content",
        _with(
            lambda d, r: _set(
                r,
                _pick(d, r),
                "content",
                [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}],
            )
        ),
    ),  # noqa: E501
    "content_deep_list": (
        LISTS,
        TEXTUAL,
        "non_string_content",
        _with(lambda d, r: _set(r, _pick(d, r), "content", _deep(d(st.integers(2, 500))))),
    ),  # noqa: E501
    "content_null": (LISTS, CONTAINERS, "empty_message", _with(lambda d, r: _set(r, _pick(d, r), "content", None))),
    "content_missing": (
        LISTS,
        TEXTUAL,
        "empty_message",
        _with(lambda d, r: _set(r, _pick(d, r), "content", None, True)),
    ),  # noqa: E501
    "content_blank": (
        LISTS,
        CONTAINERS,
        "empty_message",
        _with(lambda d, r: _set(r, _pick(d, r), "content", d(st.sampled_from(["", " ", "\n\t", "\u3000", "\x0b"])))),
    ),  # noqa: E501
    "alpaca_wrong_type": (
        ("alpaca",),
        TEXTUAL,
        "non_string_content",
        _with(lambda d, r: r.update({d(st.sampled_from(["instruction", "input", "output"])): d(JUNK)})),
    ),  # noqa: E501
    "alpaca_output_blank": (
        ("alpaca",),
        CONTAINERS,
        "empty_message",
        _with(lambda d, r: r.update(output=d(st.sampled_from(["", "  ", None])))),
    ),  # noqa: E501
    "alpaca_history_junk": (
        ("alpaca",),
        TEXTUAL,
        "not_a_conversation",
        _with(
            lambda d, r: r.update(
                history=d(st.one_of(st.just(7), st.just("h"), st.just([["only one"]]), st.just([[1, 2, 3]])))
            )
        ),
    ),  # noqa: E501
    # the dialogue's shape
    "no_turns": (LISTS, TEXTUAL, "no_assistant_turn", _with(lambda d, r: r.update({next(iter(r)): []}))),
    "user_only": (LISTS, CONTAINERS, "no_assistant_turn", _chat_of(["user"])),
    "same_role_twice": (LISTS, CONTAINERS, "not_alternating", _chat_of(["user", "user", "assistant"])),
    "assistant_twice": (LISTS, CONTAINERS, "not_alternating", _chat_of(["user", "assistant", "assistant"])),
    "system_late": (
        LISTS,
        CONTAINERS,
        "not_alternating",
        _chat_of(["user", "assistant", "system", "user", "assistant"]),
    ),  # noqa: E501
    "template_refuses": (
        FORMATS,
        CONTAINERS,
        "template_refused",
        lambda d, f: {
            "record": as_record(
                [{"role": "user", "content": "REFUSE " + d(TEXT)}, {"role": "assistant", "content": d(TEXT)}], f
            )
        },
    ),  # noqa: E501
}

# A ChatML template that raises for a message containing REFUSE (raise_exception) or NUMBER (a plain 1/0).
REFUSING_TEMPLATE = (
    "{% for m in messages %}{% if 'REFUSE' in m['content'] %}{{ raise_exception('refused: ' ~ loop.index) }}"
    "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def kinds_for(fmt: str, container: str) -> list[str]:
    return [k for k, (fmts, conts, _, _) in FAULTS.items() if fmt in fmts and container in conts]


@st.composite
def cases(draw: st.DrawFn, fmt: str, container: str, kind: str | None = None) -> Case:
    kind = kind or draw(st.sampled_from(kinds_for(fmt, container)))
    _, _, outcome, build = FAULTS[kind]
    args = build(draw, fmt)
    if outcome == KEEP:
        args.setdefault("outcome", KEEP)
    return Case(kind=kind, **{"outcome": outcome, **args})
