"""Turn a recipe into the pipeline's steps: which stage runs on what, writing where.

The layout of a run directory is decided here and nowhere else:
```
WORKDIR/data/{train,heldout}.jsonl   the corpus as OpenAI-style chats, gathered from the recipe's sources
WORKDIR/conversations/{train,heldout} prepared with the pivot's chat template
WORKDIR/teach/{pivot,SOURCE}          top-k stores
WORKDIR/align/SOURCE                  each source in the pivot's positions and vocabulary
WORKDIR/fuse/{pair-SOURCE,multi}      training targets
WORKDIR/train/{clm,pair-SOURCE,multi}-sSEED   checkpoints
WORKDIR/merge/METHOD-sSEED            merged checkpoints
WORKDIR/eval                          scores
WORKDIR/report                        report.md, report.html, plots
```
"""

from __future__ import annotations

from pathlib import Path

from fusechat.errors import FusechatError
from fusechat.run import stages
from fusechat.run.content import ContentHashes, model_identity, relative
from fusechat.run.pipeline import Step
from fusechat.run.recipe import Recipe
from fusechat.run.report import ReportInputs


def target_names(recipe: Recipe) -> list[str]:
    names = [f"pair-{s.name}" for s in recipe.sources] if recipe.fuse.pairwise else []
    return names + (["multi"] if recipe.fuse.multi and len(recipe.sources) > 1 else [])


def merged_targets(recipe: Recipe) -> list[str]:
    return [t for t in target_names(recipe) if recipe.merge.targets == "pairwise+multi" or t != "multi"]


def check_merges(recipe: Recipe) -> None:
    """Validate each merge method's parameters against the targets it will merge, as the merge step will, so a
    bad value fails before the teacher pass and the training runs instead of after them."""
    targets = [f"train/{t}" for t in merged_targets(recipe)]
    for i, m in enumerate(recipe.merge.methods):
        try:
            stages.merge_config(m, "pivot", targets)
        except FusechatError as e:
            raise FusechatError(f"merge.methods[{i}] ({m.method}): {str(e).removeprefix('config: ')}") from None


def report_rows(recipe: Recipe) -> list[dict]:
    """The report table's rows in the paper's order: sources, pivot, CLM-only, pairwise, Multi, merges (per seed)."""
    rows = [{"model": s.name, "group": "source", "label": f"source: {s.name}"} for s in recipe.sources]
    rows.append({"model": "pivot", "group": "pivot", "label": "pivot"})
    for seed in recipe.train.seeds:
        tag = f"-s{seed}"
        same = {"seed": seed}
        if recipe.train.clm_baseline:
            rows.append({"model": f"clm{tag}", "group": "clm", "label": f"CLM only{tag}", "name": "CLM only", **same})
        for t in target_names(recipe):
            group = "multi" if t == "multi" else "pairwise"
            rows.append({"model": f"{t}{tag}", "group": group, "label": f"{t}{tag}", "name": t, **same})
        for m in recipe.merge.methods:
            merged = {"model": f"{m.method}{tag}", "group": "merge", "label": f"{m.method}{tag}", "name": m.method}
            rows.append({**merged, "method": m.method, **same})
    return rows


def _report_inputs(recipe: Recipe, work: Path, steps: list[Step]) -> ReportInputs:
    outs = {step.name: step.out for step in steps}
    varm = sorted(out for name, out in outs.items() if name.startswith("merge/varm-"))
    return ReportInputs(
        title=f"fusechat run `{recipe.name}`",
        settings={
            "pivot": recipe.pivot,
            "sources": ", ".join(f"{s.name} ({s.model})" for s in recipe.sources),
            "fusion": recipe.fuse.method,
            "lambda": recipe.train.lam,
            "alignment": f"{recipe.align.alignment} / {recipe.align.vocab_map}",
            "seeds": recipe.train.seeds,
        },
        rows=report_rows(recipe),
        scores=outs["evaluate"] / "scores.json",
        fuse={n.removeprefix("fuse/"): o for n, o in outs.items() if n.startswith("fuse/")},
        train={o.name: o for n, o in outs.items() if n.startswith("train/")},
        varm_explain=varm[0] / "explain" if varm else None,
    )


def plan(recipe: Recipe, base: Path, hashes: ContentHashes | None = None) -> list[Step]:
    """The steps of `recipe`, in order; `base` resolves the recipe's relative paths.

    Step settings name inputs by content (run/content.py), never by absolute path or modification time, and the
    run's own outputs by their path inside the workdir: touching, moving or copying a project redoes nothing.
    """
    hashes = hashes or ContentHashes()
    work = (base / recipe.workdir).resolve()

    def model(spec: str) -> str:  # a directory relative to the recipe, or an installed model's name
        return str((base / spec).resolve()) if (base / spec).exists() else spec

    pivot = model(recipe.pivot)
    models = {"pivot": pivot, **{s.name: model(s.model) for s in recipe.sources}}
    specs = {"pivot": recipe.pivot, **{s.name: s.model for s in recipe.sources}}
    ident = {name: model_identity(spec, base, hashes) for name, spec in specs.items()}
    steps: list[Step] = []

    def add(name: str, out: Path, settings: dict, needs: list[str], run) -> None:
        steps.append(Step(name, out, settings, needs, run))

    split = {"train": recipe.data.train, "heldout": recipe.data.heldout}
    template = (base / recipe.data.chat_template).resolve() if recipe.data.chat_template else None
    for part, sources in split.items():
        if not sources:
            continue
        settings = {
            "pivot": ident["pivot"],
            "sources": [s.model_dump() for s in sources],
            "files": [hashes.file(base / s.path) for s in sources if s.kind == "file"],
            "max_length": recipe.data.max_length,
            "on_long": recipe.data.on_long,
        }
        if template:
            settings["chat_template"] = hashes.file(template)
        conv = work / "conversations" / part
        add(
            f"prepare/{part}",
            conv,
            settings,
            [],
            stages.preparer(sources, base, pivot, conv, recipe.data.max_length, recipe.data.on_long, template),
        )
    conv_train = work / "conversations" / "train"
    for name, model_spec in models.items():
        out = work / "teach" / name
        add(
            f"teach/{name}",
            out,
            {**recipe.teach.model_dump(), "model": ident[name]},
            ["prepare/train"],
            stages.teacher(model_spec, conv_train, out, recipe.teach),
        )
    pivot_store = work / "teach" / "pivot"
    for s in recipe.sources:
        out = work / "align" / s.name
        add(
            f"align/{s.name}",
            out,
            recipe.align.model_dump(),
            ["teach/pivot", f"teach/{s.name}"],
            stages.aligner(pivot_store, work / "teach" / s.name, out, recipe.align),
        )
    for target in target_names(recipe):
        members = [s.name for s in recipe.sources] if target == "multi" else [target.removeprefix("pair-")]
        out = work / "fuse" / target
        add(
            f"fuse/{target}",
            out,
            {"method": recipe.fuse.method, "members": members},
            ["teach/pivot", *(f"align/{m}" for m in members)],
            stages.fuser(pivot_store, [work / "align" / m for m in members], out, recipe.fuse.method),
        )
    # Per-run settings: the seed list and the baseline switch say which runs exist, not how one run trains, so
    # adding a seed must not make the runs already trained stale.
    train_settings = recipe.train.model_dump(by_alias=True, exclude={"seeds", "clm_baseline"})
    first_target = target_names(recipe)[0]
    for seed in recipe.train.seeds:
        runs = ([("clm", first_target, True)] if recipe.train.clm_baseline else []) + [
            (t, t, False) for t in target_names(recipe)
        ]
        for label, target, clm_only in runs:
            out = work / "train" / f"{label}-s{seed}"
            add(
                f"train/{label}-s{seed}",
                out,
                {**train_settings, "seed": seed, "clm_only": clm_only, "pivot": ident["pivot"]},
                [f"fuse/{target}"],
                stages.trainer(pivot, work / "fuse" / target, out, recipe.train, seed, clm_only),
            )
        merge_inputs = merged_targets(recipe)
        for m in recipe.merge.methods:
            out = work / "merge" / f"{m.method}-s{seed}"
            add(
                f"merge/{m.method}-s{seed}",
                out,
                {**m.model_dump(), "inputs": merge_inputs, "pivot": ident["pivot"]},
                [f"train/{t}-s{seed}" for t in merge_inputs],
                stages.merger(pivot, [work / "train" / f"{t}-s{seed}" for t in merge_inputs], out, m),
            )
    evaluated = {
        step.name.split("/", 1)[1]: step.out for step in steps if step.name.split("/")[0] in ("train", "merge")
    }
    named = {**ident, **{k: relative(v, work) for k, v in evaluated.items()}}
    evaluated = {**models, **evaluated}
    hashes.save()
    add(
        "evaluate",
        work / "eval",
        {**recipe.evaluate.model_dump(), "models": named},
        [s.name for s in steps if s.name.split("/")[0] in ("train", "merge", "prepare")],
        stages.evaluator(evaluated, work / "conversations" / "heldout", work / "eval", recipe.evaluate),
    )
    add(
        "report",
        work / "report",
        {},
        ["evaluate"],
        stages.reporter(_report_inputs(recipe, work, steps), work / "report"),
    )
    return steps
