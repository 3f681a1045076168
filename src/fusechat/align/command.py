"""Command-line entry point of the alignment stage: `fusechat align`."""

from __future__ import annotations

import argparse

from fusechat.align.options import AlignOptions
from fusechat.flags import HelpFormatter, add_flags, from_args

EXAMPLE = """example:
  fusechat align --pivot-store run/teach/pivot --source-store run/teach/qwen --out run/align/qwen --vocab-map mined
"""


def _align(args: argparse.Namespace) -> int:
    from fusechat.align.stage import align

    opts = from_args(AlignOptions, args)
    out = align(
        args.pivot_store,
        args.source_store,
        args.out,
        alignment=opts.alignment,
        vocab_map=opts.vocab_map,
        overwrite=args.overwrite,
    )
    print(out)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `align` subcommand."""
    p = subparsers.add_parser(
        "align",
        help="move a source's teacher store onto the pivot's tokens and vocabulary",
        description="Map a source model's teacher store (its top-k next-token distributions) onto the pivot's "
        "token positions and vocabulary, so it can be fused with the pivot's own store.",
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--pivot-store", required=True, help="the pivot model's teacher store")
    p.add_argument("--source-store", required=True, help="the source model's teacher store (same conversations)")
    p.add_argument("--out", required=True, help="output directory (the aligned store)")
    add_flags(p, AlignOptions)
    p.add_argument("--overwrite", action="store_true", help="replace an --out aligned from other inputs or settings")
    p.set_defaults(func=_align)
