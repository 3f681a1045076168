"""Chat formats in, one normalised conversation out: OpenAI/TRL `messages`, TRL `prompt`/`completion`, ShareGPT
`conversations`, Alpaca.

TRL's prompt-completion records come in two forms, both read: conversational (`prompt` and `completion` are
lists of messages, joined into one conversation) and standard (two strings: a user turn and its reply).

Every format becomes a list of `{"role", "content"}` messages with role `system`, `user` or `assistant`,
checked against one shape: an optional system message first, then user and assistant turns alternating, at
least one assistant turn. Anything else is rejected with the reason and the record number, never repaired:

- Consecutive turns of the same role are REJECTED, not merged. Merging would invent a text nobody wrote (the
  separator is a guess) and, for assistant turns, supervise a reply assembled by us. Clean such data first.
- A system message anywhere but first is rejected (its place in the dialogue has no rendering we could trust).
- A conversation that ends with a user turn keeps its earlier turns: the last user turn supervises nothing
  and is trimmed (counted in the manifest as `trailing_user_trimmed`).
- One assistant turn before the first user turn (after the system message, if any) is trimmed too, counted as
  `leading_assistant_trimmed`: it answers a prompt the record does not hold. Real ShareGPT dumps start 36% of
  their conversations this way (the cleaning removed the first human turn); rejecting them would lose those
  conversations, keeping the turn would teach replies to nothing.
- Role names are matched case-insensitively through `ROLE_ALIASES`, which maps only names whose meaning is
  unambiguous in real dumps; tool, function and observation messages are unknown roles.
- OpenAI content given as a list of parts keeps its text parts, joined with a newline; any other part (an
  image) is rejected, since fusechat trains on text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from fusechat.data.readers import RawRecord
from fusechat.errors import InvalidRecordError

FORMATS = ("openai", "prompt_completion", "sharegpt", "alpaca")
EXPECTED = (
    "expected 'messages' (OpenAI/TRL), 'prompt' and 'completion' (TRL), 'conversations' (ShareGPT) "
    "or 'instruction' and 'output' (Alpaca)"
)

ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
}

# The reasons a record can be rejected (the keys of `skipped_invalid` in the manifest).
REASONS = (
    "invalid_json",
    "invalid_text",
    "not_a_conversation",
    "unknown_role",
    "non_string_content",
    "empty_message",
    "not_alternating",
    "no_assistant_turn",
    "template_refused",
)


class BadRecord(InvalidRecordError):
    """An `InvalidRecordError` that also carries a short reason key, for the per-reason skip counts."""

    def __init__(self, path: str, record: int, reason: str, problem: str, fix: str = "") -> None:
        assert reason in REASONS, reason
        self.reason = reason
        super().__init__(path, record, problem, fix)


@dataclass
class Conversation:
    """A normalised conversation and where it came from. `own_id` is the record's id field, if it had one."""

    source: str
    record: int
    messages: list[dict]
    own_id: str | None
    trimmed_trailing_user: bool = False
    trimmed_leading_assistant: bool = False

    def content_id(self) -> str:
        """An id from the content alone: identical conversations get the same id in any file or run."""
        blob = json.dumps(self.messages, ensure_ascii=False, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def detect_format(data: Any) -> str | None:
    """The chat format a record's keys say it is in, or None."""
    if not isinstance(data, dict):
        return None
    if "messages" in data:
        return "openai"
    if "prompt" in data and "completion" in data:
        return "prompt_completion"
    if "conversations" in data:
        return "sharegpt"
    if "instruction" in data and "output" in data:
        return "alpaca"
    return None


def normalise(raw: RawRecord, fmt: str | None) -> Conversation:
    """Parse and check one record in format `fmt` (None: from its keys); raise BadRecord naming the file,
    record and problem."""
    where = f" (line {raw.line})" if raw.line is not None else ""

    def bad(reason: str, problem: str, fix: str = "fix the record, or pass --skip-invalid") -> BadRecord:
        return BadRecord(raw.source, raw.record, reason, problem + where, fix)

    if raw.error is not None:
        fix = "fix the line, or pass --skip-invalid"
        raise BadRecord(raw.source, raw.record, raw.reason, raw.error, fix)
    data = raw.data
    if not isinstance(data, dict):
        raise bad("not_a_conversation", f"is a JSON {type(data).__name__}, not an object")
    fmt = fmt or detect_format(data)
    if fmt is None:
        keys = ", ".join(repr(k) for k in sorted(map(str, data))[:8])
        if "chosen" in data and "rejected" in data:
            raise bad(
                "not_a_conversation",
                f"is a preference pair (keys: {keys}; TRL's DPO format), not a conversation to learn from; " + EXPECTED,
                "keep the prompt and its chosen reply as 'prompt' and 'completion', or pass --skip-invalid",
            )
        raise bad("not_a_conversation", f"is in no known chat format (keys: {keys}); {EXPECTED}")
    if fmt == "prompt_completion":
        messages = _prompt_completion(data, bad)
    elif fmt == "alpaca":
        if "instruction" not in data or "output" not in data:
            found = ", ".join(repr(k) for k in sorted(map(str, data))[:8])
            raise bad(
                "not_a_conversation",
                f"has no 'instruction' and 'output' (keys: {found}); the file was read as alpaca",
                "give each file in one format, or pass --format",
            )
        messages = _alpaca(data, bad)
    else:
        key = "messages" if fmt == "openai" else "conversations"
        turns = data.get(key)
        if not isinstance(turns, list):
            found = ", ".join(repr(k) for k in sorted(map(str, data))[:8])
            raise bad(
                "not_a_conversation",
                f"has no '{key}' list (keys: {found}); the file was read as {fmt}",
                "give each file in one format, or pass --format",
            )
        messages = [_message(m, i, bad) for i, m in enumerate(turns)]
    lead = int(bool(messages) and messages[0]["role"] == "system")
    leading = len(messages) > lead + 1 and messages[lead]["role"] == "assistant"
    if leading:
        messages = messages[:lead] + messages[lead + 1 :]
    trailing = _check_shape(messages, bad, shift_from=lead if leading else None)
    if trailing:
        messages = messages[:-1]
    own = data.get("id")
    own_id = str(own) if isinstance(own, str | int) and not isinstance(own, bool) and str(own) else None
    if own_id is not None and not _is_unicode(own_id):
        raise bad("invalid_text", f"its id {own_id!r} is not valid Unicode (a lone surrogate or an undecodable byte)")
    return Conversation(raw.source, raw.record, messages, own_id, trailing, leading)


def _message(m: Any, i: int, bad) -> dict:
    """One message of an OpenAI or ShareGPT list (either's key names are accepted in both)."""
    if not isinstance(m, dict):
        raise bad("not_a_conversation", f"message {i} is a {type(m).__name__}, not an object")
    role_key = "role" if "role" in m else "from"
    role = m.get(role_key)
    if not isinstance(role, str) or role.strip().lower() not in ROLE_ALIASES:
        known = ", ".join(ROLE_ALIASES)
        fix = f"use one of {known}, or pass --skip-invalid"
        raise bad("unknown_role", f"message {i} has unknown role {role!r}", fix)
    content_key = "content" if "content" in m else "value"
    content = _text(m.get(content_key), f"message {i}", bad)
    return {"role": ROLE_ALIASES[role.strip().lower()], "content": content}


def _text(content: Any, what: str, bad) -> str:
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                problem = f"{what} has a content part {j} of type {kind!r}; only text is used"
                raise bad("non_string_content", problem)
        content = "\n".join(parts)
    if content is None:
        raise bad("empty_message", f"{what} has no content")
    if not isinstance(content, str):
        raise bad("non_string_content", f"{what} has content of type {type(content).__name__}, not text")
    if not content.strip():
        raise bad("empty_message", f"{what} is empty")
    if not _is_unicode(content):
        bad_at = next(i for i, c in enumerate(content) if "\ud800" <= c <= "\udfff")
        raise bad(
            "invalid_text",
            f"{what} is not valid Unicode at character {bad_at} (a lone surrogate: an undecodable byte in the "
            "file, or a \\uD800-\\uDFFF escape without its pair)",
        )
    return content


def _is_unicode(text: str) -> bool:
    """Whether `text` can be written as UTF-8: no lone surrogates (from `\\ud800` escapes, or bytes that
    were not UTF-8 and were read with `surrogateescape`)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _prompt_completion(data: dict, bad) -> list[dict]:
    """TRL's prompt-completion record: two message lists (conversational) or two strings (standard)."""
    prompt, completion = data.get("prompt"), data.get("completion")
    if prompt is None or completion is None:
        found = ", ".join(repr(k) for k in sorted(map(str, data))[:8])
        raise bad(
            "not_a_conversation",
            f"has no 'prompt' and 'completion' (keys: {found}); the file was read as prompt_completion",
            "give each file in one format, or pass --format",
        )
    if isinstance(prompt, str) and isinstance(completion, str):
        return [
            {"role": "user", "content": _text(prompt, "'prompt'", bad)},
            {"role": "assistant", "content": _text(completion, "'completion'", bad)},
        ]
    if isinstance(prompt, list) and isinstance(completion, list):
        messages = [_message(m, i, bad) for i, m in enumerate(prompt)]
        messages += [_message(m, len(prompt) + i, bad) for i, m in enumerate(completion)]
        if completion and messages[-1]["role"] != "assistant":
            raise bad("not_alternating", f"the completion ends with a {messages[-1]['role']} message, not the reply")
        return messages
    kinds = f"a {type(prompt).__name__} and a {type(completion).__name__}"
    raise bad(
        "not_a_conversation",
        f"has 'prompt' and 'completion' as {kinds}; expected two message lists (conversational) or two strings",
    )


def _alpaca(data: dict, bad) -> list[dict]:
    """instruction (+ input) as the user turn, output as the assistant turn; optional system and history."""
    messages = []
    if data.get("system") not in (None, ""):
        messages.append({"role": "system", "content": _text(data["system"], "'system'", bad)})
    history = data.get("history") or []
    if not isinstance(history, list):
        raise bad("not_a_conversation", "'history' is not a list of [instruction, response] pairs")
    for j, pair in enumerate(history):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise bad("not_a_conversation", f"history item {j} is not an [instruction, response] pair")
        messages.append({"role": "user", "content": _text(pair[0], f"history item {j}", bad)})
        messages.append({"role": "assistant", "content": _text(pair[1], f"history item {j}", bad)})
    instruction, extra = data.get("instruction"), data.get("input")
    for name, value in (("instruction", instruction), ("input", extra)):
        if value is not None and not isinstance(value, str):
            raise bad("non_string_content", f"'{name}' is a {type(value).__name__}, not text")
    prompt = "\n\n".join(s for s in (instruction, extra) if s and s.strip())
    messages.append({"role": "user", "content": _text(prompt, "'instruction'", bad)})
    messages.append({"role": "assistant", "content": _text(data.get("output"), "'output'", bad)})
    return messages


def _check_shape(messages: list[dict], bad, shift_from: int | None = None) -> bool:
    """Check: optional system first, then user/assistant alternating from user.

    Returns whether the last (user) turn must be trimmed. `shift_from`: the index from which message numbers
    are one less than in the record (a leading assistant turn was trimmed there), so errors name the record's.
    """

    def number(i: int) -> int:
        return i + 1 if shift_from is not None and i >= shift_from else i

    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        raise bad("no_assistant_turn", "has no assistant turn, so nothing to learn from")
    for i, role in enumerate(roles):
        if role == "system" and i > 0:
            raise bad("not_alternating", f"message {number(i)} is a system message; only the first may be one")
    body = roles[1:] if roles[0] == "system" else roles
    for i, role in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            n = number(i + (len(roles) - len(body)))
            raise bad(
                "not_alternating",
                f"message {n} is {role} where {expected} is due (turns must alternate user/assistant, "
                "starting with user; same-role turns are not merged)",
            )
    return body[-1] == "user"
