"""`fusechat prepare`: the command-line face of data/prepare.py (arguments only, no logic)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fusechat.data.options import PrepareCommandOptions
from fusechat.flags import HelpFormatter, add_flags, from_args

EXAMPLE = """example:
  fusechat prepare chats.jsonl --pivot smollm2-135m-instruct --out run/conversations --max-length 2048
  fusechat prepare sharegpt --pivot ./my-pivot --out run/conversations --limit 1000 --skip-invalid
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="render chat data with the pivot's chat template into a conversations directory",
        description=(
            "Read conversations (JSONL or JSON, optionally gzip/zstd/bzip2/xz-compressed, Parquet, or a `datasets` "
            "save_to_disk directory; OpenAI/TRL 'messages', TRL 'prompt'/'completion', ShareGPT 'conversations' "
            "or Alpaca), render them with the pivot's chat template, record the supervised assistant spans, "
            "and write DIR/conversations.parquet with DIR/manifest.json."
        ),
        epilog=EXAMPLE,
        formatter_class=HelpFormatter,
    )
    p.add_argument("data", nargs="+", metavar="DATA", help="files, datasets directories, or a named data set: sharegpt")
    p.add_argument("--pivot", required=True, help="pivot model: a directory, an installed name, or a hub id")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--chat-template", type=Path, metavar="FILE", help="a Jinja chat template to use instead")
    add_flags(p, PrepareCommandOptions)
    p.add_argument("--overwrite", action="store_true", help="replace an --out prepared from other inputs or settings")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fusechat.data.prepare import prepare

    opts = from_args(PrepareCommandOptions, args)
    out = prepare(
        args.data,
        args.pivot,
        args.out,
        max_length=opts.max_length,
        on_long=opts.on_long,
        skip_invalid=opts.skip_invalid,
        chat_template=args.chat_template,
        fmt=opts.format,
        limit=opts.limit,
        overwrite=args.overwrite,
    )
    print(out)
    return 0
