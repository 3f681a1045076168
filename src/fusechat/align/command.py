"""Command-line entry point of the alignment stage: `fusechat align`."""

from __future__ import annotations

from fusechat.align.options import AlignOptions
from fusechat.flags import StageCommand, arg

COMMAND = StageCommand(
    "align",
    help="move a source's teacher store onto the pivot's tokens and vocabulary",
    description="Map a source model's teacher store (its top-k next-token distributions) onto the pivot's "
    "token positions and vocabulary, so it can be fused with the pivot's own store.",
    example="""example:
  fusechat align --pivot-store run/teach/pivot --source-store run/teach/qwen --out run/align/qwen --vocab-map mined
""",
    stage="fusechat.align.stage:align",
    inputs=(
        arg("--pivot-store", required=True, help="the pivot model's teacher store"),
        arg("--source-store", required=True, help="the source model's teacher store (same conversations)"),
        arg("--out", required=True, help="output directory (the aligned store)"),
    ),
    options=AlignOptions,
    overwrite="replace an --out aligned from other inputs or settings",
)
register = COMMAND.register
