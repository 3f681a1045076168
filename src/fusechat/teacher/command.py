"""`fusechat teach`: the teacher pass of one model over prepared conversations."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teach", help="score conversations with one model and store its top-k next-token log-probs")
    p.add_argument("--model", required=True, help="Hugging Face model directory or installed model name")
    p.add_argument("--conversations", required=True, help="output directory of `fusechat prepare`")
    p.add_argument("--out", required=True, help="store directory (a rerun resumes it shard by shard)")
    p.add_argument("--top-k", type=int, default=10, help="next tokens kept per position (default 10)")
    p.add_argument("--shard", help="I/N: this process takes shards I, I+N, ... (default: torchrun's RANK/WORLD_SIZE)")
    p.add_argument("--shard-rows", type=int, default=256, help="conversations per shard (default 256)")
    p.add_argument("--batch-tokens", type=int, default=4096, help="batch size x longest length (default 4096)")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPUs that have it, else fp32), float32, bfloat16")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda:LOCAL_RANK if present, else cpu)")
    p.add_argument("--trust-remote-code", action="store_true", help="run the model repository's own code")
    p.add_argument("--allow-pickle", action="store_true", help="accept pickled .bin weights (runs their code)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an --out store made with other settings")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fusechat.teacher.teach import teach

    out = teach(
        args.model,
        args.conversations,
        args.out,
        top_k=args.top_k,
        shard=args.shard,
        shard_rows=args.shard_rows,
        batch_tokens=args.batch_tokens,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(out)
    return 0
