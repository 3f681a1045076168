"""`fusechat prepare`: the command-line face of data/prepare.py (arguments only, no logic)."""

from __future__ import annotations

from pathlib import Path

from fusechat.data.options import PrepareCommandOptions
from fusechat.flags import StageCommand, arg

COMMAND = StageCommand(
    "prepare",
    help="render chat data with the pivot's chat template into a conversations directory",
    description=(
        "Read conversations (JSONL or JSON, optionally gzip/zstd/bzip2/xz-compressed, Parquet, or a `datasets` "
        "save_to_disk directory; OpenAI/TRL 'messages', TRL 'prompt'/'completion', ShareGPT 'conversations' "
        "or Alpaca), render them with the pivot's chat template, record the supervised assistant spans, "
        "and write DIR/conversations.parquet with DIR/manifest.json."
    ),
    example="""example:
  fusechat prepare chats.jsonl --pivot smollm2-135m-instruct --out run/conversations --max-length 2048
  fusechat prepare sharegpt --pivot ./my-pivot --out run/conversations --limit 1000 --skip-invalid
""",
    stage="fusechat.data.prepare:prepare",
    inputs=(
        arg("data", nargs="+", metavar="DATA", help="files, datasets directories, or a named data set: sharegpt"),
        arg("--pivot", required=True, help="pivot model: a directory, an installed name, or a hub id"),
        arg("--out", required=True, type=Path, help="output directory"),
    ),
    extras=(arg("--chat-template", type=Path, metavar="FILE", help="a Jinja chat template to use instead"),),
    options=PrepareCommandOptions,
    overwrite="replace an --out prepared from other inputs or settings",
    rename={"format": "fmt"},
)
register = COMMAND.register
