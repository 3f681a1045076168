"""`fusechat merge CONFIG.yml OUT`: merge checkpoints from a mergekit-style YAML config (VaRM, baselines)."""

from __future__ import annotations

import argparse
import logging

from fusechat.flags import HelpFormatter, add_flags, from_args
from fusechat.merge.options import MergeOptions
from fusechat.merge.registry import NAMES

log = logging.getLogger(__name__)
EXAMPLE = """example:
  fusechat merge varm.yml run/merge/varm          (varm.yml: merge_method: varm, base_model: PIVOT, models: [...])
  fusechat merge mergekit/examples/ties.yml out/ties --max-shard-size 2e9 --threads 2
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "merge",
        help=f"merge checkpoints of one architecture ({', '.join(NAMES)})",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("config", help="merge config (mergekit YAML schema; see docs/merging.md)")
    p.add_argument("out", help="output directory (must not exist)")
    add_flags(p, MergeOptions)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fusechat.merge.engine import merge

    opts = from_args(MergeOptions, args)
    out = merge(
        args.config,
        args.out,
        allow_pickle=opts.allow_pickle,
        seed=opts.seed,
        explain_weights=opts.explain,
        max_shard_bytes=int(opts.max_shard_size),
        mergekit_arithmetic=opts.mergekit_arithmetic,
        threads=opts.threads,
    )
    log.info("merged into %s", out)
    print(out)
    return 0
