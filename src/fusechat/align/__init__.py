"""Token alignment, vocabulary maps and projection of a source store onto the pivot (see docs/align.md)."""

from __future__ import annotations

from fusechat.align.stage import align

__all__ = ["align"]
