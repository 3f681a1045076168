"""Tiny models and tokenizers built inside the tests (no downloads), and a conversations dir written directly.

Two tokenizer kinds (byte-level BPE with `Ġ`, and a SentencePiece-style `▁` BPE), trained on a few sentences with
the `tokenizers` library, and two architectures (Llama-style and GPT-2-style) with fixed seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from fusechat.data.conversations import FILE, FORMAT, FORMAT_VERSION, STAGE, conversations_schema
from fusechat.manifest import fingerprint, write_manifest

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Hello world, how are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "Knowledge fusion of chat models: 日本語 and café.",
    "What is 12 + 30? The answer is 42.",
    "user assistant system im_start im_end",
] * 20
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def byte_bpe_tokenizer(vocab: int = 400) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE tokenizer (`Ġ` marks spaces) with ChatML specials and template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.chat_template = CHATML
    return fast


def metaspace_tokenizer(vocab: int = 300) -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE tokenizer (`▁` marks spaces, byte fallback) with a BOS it adds itself."""
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab + 256, special_tokens=["<unk>", "<bos>", "<eos>", *byte_tokens])
    tok.train_from_iterator(CORPUS, trainer)
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tok.token_to_id("<bos>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<eos>"
    )


def tiny_llama_config(
    vocab_size: int,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    max_positions: int = 512,
    **config,
) -> LlamaConfig:
    """The tests' Llama: `hidden` wide with an MLP twice that, `layers` deep; any other LlamaConfig field as given.
    Every test model of this architecture is built from here, so they differ only where a test needs it."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        **config,
    )


def save_llama(path: Path, tokenizer: PreTrainedTokenizerFast, seed: int = 0, tie: bool = True) -> Path:
    """A tiny Llama-style causal LM beside `tokenizer`, saved as safetensors."""
    torch.manual_seed(seed)
    config = tiny_llama_config(len(tokenizer), tie_word_embeddings=tie)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def save_gpt2(path: Path, tokenizer: PreTrainedTokenizerFast, seed: int = 1) -> Path:
    """A tiny GPT-2-style causal LM beside `tokenizer`, saved as safetensors."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=512)
    GPT2LMHeadModel(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def write_conversations(path: Path, chats: list[list[dict]], template_tokenizer: PreTrainedTokenizerFast) -> Path:
    """Render chats with a ChatML-like template and write a conversations dir with assistant spans.

    Spans are found by rendering each prefix of the conversation, which is what `prepare` does; this writer
    exists so the teacher tests do not depend on the data stage.
    """
    path.mkdir(parents=True, exist_ok=True)
    rows = {n: [] for n in conversations_schema().names}
    for i, chat in enumerate(chats):
        text = template_tokenizer.apply_chat_template(chat, tokenize=False)
        spans = []
        for j, m in enumerate(chat):
            if m["role"] != "assistant":
                continue
            prefix = template_tokenizer.apply_chat_template(chat[:j], tokenize=False, add_generation_prompt=True)
            start = len(prefix)
            assert text[start : start + len(m["content"])] == m["content"]
            end = start + len(m["content"]) + len("<|im_end|>")
            spans.append([start, end])
        rows["id"].append(f"c{i}")
        rows["text"].append(text)
        rows["spans"].append(spans)
        rows["messages"].append(json.dumps(chat))
        rows["source"].append("test")
        rows["record"].append(i)
    pq.write_table(pa.table(rows, schema=conversations_schema()), path / FILE)
    fp = fingerprint([rows["id"], rows["text"], rows["spans"]])
    write_manifest(
        path, {"stage": STAGE, "format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": fp}, complete=True
    )
    return path


def sample_chats(n: int = 12) -> list[list[dict]]:
    """Varied chats: system prompts, several turns, non-ASCII text, code."""
    rng = np.random.default_rng(0)
    chats = []
    for i in range(n):
        turns = int(rng.integers(1, 4))
        chat = [{"role": "system", "content": "You are helpful."}] if i % 3 == 0 else []
        for t in range(turns):
            chat.append({"role": "user", "content": CORPUS[(i + t) % 6]})
            chat.append({"role": "assistant", "content": " ".join(CORPUS[(i + t + k) % 6] for k in range(1 + i % 3))})
        chats.append(chat)
    return chats


def hub_cache_layout(
    model_dir: Path, cache: Path, repo_id: str, commit: str = "0123456789abcdef" * 2 + "01234567"
) -> Path:
    """Lay `model_dir` out in a Hugging Face hub cache as `hf download` leaves it: content-addressed blobs,
    `snapshots/<commit>/` of symlinks to them, and `refs/main` naming the commit. Returns the snapshot."""
    import hashlib
    import os

    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(model_dir).iterdir()):
        if f.is_file():
            data = f.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            os.symlink(os.path.relpath(blob, snapshot), snapshot / f.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
