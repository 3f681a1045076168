"""The prepare stage's options, declared once: `fusechat prepare`'s flags and the recipe's `data:` section."""

from __future__ import annotations

from typing import Literal

from fusechat.data.formats import FORMATS
from fusechat.data.prepare import ON_LONG
from fusechat.flags import Options, option


class PrepareOptions(Options):
    """What a recipe's `data:` section and `fusechat prepare` both set."""

    max_length: int = option(2048, "pivot tokens per conversation (the paper's)", ge=16, le=1_000_000)
    on_long: Literal[ON_LONG] = option(  # type: ignore[valid-type]
        "truncate", "a longer conversation: truncate after the last assistant turn that fits, or drop it"
    )


class PrepareCommandOptions(PrepareOptions):
    """`fusechat prepare`'s options beyond the recipe's (a recipe's files are always read with --skip-invalid)."""

    format: Literal["auto", *FORMATS] = option("auto", "input chat format")  # type: ignore[valid-type]
    limit: int | None = option(None, "stop once N conversations are kept", ge=1)
    skip_invalid: bool = option(False, "skip and count invalid records instead of failing")
