"""Render a conversation with the pivot's chat template and find the characters that are supervised.

The supervised text of an assistant turn is its content plus the template's turn-closing text (`<|im_end|>`,
`</s>`, `<end_of_turn>`...), without the whitespace after it, so that the model learns to end its turn. The
spans are found from the template's own behaviour, never from its source or the model's name:

1. `Q_i`, the rendering of the conversation up to and including assistant turn i, must be a prefix of the full
   rendering (templates that rewrite earlier turns once later ones follow cannot be supervised faithfully and
   are refused);
2. `G_i`, the rendering up to turn i with the generation prompt, ends where the assistant's text starts (the
   assistant header is prompt, not target);
3. the content is looked up in `Q_i` after `G_i` (templates may trim it, so the trimmed content is tried too);
   the span runs from there to the end of `Q_i` without its trailing whitespace.

Every span is checked to contain the assistant content. `Q_i` is also where a conversation can be cut after
turn i, which is how long conversations are truncated on a turn boundary without rendering them again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusechat.errors import FusechatError

PROBE = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Two plus two is four."},
    {"role": "user", "content": "And three plus three?"},
    {"role": "assistant", "content": "Six."},
]


class TemplateRefused(Exception):
    """The template raised an error for this conversation (for example, it does not take system messages)."""


@dataclass(frozen=True)
class Rendered:
    """A rendered conversation: its text, the supervised [start, end) character spans (one per assistant
    turn, in order) and `cuts`, the end of the text after each assistant turn (`cuts[-1] == len(text)`)."""

    text: str
    spans: list[tuple[int, int]]
    cuts: list[int]

    def truncated(self, turns: int) -> Rendered:
        """The same conversation cut after its first `turns` assistant turns."""
        end = self.cuts[turns - 1]
        return Rendered(self.text[:end], self.spans[:turns], self.cuts[:turns])


class ChatRenderer:
    """Renders with one chat template (the pivot's, or one given) and locates the assistant spans."""

    def __init__(self, tokenizer: Any, template: str | None = None, template_origin: str = "") -> None:
        self.tokenizer = tokenizer
        if template is None:
            template = tokenizer.chat_template
            if isinstance(template, dict):
                template = template.get("default")
            template_origin = "the pivot tokenizer"
            if not template:
                raise FusechatError(
                    f"{getattr(tokenizer, 'name_or_path', 'the pivot')}: the pivot tokenizer has no chat "
                    "template; give one with --chat-template FILE (a Jinja template)"
                )
        self.template: str = template
        self.origin = template_origin
        self.sha256 = hashlib.sha256(template.encode()).hexdigest()
        self._check_probe()

    def _apply(self, conversations: list[list[dict]], generation_prompt: bool) -> list[str]:
        import jinja2

        try:
            out = self.tokenizer.apply_chat_template(
                conversations,
                chat_template=self.template,
                tokenize=False,
                add_generation_prompt=generation_prompt,
            )
        except jinja2.TemplateSyntaxError as e:
            raise FusechatError(f"chat template from {self.origin}: Jinja syntax error: {e}") from None
        except jinja2.TemplateError as e:
            raise TemplateRefused(str(e)) from None
        except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError, RecursionError) as e:
            # The template is the user's code: `{{ 1 / n }}`, `messages[9]`, `'a' + 1` raise plain Python
            # errors out of the Jinja sandbox. They are a refusal of this conversation, not a fusechat bug.
            raise TemplateRefused(f"{type(e).__name__}: {e}") from None
        return list(out)

    def render(self, messages: list[dict]) -> Rendered:
        """Render `messages` (checked by formats.normalise: ends with an assistant turn) and find its spans.

        Raises TemplateRefused if the template rejects the conversation, FusechatError if the template does
        not render assistant turns in a way whose spans can be found (a fault of the template, not the data).
        """
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        closed = self._apply([messages[: i + 1] for i in turns], generation_prompt=False)
        opened = self._apply([messages[:i] for i in turns], generation_prompt=True)
        text = closed[-1]
        spans, cuts = [], []
        floor = 0
        for k, i in enumerate(turns):
            q, g = closed[k], opened[k]
            if not text.startswith(q):
                raise FusechatError(
                    f"chat template from {self.origin}: renders assistant turn {k + 1} differently once "
                    "later turns follow, so its supervised span cannot be located; use a template "
                    "that renders earlier turns unchanged (--chat-template FILE)"
                )
            base = max(floor, len(g) if q.startswith(g) else _common_prefix(q, g))
            content = messages[i]["content"]
            start, needle = q.find(content, base), content
            if start < 0:
                needle = content.strip()
                start = q.find(needle, base)
            end = len(q.rstrip())
            if start < 0 or end < start + len(needle) or needle not in text[start:end]:
                raise FusechatError(
                    f"chat template from {self.origin}: the text of assistant turn {k + 1} does not "
                    "appear in its rendering (the template rewrites it), so its supervised span cannot "
                    "be located; use a template that writes message content unchanged (--chat-template FILE)"
                )
            spans.append((start, end))
            cuts.append(len(q))
            floor = len(q)
        return Rendered(text, spans, cuts)

    def _check_probe(self) -> None:
        """Fail before any data is read if the template cannot be used (syntax, spans not found)."""
        probes = (PROBE, PROBE[1:])  # some templates refuse system messages: one probe must pass
        refused = None
        for probe in probes:
            try:
                self.render(probe)
                return
            except TemplateRefused as e:
                refused = e
        raise FusechatError(f"chat template from {self.origin}: refuses a plain two-turn chat ({refused})")


def read_template(path: str | Path) -> str:
    """A Jinja chat template from a file; a clear error if it is missing or empty."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FusechatError(f"{path}: cannot read the chat template ({e}); give a Jinja text file") from None
    if not text.strip():
        raise FusechatError(f"{path}: the chat template file is empty")
    return text


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
