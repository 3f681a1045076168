"""`fusechat merge`'s options, declared once (a recipe's merges take their settings from the merge config)."""

from __future__ import annotations

from fusechat.flags import Options, option


class MergeOptions(Options):
    explain: bool = option(False, "also write VaRM's weights per tensor and a plot")
    allow_pickle: bool = option(False, "read pickled .bin checkpoints (runs their code)")
    seed: int = option(0, "seed of DARE's random masks", ge=0)
    max_shard_size: float = option(5e9, "largest output shard, in bytes", ge=1)
    mergekit_arithmetic: bool = option(
        False, "compute TIES/DARE/TA/SCE in the config's dtype like mergekit (off: fp32, cast at the end)"
    )
    threads: int = option(1, "torch intra-op threads for tensors the compiled kernels do not cover", ge=1)
