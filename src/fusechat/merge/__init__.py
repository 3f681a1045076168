"""Parameter-space merging of checkpoints of one architecture: VaRM (FuseChat's) and mergekit's methods.

`merge(config, out)` streams a merge described by a mergekit-style config into a new Hugging Face directory;
`load_config` and `simple_config` build validated configs. Methods are pure tensor functions in `methods/`,
listed in `registry.METHODS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fusechat.merge.config import MergeConfig, load_config, simple_config
    from fusechat.merge.engine import merge

__all__ = ["MergeConfig", "load_config", "merge", "simple_config"]


def __getattr__(name: str) -> Any:  # lazy: importing the package costs nothing until it is used
    if name == "merge":
        from fusechat.merge.engine import merge

        return merge
    if name in ("MergeConfig", "load_config", "simple_config"):
        from fusechat.merge import config

        return getattr(config, name)
    raise AttributeError(name)


# `fusechat.merge(...)` calls fusechat.merge.engine.merge: the package is callable (fusechat/_stage_package.py).
from fusechat._stage_package import make_callable  # noqa: E402

make_callable(__name__, "fusechat.merge.engine", "merge")
