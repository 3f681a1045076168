"""The teacher pass on a GPU against its ceiling: a bare forward + log-softmax + top-k on the same batches.

Issue 14's goal: `fusechat teach` tokens/s at least 0.8x the bare loop, for a model of Qwen2.5-1.5B's shape (random
weights) with the real Qwen tokenizer (vocabulary 151,936), process start-up reported apart. The machine that runs
it may have no network, so the tokenizer comes from a folder given on the command line (tokenizer.json, or the
tokenizer.json.xz of the project's shared tokenizer folders, with tokenizer_config.json and the chat template).

One process, in order: synthetic ShareGPT chats (fixed seed) prepared by `fusechat prepare`; the model built and
saved; the batches the pass itself makes (its budget from the GPU's free memory once the model is loaded); the
bare loop over those batches on the device (warm-up first); then `teach` in this process on the same batches
(the same budget passed explicitly), its model loading timed apart; then, unless --no-cli, the real command in
a fresh process, whose wall time includes start-up. Prints one JSON object (and writes it with --json).

Usage: python benchmarks/bench_teach_gpu.py --tokenizer DIR [--n 400] [--shape 1.5b|tiny] [--device cuda]
       (`--shape tiny --device cpu --n 8` checks the script on a CPU; its figures mean nothing)
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import lzma  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

SHAPES = {  # Qwen2.5-1.5B's dimensions; `tiny` only checks the script
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12),
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
}
WORDS = (
    "the of and to in is that for it as with was on be by at this from or have an they which one you were model "
    "token fusion data code python def return value list loop matrix train merge vocabulary 42 3.14 print( ) [ ] "
    "{ } = + - * / : ; , . ! ? \n"
).split(" ")


def build_model(tokenizer: Path, out: Path, shape: str, device: torch.device) -> Path:
    """A random-weight Qwen2 model of `shape` saved beside the real tokenizer of `tokenizer`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out.mkdir(parents=True)
    if (tokenizer / "tokenizer.json").is_file():
        shutil.copy(tokenizer / "tokenizer.json", out / "tokenizer.json")
    else:
        (out / "tokenizer.json").write_bytes(lzma.open(tokenizer / "tokenizer.json.xz").read())
    for f in ("tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (tokenizer / f).is_file():
            shutil.copy(tokenizer / f, out / f)
    config = Qwen2Config(vocab_size=151_936, num_key_value_heads=2, tie_word_embeddings=True, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    del model
    return out


def chats(path: Path, n: int) -> Path:
    """`n` synthetic two-exchange ShareGPT chats (replies of 150-400 words), the same for a given `n`."""
    rng = random.Random(0)

    def para(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    with open(path, "w") as f:
        for i in range(n):
            turns = []
            for _ in range(2):
                turns += [
                    {"from": "human", "value": para(rng.randint(20, 80))},
                    {"from": "gpt", "value": para(rng.randint(150, 400))},
                ]
            f.write(json.dumps({"id": f"c{i}", "conversations": turns}) + "\n")
    return path


def bare_seconds(model, batches: list, chunk: int = 8192) -> float:
    """Forward, then log-softmax + top-10 of every position's logits (in fp32, `chunk` rows at a time)."""
    sync = torch.cuda.synchronize if batches[0][0].device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        model(input_ids=batches[0][0][:1, :16], use_cache=False)  # warm-up
        sync()
        t0 = time.perf_counter()
        for ids, mask in batches:
            hidden = model.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state.flatten(0, 1)
            for r in range(0, hidden.shape[0], chunk):
                torch.log_softmax(model.lm_head(hidden[r : r + chunk]).float(), -1).topk(10, -1)
        sync()
    return time.perf_counter() - t0


def main() -> None:
    from fusechat.data.conversations import Conversations
    from fusechat.data.prepare import prepare
    from fusechat.models import load as load_mod
    from fusechat.teacher import teach as teach_mod
    from fusechat.teacher.placement import auto_batch_tokens

    imports_s = time.perf_counter() - T_START
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", type=Path, required=True, help="folder with the real Qwen tokenizer")
    ap.add_argument("--n", type=int, default=400, help="chats")
    ap.add_argument("--shape", choices=SHAPES, default="1.5b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-cli", action="store_true", help="skip the whole-process run of `fusechat teach`")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device (use --device cpu --shape tiny to check the script)")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # what teach's --dtype auto picks
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_model(args.tokenizer, root / "model", args.shape, device)
        conv_dir = prepare([chats(root / "chats.jsonl", args.n)], pivot=model_dir, out=root / "conv", max_length=2048)
        t0 = time.perf_counter()
        model = load_mod.load_model(model_dir, dtype=dtype, device=device).eval()
        if device.type == "cuda":
            torch.cuda.synchronize()
        load_s = time.perf_counter() - t0
        budget = auto_batch_tokens(model, dtype, [device])
        max_batch = max(32, budget // 512)  # teach's rule when --max-batch is not given
        conv = Conversations(conv_dir)
        items = teach_mod.encode(load_mod.load_tokenizer(model_dir), conv.texts, conv.spans)
        batches = []
        for b in teach_mod.make_batches(items, budget, max_batch):
            ids = torch.zeros((len(b), max(len(e.input_ids) for e in b)), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, e in enumerate(b):
                ids[j, : len(e.input_ids)] = torch.from_numpy(e.input_ids.astype(np.int64))
                mask[j, : len(e.input_ids)] = 1
            batches.append((ids.to(device), mask.to(device)))
        tokens = sum(int(m.sum()) for _, m in batches)
        bare_s = bare_seconds(model, batches)
        del model, batches
        if device.type == "cuda":
            torch.cuda.empty_cache()

        loads = []  # teach's own model loading, timed where it calls it
        plain_load = teach_mod.load_model

        def timed_load(*a, **kw):
            t = time.perf_counter()
            try:
                return plain_load(*a, **kw)
            finally:
                loads.append(time.perf_counter() - t)

        teach_mod.load_model = timed_load
        t0 = time.perf_counter()
        teach_mod.teach(str(model_dir), conv_dir, root / "store", device=str(device), batch_tokens=budget,
                        max_batch=max_batch, progress=False)  # fmt: skip
        teach_s = time.perf_counter() - t0
        teach_mod.load_model = plain_load
        cli_s = None
        if not args.no_cli:
            cmd = [sys.executable, "-m", "fusechat", "teach", "--model", str(model_dir), "--conversations",
                   str(conv_dir), "--out", str(root / "store-cli"), "--device", str(device), "--batch-tokens",
                   str(budget), "--no-progress"]  # fmt: skip
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
            cli_s = time.perf_counter() - t0
    pass_s = teach_s - sum(loads)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "shape": args.shape,
        "dtype": str(dtype).removeprefix("torch."),
        "chats": args.n,
        "tokens": tokens,
        "batch_tokens": budget,
        "max_batch": max_batch,
        "bare_forward_logsoftmax_topk_tok_s": round(tokens / bare_s),
        "teach_tok_s_without_model_loading": round(tokens / pass_s),
        "ratio_teach_over_bare": round(bare_s / pass_s, 3),
        "teach_call_s": round(teach_s, 2),
        "teach_model_loading_s": round(sum(loads), 2),
        "bench_model_loading_s": round(load_s, 2),
        "process_imports_s": round(imports_s, 2),
        "cli_whole_process_s": None if cli_s is None else round(cli_s, 2),
        "cli_tok_s_whole_process": None if cli_s is None else round(tokens / cli_s),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
