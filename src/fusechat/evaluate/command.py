"""`fusechat evaluate`: score models on a suite of tasks and print the table."""

from __future__ import annotations

import argparse
from pathlib import Path

from fusechat.errors import FusechatError
from fusechat.evaluate.options import EvaluateCommandOptions
from fusechat.flags import HelpFormatter, add_flags, from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate models: bits per byte, exact match, multiple choice, MT-Bench",
        description="Score one or more models on a suite of tasks (held-out bits per byte, GSM exact match, "
        "multiple choice, MT-Bench answers) and print the table; scores.json and per-item JSONL go to --out. "
        "Results are cached per model and task, so adding a model scores only that model.",
        epilog="example:\n  fusechat evaluate pivot=smollm2-135m-instruct fused=runs/demo/merge/varm-s0 \\\n"
        "      --suite bpb,gsm_bpb --conversations runs/demo/conversations/heldout --out eval/\n",
        formatter_class=HelpFormatter,
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="model directory or installed name, or NAME=MODEL")
    p.add_argument("--out", required=True, help="output directory (scores.json, per-item JSONL, MT-Bench answers)")
    p.add_argument("--overwrite", action="store_true", help="replace an --out scored with other models or settings")
    p.add_argument("--conversations", help="held-out conversations (a `fusechat prepare` output) for bpb")
    add_flags(p, EvaluateCommandOptions)
    p.set_defaults(func=_run)


def parse_models(specs: list[str]) -> dict[str, str]:
    """`NAME=PATH` or `PATH` (named after its last path component) → {name: path}; names must be unique."""
    models: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec.rstrip("/")).name, spec
        if name in models:
            raise FusechatError(f"model name {name!r} given twice; name them NAME=PATH")
        models[name] = path
    return models


def parse_limits(value: str | None, tasks: list[str]) -> dict[str, int]:
    if not value:
        return {}
    limits: dict[str, int] = {}
    try:
        if "=" not in value:
            return {t: int(value) for t in tasks}
        for part in value.split(","):
            task, _, n = part.partition("=")
            limits[task.strip()] = int(n)
    except ValueError:
        raise FusechatError(f"--limit {value!r}: expected N or TASK=N,..., e.g. gsm=50,hhh=100") from None
    bad = [t for t in limits if t not in tasks]
    if bad:
        raise FusechatError(f"--limit: {bad[0]!r} is not in --suite ({', '.join(tasks)})")
    if any(n < 1 for n in limits.values()):
        raise FusechatError(f"--limit {value!r}: limits must be at least 1")
    return limits


def _run(args: argparse.Namespace) -> int:
    from fusechat.evaluate.report_table import format_scores
    from fusechat.evaluate.suite import evaluate
    from fusechat.evaluate.tasks import EvalOptions, parse_suite

    flags = from_args(EvaluateCommandOptions, args).model_dump()
    suite = parse_suite(flags.pop("suite"))
    limits, gsm_seed, quiet = parse_limits(flags.pop("limit"), suite), flags.pop("gsm_seed"), flags.pop("no_progress")
    opts = {**flags, "conversations": args.conversations, "limits": limits, "progress": not quiet}
    if gsm_seed is not None:
        opts["gsm_seed"] = gsm_seed
    EvalOptions(**opts)  # validate names early
    scores = evaluate(parse_models(args.models), suite, Path(args.out), overwrite=args.overwrite, **opts)
    print(format_scores(scores))
    print(f"scores: {Path(args.out) / 'scores.json'}")
    return 0
