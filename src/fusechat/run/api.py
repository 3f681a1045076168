"""`run(recipe)`: the whole pipeline of a recipe from Python, as `fusechat run RECIPE` runs it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def run(
    recipe: str | os.PathLike,
    workdir: str | os.PathLike | None = None,
    *,
    echo: Callable[[str], None] = print,
) -> Path:
    """Run every step of the recipe, skipping what is done and resuming what is not; return the run directory.

    `workdir` overrides the recipe's `workdir:` (resolved against the current directory). Models named by asset
    are installed into the cache first; every model, data file and merge config is checked before any stage
    runs. The report, when the recipe asks for one, is `<run directory>/report/report.md`. `echo` receives the
    step-by-step progress lines (`print` by default).
    """
    from fusechat.models import packages
    from fusechat.run.command import _check_template, _pipeline

    recipe_obj, base, pipe, to_install = _pipeline(recipe, None if workdir is None else str(workdir))
    for name in to_install:
        packages.install(name)
    _check_template(recipe_obj, base, recipe)  # an installed-by-name pivot is only on disk now
    pipe.run(echo=echo)
    return pipe.workdir
