"""`fusechat merge CONFIG.yml OUT`: merge checkpoints from a mergekit-style YAML config (VaRM, baselines)."""

from __future__ import annotations

from fusechat.flags import StageCommand, arg
from fusechat.merge.options import MergeOptions
from fusechat.merge.registry import NAMES

COMMAND = StageCommand(
    "merge",
    help=f"merge checkpoints of one architecture ({', '.join(NAMES)})",
    description=__doc__,
    example="""example:
  fusechat merge varm.yml run/merge/varm          (varm.yml: merge_method: varm, base_model: PIVOT, models: [...])
  fusechat merge mergekit/examples/ties.yml out/ties --max-shard-size 2e9 --threads 2
""",
    stage="fusechat.merge.engine:merge",
    inputs=(
        arg("config", help="merge config (mergekit YAML schema; see docs/merging.md)"),
        arg("out", help="output directory (must not exist)"),
    ),
    options=MergeOptions,
    rename={"explain": "explain_weights", "max_shard_size": "max_shard_bytes"},
    adjust=lambda args, kwargs: {**kwargs, "max_shard_bytes": int(kwargs["max_shard_bytes"])},
)
register = COMMAND.register
