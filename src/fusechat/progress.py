"""The progress bar of the stages that run longer than a few seconds (align, fuse, merge; teach has its own).

A bar is drawn only when stderr is a terminal (tqdm's `disable=None`): in a log file, CI or a test's captured
stderr it would only add lines, and the stages already log one line per finished shard.
"""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


def progress_bar(total: int | float | None, desc: str, unit: str = "it", **options: Any) -> tqdm:
    """A tqdm bar on stderr, shown on a terminal only, redrawn at most once a second."""
    return tqdm(total=total, desc=desc, unit=unit, disable=None, mininterval=1.0, dynamic_ncols=True, **options)
