"""The alignment stage's options, declared once: `fusechat align`'s flags and the recipe's `align:` section."""

from __future__ import annotations

from typing import Literal

from fusechat.align.maps import MAPS
from fusechat.align.stage import ALIGNMENTS
from fusechat.flags import Options, option


class AlignOptions(Options):
    alignment: Literal[ALIGNMENTS] = option("offsets", "token alignment: exact character offsets, or DTW")  # type: ignore[valid-type]
    vocab_map: Literal[MAPS] = option("exact", "vocabulary map from a source's tokens to the pivot's")  # type: ignore[valid-type]
