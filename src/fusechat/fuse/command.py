"""Command-line entry point of the fusion stage: `fusechat fuse`."""

from __future__ import annotations

from fusechat.flags import StageCommand, arg
from fusechat.fuse.options import FuseOptions

COMMAND = StageCommand(
    "fuse",
    help="build one target's training targets from the pivot and aligned stores",
    description="Combine the pivot's teacher store with one aligned store (a pairwise target) or several "
    "(the Multi target) into the training targets `fusechat train` reads.",
    example="""example:
  fusechat fuse --pivot-store run/teach/pivot --aligned run/align/qwen --out run/fuse/pair-qwen
  fusechat fuse --pivot-store run/teach/pivot --aligned run/align/qwen run/align/gemma --out run/fuse/multi
""",
    stage="fusechat.fuse.stage:fuse",
    inputs=(
        arg("--pivot-store", required=True, help="the pivot model's teacher store"),
        arg("--aligned", required=True, nargs="+", help="aligned store(s): one for pairwise, all for Multi"),
        arg("--out", required=True, help="output directory (the training targets)"),
    ),
    options=FuseOptions,
    overwrite="replace an --out fused from other inputs or a method",
)
register = COMMAND.register
