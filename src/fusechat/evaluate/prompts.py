"""How a model is asked: its own chat template, or a plain User/Assistant format when it has none.

Every evaluation that prompts a model goes through `render`, so chat models are always asked in the format they
were trained on. A base model without a chat template (Gemma-3-270m, a source of the demo) gets a plain
"User: ... / Assistant:" transcript instead, and its generations stop at the next "User:"; results record which
format was used. Whether a template exists is read from the tokenizer, never guessed from the model's name.
"""

from __future__ import annotations

import numpy as np

PLAIN_STOP = "\nUser:"

# Zero-shot and few-shot free: the instruction asks for the worked solution and a final line the grader reads.
MATH_INSTRUCTION = (
    "Solve the following math problem step by step. "
    'End your answer with a line of the form "#### <number>" giving only the final number.\n\n'
)


def has_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_format(tokenizer) -> str:
    """'chat_template' or 'plain': recorded beside every result."""
    return "chat_template" if has_template(tokenizer) else "plain"


def render(tokenizer, messages: list[dict]) -> str:
    """The text a model continues to write the next assistant turn of `messages`."""
    if has_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    parts = []
    for m in messages:
        role = {"user": "User", "assistant": "Assistant", "system": "System"}.get(m["role"], m["role"].title())
        parts.append(f"{role}: {m['content'].strip()}\n")
    return "".join(parts) + "Assistant:"


def stop_strings(tokenizer) -> list[str]:
    """Strings after which a generation is cut (the plain format's next user turn)."""
    return [] if has_template(tokenizer) else [PLAIN_STOP]


def cut_at_stop(text: str, stops: list[str]) -> str:
    """`text` up to the first stop string, stripped."""
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut].strip()


def tokenize_prompts(tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Token ids of rendered prompts, as the model saw such text in training (specials added once, not twice)."""
    enc = tokenizer(texts, add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    out = []
    for ids in enc:
        if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]  # the template wrote BOS and the tokenizer added another
        out.append(np.asarray(ids, dtype=np.int64))
    return out
