"""Chats, templates and tiny pivot tokenizers for the data tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Gemma-like: its own turn markers, `model` for the assistant, content trimmed, a BOS written by the template,
# and the system message folded into the first user turn.
TURNS = (
    "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.sys = m['content'] | trim %}{% else %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{% if ns.sys and loop.index == 2 %}{{ ns.sys }}\n\n{% endif %}"
    "{{ m['content'] | trim }}<end_of_turn>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

CORPUS = [
    "You are a helpful assistant. Hello world, how are you today?",
    "What is two plus two? Two plus two is four. And three plus three? Six.",
    "user model system assistant Write a poem about the sea: waves, salt and wind.",
    "Translate 'good morning' into French. Bonjour! Café, naïve, 日本語.",
    "Lines:\nWaves,\nsalt\n\nand wind (all of it).\n",
]


def train_tokenizer(tmp: Path, kind: str) -> Path:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        trainer = trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        tok.train_from_iterator(CORPUS * 5, trainer)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
        fast.chat_template = CHATML
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex("\n"), behavior="isolated"), pre_tokenizers.Metaspace()]
        )
        tok.decoder = decoders.Metaspace()
        specials = ["<unk>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"]
        tok.train_from_iterator(CORPUS * 5, trainers.BpeTrainer(vocab_size=300, special_tokens=specials))
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")
        fast.chat_template = TURNS
    out = tmp / kind
    fast.save_pretrained(out)
    return out


# Three conversations as normalised messages: a system prompt, multi-turn, non-ASCII.
CHATS = [
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is two plus two?"},
        {"role": "assistant", "content": "Two plus two is four."},
        {"role": "user", "content": "And three plus three?"},
        {"role": "assistant", "content": "Six."},
    ],
    [
        {"role": "user", "content": "Write a poem about the sea."},
        {"role": "assistant", "content": "Waves,\nsalt\n\nand wind."},
    ],
    [
        {"role": "user", "content": "Translate 'good morning' into French."},
        {"role": "assistant", "content": "Bonjour! (Café, naïve, 日本語)"},
    ],
]

SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


def as_format(chat: list[dict], fmt: str, cid: str) -> dict:
    """One chat as a record in an input format."""
    if fmt == "openai":
        return {"id": cid, "messages": [dict(m) for m in chat]}
    if fmt == "sharegpt":
        turns = [{"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]} for m in chat]
        return {"id": cid, "conversations": turns}
    assert fmt == "alpaca"
    system = [m["content"] for m in chat if m["role"] == "system"]
    body = [m["content"] for m in chat if m["role"] != "system"]
    pairs = [[body[i], body[i + 1]] for i in range(0, len(body) - 2, 2)]
    rec = {"id": cid, "instruction": body[-2], "input": "", "output": body[-1], "history": pairs}
    if system:
        rec["system"] = system[0]
    return rec


def write_records(path: Path, records: list, container: str) -> Path:
    """Write records as JSONL, a JSON list, a JSON object wrapping the list, or Parquet."""
    if container == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    elif container == "json":
        path.write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")
    elif container == "json-object":
        path.write_text(json.dumps({"version": 1, "data": records}, indent=1), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(records), path)
    return path


SUFFIX = {"jsonl": ".jsonl", "json": ".json", "json-object": ".json", "parquet": ".parquet"}
