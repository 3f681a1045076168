"""Command-line entry point of the alignment stage: `fusechat align`."""

from __future__ import annotations

import argparse

from fusechat.align.maps import MAPS
from fusechat.align.stage import ALIGNMENTS


def _align(args: argparse.Namespace) -> int:
    from fusechat.align.stage import align

    out = align(
        args.pivot_store,
        args.source_store,
        args.out,
        alignment=args.alignment,
        vocab_map=args.vocab_map,
        overwrite=args.overwrite,
    )
    print(out)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `align` subcommand."""
    p = subparsers.add_parser("align", help="move a source's teacher store onto the pivot's tokens and vocabulary")
    p.add_argument("--pivot-store", required=True, help="the pivot model's teacher store")
    p.add_argument("--source-store", required=True, help="the source model's teacher store (same conversations)")
    p.add_argument("--out", required=True, help="output directory (the aligned store)")
    p.add_argument("--alignment", default="offsets", choices=ALIGNMENTS, help="token alignment (default: offsets)")
    p.add_argument("--vocab-map", default="exact", choices=MAPS, help="vocabulary map (default: exact)")
    p.add_argument("--overwrite", action="store_true", help="replace an --out aligned from other inputs or settings")
    p.set_defaults(func=_align)
