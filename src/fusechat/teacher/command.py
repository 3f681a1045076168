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
    add_flags(p, TeachCommandOptions)
    p.add_argument("--overwrite", action="store_true", help="replace an --out store made with other settings")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fusechat.errors import FusechatError
    from fusechat.teacher.placement import parse_device_map, parse_max_memory
    from fusechat.teacher.teach import teach

    opts = from_args(TeachCommandOptions, args)
    if opts.device_map is None and (opts.max_memory or opts.offload_folder):
        raise FusechatError("--max-memory and --offload-folder go with --device-map")
    out = teach(
        args.model,
        args.conversations,
        args.out,
        top_k=opts.top_k,
        shard=opts.shard,
        shard_rows=opts.shard_rows,
        batch_tokens=opts.batch_tokens,
        dtype=opts.dtype,
        device=opts.device,
        device_map=parse_device_map(opts.device_map),
        max_memory=parse_max_memory(opts.max_memory),
        offload_folder=opts.offload_folder,
        trust_remote_code=opts.trust_remote_code,
        allow_pickle=opts.allow_pickle,
        progress=not opts.no_progress,
        overwrite=args.overwrite,
    )
    print(out)
    return 0
