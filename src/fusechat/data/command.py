"""`fusechat prepare`: the command-line face of data/prepare.py (arguments only, no logic)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fusechat.data.formats import FORMATS
from fusechat.data.prepare import ON_LONG, prepare


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="render chat data with the pivot's chat template into a conversations directory",
        description=(
            "Read conversations (JSONL, JSON or Parquet; OpenAI 'messages', ShareGPT 'conversations' or "
            "Alpaca), render them with the pivot's chat template, record the supervised assistant spans, "
            "and write DIR/conversations.parquet with DIR/manifest.json."
        ),
    )
    p.add_argument("data", nargs="+", metavar="DATA", help="input files, or a named data set: sharegpt")
    p.add_argument("--pivot", required=True, help="pivot model directory or installed model name")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--max-length", type=int, default=2048, help="pivot tokens per conversation (2048)")
    p.add_argument(
        "--on-long",
        choices=ON_LONG,
        default="truncate",
        help="longer conversations: truncate after the last assistant turn that fits, or drop (truncate)",
    )
    p.add_argument("--skip-invalid", action="store_true", help="skip and count invalid records instead of failing")
    p.add_argument("--chat-template", type=Path, metavar="FILE", help="a Jinja chat template to use instead")
    p.add_argument("--format", choices=("auto", *FORMATS), default="auto", help="input chat format (auto)")
    p.add_argument("--limit", type=int, metavar="N", help="stop once N conversations are kept")
    p.add_argument("--overwrite", action="store_true", help="replace an --out prepared from other inputs or settings")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    out = prepare(
        args.data,
        args.pivot,
        args.out,
        max_length=args.max_length,
        on_long=args.on_long,
        skip_invalid=args.skip_invalid,
        chat_template=args.chat_template,
        fmt=args.format,
        limit=args.limit,
        overwrite=args.overwrite,
    )
    print(out)
    return 0
