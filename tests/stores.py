"""Tiny tokenizers of three kinds, tiny models, conversations and teacher stores built inside the tests.

The stores follow the teacher-store contract (see docs/formats.md) exactly, from a real forward pass of a tiny
Llama, written directly rather than through `fusechat teach` so that the alignment and fusion tests exercise
their stages alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from fusechat.data.conversations import FILE, conversations_schema, spans_n_bytes, supervised_positions
from fusechat.manifest import fingerprint, write_manifest
from fusechat.store.format import ShardWriter, TopKRecord, finalize

CHATS = [
    ("Say hello.", "Hello world, this is a test."),
    ("Write code.", "def f(x):\n    return x + 1\n\n\nprint(f(2))"),
    ("Translate.", "日本語 is Japanese; 中文 is Chinese. Emoji: 😀🎉 café naïve."),
    ("Spaces?", "a  b   c    d\tend.\n\n  indented line"),
    ("Numbers", "1234567 + 89 = 1234656, isn't it?"),
    ("Mixed", "The quick brown fox jumps over the lazy dog. Ünïcödé — “quotes” …"),
]
TRAIN = [u + " " + a for u, a in CHATS] * 5 + ["the of and to in is it that for on with as was at by"] * 5


def render(user: str, assistant: str) -> tuple[str, list[list[int]]]:
    head = f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    text = head + assistant + "<|im_end|>\n"
    return text, [[len(head), len(head) + len(assistant)]]


def byte_level_tokenizer(vocab_size: int = 400) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    )
    tok.train_from_iterator(TRAIN, trainer)
    return tok


def metaspace_tokenizer(vocab_size: int = 350) -> Tokenizer:
    """A Gemma-like vocabulary: spaces as `▁`, no ChatML specials, raw bytes as `<0xNN>` fallback pieces."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<bos>", "<eos>"])
    tok.train_from_iterator([t for t in TRAIN if "日" not in t], trainer)  # CJK and emoji left to byte fallback
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    spec["model"]["byte_fallback"] = True
    return Tokenizer.from_str(json.dumps(spec))


def word_level_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(TRAIN, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[BOS]"]))
    return tok


KINDS = {
    "bytelevel": byte_level_tokenizer,
    "metaspace": metaspace_tokenizer,
    "wordlevel": word_level_tokenizer,
}


def save_model_dir(directory: Path, tok: Tokenizer, seed: int, bos: str | None = None) -> Path:
    """A Hugging Face directory: the tokenizer and a tiny fixed-seed Llama of its vocabulary size."""
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    from tests.tiny_models import tiny_llama_config

    directory.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos)
    fast.save_pretrained(directory)
    cfg = tiny_llama_config(tok.get_vocab_size(), layers=1, heads=2, max_positions=1024)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    model.save_pretrained(directory)
    return directory


def write_conversations(directory: Path, chats=CHATS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rows = {"id": [], "text": [], "spans": [], "messages": [], "source": [], "record": []}
    for i, (u, a) in enumerate(chats):
        text, spans = render(u, a)
        rows["id"].append(f"c{i}")
        rows["text"].append(text)
        rows["spans"].append(spans)
        rows["messages"].append(json.dumps([{"role": "user", "content": u}, {"role": "assistant", "content": a}]))
        rows["source"].append("test")
        rows["record"].append(i)
    pq.write_table(pa.table(rows, schema=conversations_schema()), directory / FILE)
    write_manifest(
        directory,
        {
            "stage": "prepare",
            "format": "fusechat.conversations",
            "format_version": 1,
            "fingerprint": fingerprint(rows),
        },
        complete=True,
    )
    return directory


def write_teacher_store(out: Path, model_dir: Path, conv_dir: Path, k: int = 5, n_shards: int = 2) -> Path:
    """A teacher store by the contract: own tokenization, supervised positions, top-k log-softmax."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fusechat.data.conversations import Conversations
    from fusechat.models.load import tokenizer_fingerprint

    conv = Conversations(conv_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out.mkdir(parents=True, exist_ok=True)
    per = -(-len(conv) // n_shards)
    for s in range(n_shards):
        writer = ShardWriter(out, s, n_shards, k)
        for i in range(s * per, min(len(conv), (s + 1) * per)):
            text, spans = conv.texts[i], conv.spans[i]
            enc = tok(text, return_offsets_mapping=True, add_special_tokens=True)
            ids = np.array(enc["input_ids"], dtype=np.int64)
            offsets = np.array(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
            pos = supervised_positions(offsets, spans)
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor(ids)[None]).logits[0].float(), -1)
            at = logp[torch.as_tensor(pos, dtype=torch.long)]
            top = at.topk(k, dim=-1)
            gold = at.gather(1, torch.as_tensor(ids[pos + 1])[:, None])[:, 0]
            writer.write(
                TopKRecord(
                    id=conv.ids[i],
                    input_ids=ids.astype(np.int32),
                    offsets=offsets.astype(np.int32),
                    positions=pos,
                    topk_ids=top.indices.numpy().astype(np.int32),
                    topk_logprobs=top.values.numpy().astype(np.float16),
                    gold_logprob=gold.numpy().astype(np.float16),
                    nll=float(-gold.sum()),
                    n_bytes=spans_n_bytes(text, spans),
                )
            )
        writer.close()
    manifest = {
        "stage": "teach",
        "model": str(model_dir),
        "model_dir": str(model_dir),
        "tokenizer_fingerprint": tokenizer_fingerprint(tok),
        "vocab_size": int(model.config.vocab_size),
        "conversations": str(conv_dir),
        "conversations_fingerprint": conv.fingerprint,
        "top_k": k,
    }
    assert finalize(out, manifest, n_shards)
    return out
