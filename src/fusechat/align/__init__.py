"""Token alignment, vocabulary maps and projection of a source store onto the pivot (see docs/align.md)."""

from __future__ import annotations

from fusechat.align.stage import align

__all__ = ["align"]

# `fusechat.align(...)` calls fusechat.align.stage.align: the package is callable (fusechat/_stage_package.py).
from fusechat._stage_package import make_callable  # noqa: E402

make_callable(__name__, "fusechat.align.stage", "align")
