"""`fusechat teach`: the teacher pass of one model over prepared conversations."""

from __future__ import annotations

import argparse

from fusechat.flags import HelpFormatter, add_flags, from_args
from fusechat.teacher.options import TeachCommandOptions

EXAMPLE = """example:
  fusechat teach --model qwen2.5-coder-0.5b-instruct --conversations run/conversations --out run/teach/qwen
  torchrun --nproc_per_node 4 -m fusechat teach --model ./pivot --conversations run/conversations --out run/teach/pivot
  fusechat teach --model ./mixtral-8x7b --device-map auto --conversations run/conversations --out run/teach/mixtral
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "teach",
        help="score conversations with one model and store its top-k next-token log-probs",
        description="Run one model (the pivot or a source) over prepared conversations and store, at every "
        "supervised position, its top-k next tokens and their log-probabilities: the teacher store that "
        "align and fuse read. A rerun resumes shard by shard; under torchrun each process takes its shards.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True, help="Hugging Face model directory or installed model name")
    p.add_argument("--conversations", required=True, help="output directory of `fusechat prepare`")
    p.add_argument("--out", required=True, help="store directory (a rerun resumes it shard by shard)")
    p.add_argument("--shard", help="I/N: this process takes shards I, I+N, ... (default: torchrun's RANK/WORLD_SIZE)")
    add_flags(p, TeachCommandOptions)
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPUs that have it, else fp32), float32, bfloat16")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda:LOCAL_RANK if present, else cpu)")
    p.add_argument(
        "--device-map",
        help="spread a teacher larger than one GPU with accelerate: auto, balanced, sequential, or a JSON file "
        'mapping module names to devices (0, 1, "cpu", "disk"); under torchrun each process takes its own GPUs',
    )
    p.add_argument("--max-memory", help="with --device-map: a cap per device, for example 0=70GiB,1=70GiB,cpu=200GiB")
    p.add_argument("--offload-folder", help="with --device-map: where layers that fit nowhere else are offloaded")
    p.add_argument("--trust-remote-code", action="store_true", help="run the model repository's own code")
    p.add_argument("--allow-pickle", action="store_true", help="accept pickled .bin weights (runs their code)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an --out store made with other settings")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fusechat.errors import FusechatError
    from fusechat.teacher.placement import parse_device_map, parse_max_memory
    from fusechat.teacher.teach import teach

    if args.device_map is None and (args.max_memory or args.offload_folder):
        raise FusechatError("--max-memory and --offload-folder go with --device-map")

    opts = from_args(TeachCommandOptions, args)
    out = teach(
        args.model,
        args.conversations,
        args.out,
        top_k=opts.top_k,
        shard=args.shard,
        shard_rows=opts.shard_rows,
        batch_tokens=opts.batch_tokens,
        dtype=args.dtype,
        device=args.device,
        device_map=parse_device_map(args.device_map),
        max_memory=parse_max_memory(args.max_memory),
        offload_folder=args.offload_folder,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(out)
    return 0
