"""The fusion stage's options, declared once: `fusechat fuse`'s flags and the recipe's `fuse:` section."""

from __future__ import annotations

from typing import Literal

from fusechat.flags import Options, option
from fusechat.fuse.methods import METHODS


class FuseOptions(Options):
    method: Literal[METHODS] = option("mince", "fusion function (the paper's MinCE)")  # type: ignore[valid-type]
