"""The teacher pass's options, declared once: `fusechat teach`'s flags and the recipe's `teach:` section."""

from __future__ import annotations

from fusechat.flags import Options, option


class TeachOptions(Options):
    """What a recipe's `teach:` section and `fusechat teach` both set."""

    top_k: int = option(10, "next tokens kept per position (the paper's)", ge=1, le=1024)
    batch_tokens: int = option(4096, "batch size x longest length of a scoring batch", ge=16)


class TeachCommandOptions(TeachOptions):
    """`fusechat teach`'s options beyond the recipe's."""

    shard_rows: int = option(256, "conversations per shard (the unit a rerun resumes by)", ge=1)
    # The command sizes its batches from a GPU's free memory unless told; a recipe keeps its fixed default, which
    # its run plan's settings (and so its resume) are keyed on.
    batch_tokens: int | None = option(
        None, "batch size x longest length of a scoring batch (none: from a GPU's free memory, 4096 on a CPU)", ge=16
    )
