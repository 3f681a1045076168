"""Command-line entry point of the fusion stage: `fusechat fuse`."""

from __future__ import annotations

import argparse

from fusechat.fuse.methods import METHODS


def _fuse(args: argparse.Namespace) -> int:
    from fusechat.fuse.stage import fuse

    print(fuse(args.pivot_store, args.aligned, args.out, method=args.method, overwrite=args.overwrite))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `fuse` subcommand."""
    f = subparsers.add_parser("fuse", help="build one target's training targets from the pivot and aligned stores")
    f.add_argument("--pivot-store", required=True, help="the pivot model's teacher store")
    f.add_argument("--aligned", required=True, nargs="+", help="aligned store(s): one for pairwise, all for Multi")
    f.add_argument("--method", default="mince", choices=METHODS, help="fusion function")
    f.add_argument("--out", required=True, help="output directory (the training targets)")
    f.add_argument("--overwrite", action="store_true", help="replace an --out fused from other inputs or a method")
    f.set_defaults(func=_fuse)
