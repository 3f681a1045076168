"""Fusion: one target model's training targets, from the pivot's and the sources' aligned distributions."""

from __future__ import annotations

from fusechat.fuse.methods import METHODS
from fusechat.fuse.stage import fuse

__all__ = ["METHODS", "fuse"]
