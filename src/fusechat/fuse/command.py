"""Command-line entry point of the fusion stage: `fusechat fuse`."""

from __future__ import annotations

import argparse

from fusechat.flags import HelpFormatter, add_flags, from_args
from fusechat.fuse.options import FuseOptions

EXAMPLE = """example:
  fusechat fuse --pivot-store run/teach/pivot --aligned run/align/qwen --out run/fuse/pair-qwen
  fusechat fuse --pivot-store run/teach/pivot --aligned run/align/qwen run/align/gemma --out run/fuse/multi
"""


def _fuse(args: argparse.Namespace) -> int:
    from fusechat.fuse.stage import fuse

    opts = from_args(FuseOptions, args)
    print(fuse(args.pivot_store, args.aligned, args.out, method=opts.method, overwrite=args.overwrite))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `fuse` subcommand."""
    f = subparsers.add_parser(
        "fuse",
        help="build one target's training targets from the pivot and aligned stores",
        description="Combine the pivot's teacher store with one aligned store (a pairwise target) or several "
        "(the Multi target) into the training targets `fusechat train` reads.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    f.add_argument("--pivot-store", required=True, help="the pivot model's teacher store")
    f.add_argument("--aligned", required=True, nargs="+", help="aligned store(s): one for pairwise, all for Multi")
    f.add_argument("--out", required=True, help="output directory (the training targets)")
    add_flags(f, FuseOptions)
    f.add_argument("--overwrite", action="store_true", help="replace an --out fused from other inputs or a method")
    f.set_defaults(func=_fuse)
