"""Inputs for the GPU check's short `fusechat train`: a random-weight pivot of about 1.2B parameters
(Llama-3.2-1B's shape: hidden 2,048, 16 layers, vocabulary 128,256, tied head) with a small BPE tokenizer, and a
training-targets store for it built the way the tests build theirs (top-k from a second small model).

    python benchmarks/gpu_train_setup.py OUT_DIR [--conversations 64]

The tokenizer has only a few hundred tokens; the rest of the 128,256-row head is still computed by the loss, so
the head costs what a real 1B pivot's does. No downloads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--conversations", type=int, default=64)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--small", action="store_true", help="a small pivot (hidden 256, 2 layers) to try the script")
    args = p.parse_args()
    sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.train.conftest import make_model, make_targets, make_tokenizer

    out = Path(args.out)
    pivot = out / "pivot"
    make_tokenizer(pivot)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if args.small:
        config.update(dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4))
        config.update(dict(num_key_value_heads=2, vocab_size=32000))
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config)
    model.save_pretrained(pivot)
    params = sum(t.numel() for t in model.parameters())
    del model
    source = make_model(out / "source", len(AutoTokenizer.from_pretrained(pivot)), seed=2, layers=2)
    make_targets(out / "targets", pivot, source, n=args.conversations, n_shards=2)
    print(f"pivot {pivot} ({params / 1e9:.2f}B parameters), targets {out / 'targets'}")


if __name__ == "__main__":
    main()
