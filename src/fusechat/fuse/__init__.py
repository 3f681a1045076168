"""Fusion: one target model's training targets, from the pivot's and the sources' aligned distributions."""

from __future__ import annotations

from fusechat.fuse.methods import METHODS
from fusechat.fuse.stage import fuse

__all__ = ["METHODS", "fuse"]

# `fusechat.fuse(...)` calls fusechat.fuse.stage.fuse: the package is callable (fusechat/_stage_package.py).
from fusechat._stage_package import make_callable  # noqa: E402

make_callable(__name__, "fusechat.fuse.stage", "fuse")
