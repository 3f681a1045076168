"""`fusechat merge CONFIG.yml OUT`: merge checkpoints from a mergekit-style YAML config (VaRM, baselines)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "merge",
        help="merge checkpoints of one architecture (varm, linear, slerp, task_arithmetic, ties, dare, sce)",
        description=__doc__,
    )
    p.add_argument("config", help="merge config (mergekit YAML schema; see docs/merging.md)")
    p.add_argument("out", help="output directory (must not exist)")
    p.add_argument("--explain", action="store_true", help="also write VaRM's weights per tensor and a plot")
    p.add_argument("--allow-pickle", action="store_true", help="read pickled .bin checkpoints (runs their code)")
    p.add_argument("--seed", type=int, default=0, help="seed of DARE's random masks (default 0)")
    p.add_argument(
        "--max-shard-size",
        type=float,
        default=5e9,
        metavar="BYTES",
        help="largest output shard (default 5e9)",
    )
    p.add_argument(
        "--mergekit-arithmetic",
        action="store_true",
        help="compute TIES/DARE/TA/SCE in the config's dtype like mergekit (default: fp32, cast at the end)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads for tensors the compiled kernels do not cover (default 1)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fusechat.merge.engine import merge

    out = merge(
        args.config,
        args.out,
        allow_pickle=args.allow_pickle,
        seed=args.seed,
        explain_weights=args.explain,
        max_shard_bytes=int(args.max_shard_size),
        mergekit_arithmetic=args.mergekit_arithmetic,
        threads=args.threads,
    )
    log.info("merged into %s", out)
    print(out)
    return 0
