"""fusechat: knowledge fusion of chat LLMs with different architectures and tokenizers (FuseChat).

The Python API is one function per stage, loaded on first use so that `import fusechat` stays light:

    from fusechat import prepare, teach, align, fuse, train, merge, evaluate, run

See docs/api.md. Six of these names are also subpackages (`fusechat.train.api`, ...); those packages are
callable and call their stage function (see `_stage_package.py`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fusechat._version import __version__

# name -> (module, attribute) of each stage function
API = {
    "prepare": ("fusechat.data.prepare", "prepare"),
    "teach": ("fusechat.teacher.teach", "teach"),
    "align": ("fusechat.align", "align"),
    "fuse": ("fusechat.fuse", "fuse"),
    "train": ("fusechat.train", "train"),
    "merge": ("fusechat.merge", "merge"),
    "evaluate": ("fusechat.evaluate", "evaluate"),
    "run": ("fusechat.run", "run"),
}
__all__ = ["__version__", "align", "evaluate", "fuse", "merge", "prepare", "run", "teach", "train"]

if TYPE_CHECKING:
    from fusechat.align.stage import align
    from fusechat.data.prepare import prepare
    from fusechat.evaluate.suite import evaluate
    from fusechat.fuse.stage import fuse
    from fusechat.merge.engine import merge
    from fusechat.run.api import run
    from fusechat.teacher.teach import teach
    from fusechat.train.api import train


def __getattr__(name: str) -> Any:  # PEP 562: a stage's modules are imported when its name is first used
    if name not in API:
        raise AttributeError(f"module 'fusechat' has no attribute {name!r}")
    module, attr = API[name]
    if module == f"fusechat.{attr}":  # a callable stage package (it is also the attribute once imported)
        return importlib.import_module(module)
    return getattr(importlib.import_module(module), attr)


def __dir__() -> list[str]:
    return sorted({*globals(), *API})
