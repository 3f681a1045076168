"""Builders and command-line helpers shared by the training tests: a tiny tokenizer and pivot, fusion targets
written directly, and the real command line with the environment it runs in."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from fusechat.data.conversations import spans_n_bytes, supervised_positions
from fusechat.store.format import ShardWriter, TopKRecord, finalize

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = (
    "the quick brown fox jumps over a lazy dog while seven wizards quietly hex the jolly king; "
    "numbers 12 345 and 6789 add up, code like def f(x): return x * 2 runs, and café naïve 日本語 too"
).split()
WORKTREE = Path(__file__).resolve().parents[2]


def conversation(rng: np.random.Generator, n_turns: int) -> tuple[str, list[tuple[int, int]]]:
    """A ChatML-rendered chat and the character spans of its assistant replies."""
    text, spans = "", []
    for _ in range(n_turns):
        q = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 10))))
        a = " ".join(rng.choice(WORDS, size=int(rng.integers(4, 16))))
        text += f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
        spans.append((len(text), len(text) + len(a) + len("<|im_end|>")))
        text += f"{a}<|im_end|>\n"
    return text, spans


def make_tokenizer(directory: Path, vocab_size: int = 300) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(0)
    corpus = [conversation(rng, 2)[0] for _ in range(200)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)


def make_model(directory: Path, vocab: int, seed: int, layers: int = 2, hidden: int = 32, tied: bool = True):
    from transformers import GenerationConfig, LlamaForCausalLM

    from tests.tiny_models import tiny_llama_config

    config = tiny_llama_config(
        vocab, hidden=hidden, layers=layers, tie_word_embeddings=tied, pad_token_id=0, bos_token_id=1, eos_token_id=2
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=2, pad_token_id=0, max_new_tokens=16)
    model.save_pretrained(directory)
    return model


def make_targets(
    directory: Path,
    pivot_dir: Path,
    source_model,
    n: int = 12,
    k: int = 4,
    seed: int = 0,
    n_shards: int = 2,
    stage: str = "fuse",
) -> Path:
    """A training-targets store from `source_model`'s distributions on the pivot's tokens."""
    from fusechat.models.load import load_tokenizer, tokenizer_fingerprint

    tok = load_tokenizer(pivot_dir)
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    extra = pa.schema([("teacher", pa.int32())])
    per_shard = (n + n_shards - 1) // n_shards
    for s in range(n_shards):
        w = ShardWriter(directory, s, n_shards, k, extra=extra)
        for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
            text, spans = conversation(rng, int(rng.integers(1, 4)))
            enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
            ids = np.asarray(enc["input_ids"], dtype=np.int32)
            offsets = np.asarray(enc["offset_mapping"], dtype=np.int32)
            pos = supervised_positions(offsets, np.asarray(spans))
            with torch.no_grad():
                lp = torch.log_softmax(source_model(torch.as_tensor(ids[None]).long()).logits[0].float(), -1)
            top = lp[pos].topk(k, dim=-1)
            tid, tlp = top.indices.numpy().astype(np.int32), top.values.numpy()
            if i % 3 == 1:  # a many-to-one map leaves fewer distinct ids: padding at the end of some rows
                tid[::2, -1], tlp[::2, -1] = -1, -np.inf
            gold = lp[pos, ids[pos + 1]].numpy()
            w.write(
                TopKRecord(
                    id=f"c{i}",
                    input_ids=ids,
                    offsets=offsets,
                    positions=pos,
                    topk_ids=tid,
                    topk_logprobs=tlp.astype(np.float16),
                    gold_logprob=gold.astype(np.float16),
                    nll=float(-gold.sum()),
                    n_bytes=spans_n_bytes(text, np.asarray(spans)),
                    extra={"teacher": int(i % 2)},
                )
            )
        w.close()
    manifest = {
        "stage": stage,
        "pivot": str(pivot_dir),
        "pivot_dir": str(pivot_dir),
        "model": str(pivot_dir),
        "tokenizer_fingerprint": tokenizer_fingerprint(tok),
        "vocab_size": len(tok),
        "top_k": k,
        "method": "mince",
        "candidates": [{"name": "pivot"}, {"name": "tiny-source"}],
        "conversations": "tests://generated",
    }
    assert finalize(directory, manifest, n_shards)
    return directory


def cli_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(WORKTREE / "src"), OMP_NUM_THREADS="1")
    env["TOKENIZERS_PARALLELISM"] = "false"
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


# The command line as users run it.
CLI = [sys.executable, "-m", "fusechat"]


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
