"""`run(recipe)`: the whole pipeline of a recipe from Python, as `fusechat run RECIPE` runs it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fusechat.errors import FusechatError
from fusechat.run.recipe import Recipe


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

    recipe_obj, base, pipe, to_install = load_pipeline(recipe, None if workdir is None else str(workdir))
    for name in to_install:
        packages.install(name)
    check_template(recipe_obj, base, recipe)  # an installed-by-name pivot is only on disk now
    pipe.run(echo=echo)
    return pipe.workdir


def load_pipeline(recipe_path: str | Path, workdir: str | None = None):
    from fusechat.models import packages
    from fusechat.models.load import resolve_model_dir
    from fusechat.run.pipeline import Pipeline
    from fusechat.run.plan import check_merges, plan
    from fusechat.run.recipe import check_data_files, load_recipe

    recipe, base = load_recipe(recipe_path)
    if workdir is not None:
        recipe = recipe.model_copy(update={"workdir": str(Path(workdir).resolve())})
    keys = {"pivot": recipe.pivot, **{f"sources[{i}].model": s.model for i, s in enumerate(recipe.sources)}}
    for key, model in keys.items():  # before any stage runs: a typo here must not cost a teacher pass
        if not (base / model).exists() and model not in packages.ASSETS:
            try:  # a hub id: found in the Hugging Face cache (or fetched) now
                resolve_model_dir(model)
            except FusechatError as e:
                raise FusechatError(f"{recipe_path}: {key}: {e}") from None
    check_data_files(recipe, base, recipe_path)
    try:
        check_merges(recipe)
    except FusechatError as e:
        raise FusechatError(f"{recipe_path}: {e}") from None
    check_template(recipe, base, recipe_path)
    pipe = Pipeline((base / recipe.workdir).resolve(), plan(recipe, base))
    return recipe, base, pipe, [m for m in keys.values() if m in packages.ASSETS and not (base / m).exists()]


def check_template(recipe: Recipe, base: Path, recipe_path: str | Path) -> None:
    """Refuse a pivot without a chat template (when the recipe gives none) before any model is loaded."""
    from fusechat.models import packages
    from fusechat.models.load import has_chat_template, resolve_model_dir

    if recipe.data.chat_template:
        template = base / recipe.data.chat_template
        if not template.is_file():
            raise FusechatError(f"{recipe_path}: data.chat_template: {template} is not a file")
        return
    pivot = base / recipe.pivot
    if not pivot.exists():
        pivot = packages.model_dir(recipe.pivot) if recipe.pivot in packages.ASSETS else resolve_model_dir(recipe.pivot)
    if (pivot / "config.json").is_file() and not has_chat_template(pivot):
        raise FusechatError(
            f"{recipe_path}: pivot: {recipe.pivot} has no chat template; name a Jinja template file in "
            "data.chat_template, or use a chat (instruct) model as the pivot"
        )
