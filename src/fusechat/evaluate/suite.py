"""`evaluate`: run a suite of tasks over several models, from cache where possible, and write scores.json.

Everything is checked before any model is loaded (task names, model directories, data). Then, model by model,
each task's cached result is used if the checkpoint and the task's settings are unchanged; the model is loaded
only if some task must run, and freed before the next one. The output directory holds scores.json (model → task
→ value, stderr, n), one JSONL of per-item records per model and task, and MT-Bench answers in FastChat's format.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from fusechat._version import __version__
from fusechat.errors import FusechatError
from fusechat.evaluate.base import Loaded, TaskResult
from fusechat.evaluate.cache import ResultCache, checkpoint_fingerprint
from fusechat.evaluate.tasks import TASKS, EvalOptions, parse_suite, task_key
from fusechat.manifest import (
    atomic_write_bytes,
    atomic_write_json,
    check_output_dir,
    clear_output,
    fingerprint,
    prepare_output_dir,
    settings_check,
    write_manifest,
)
from fusechat.models.load import check_model_dir, load_model, load_tokenizer, resolve_model_dir

STAGE = "evaluate"
# Options that change how the evaluation runs, not its scores.
RUN_ONLY = ("cache_dir", "progress", "device", "batch_size", "batch_tokens", "max_batch", "hash_weights")
log = logging.getLogger(__name__)


def load_for_eval(name: str, model_dir: Path, opts: EvalOptions) -> Loaded:
    """Load a model for evaluation and check that our backbone + head path reproduces its logits."""
    import torch

    from fusechat.teacher.scoring import check_head, model_parts
    from fusechat.teacher.teach import pick_device, pick_dtype

    device = pick_device(opts.device)
    tokenizer = load_tokenizer(model_dir, trust_remote_code=opts.trust_remote_code)
    model = load_model(
        model_dir,
        dtype=pick_dtype(opts.dtype, device),
        device=device,
        trust_remote_code=opts.trust_remote_code,
        allow_pickle=opts.allow_pickle,
    ).eval()
    backbone, head = model_parts(model)
    check_head(model, backbone, head, torch.tensor([tokenizer("Hello, world.")["input_ids"]], device=device))
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    limit = getattr(text, "max_position_embeddings", None) or opts.max_tokens
    return Loaded(name, model, tokenizer, backbone, head, device, min(int(limit), opts.max_tokens))


def _check_names(models: dict[str, str | os.PathLike], allow_pickle: bool = False) -> dict[str, Path]:
    dirs = {}
    for name, spec in models.items():
        if not name or "/" in name or name.startswith("."):
            raise FusechatError(f"model name {name!r}: use a plain name (no '/'), e.g. NAME=PATH")
        path = resolve_model_dir(spec)
        check_model_dir(path, allow_pickle)
        dirs[name] = path
    if not dirs:
        raise FusechatError("evaluate: give at least one model")
    return dirs


def _write_items(out: Path, model: str, task: str, items: list[dict]) -> None:
    (out / model).mkdir(parents=True, exist_ok=True)
    blob = "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items)
    atomic_write_bytes(out / model / f"{task}.jsonl", blob.encode())


def evaluate(
    models: dict[str, str | os.PathLike],
    suite: list[str] | str,
    out: str | os.PathLike,
    overwrite: bool = False,
    **opts: Any,
) -> dict:
    """Evaluate each model (name → directory or installed name) on `suite`; write and return scores.

    Options are the fields of `EvalOptions` (conversations, limits, gsm_seed, max_new_tokens, batch_size,
    cache_dir, judge_url, judge_model, ...). Returns {model: {task: {metric, value, stderr, n, ...}}}.
    An `out` holding the scores of other models or settings is refused unless `overwrite`.
    """
    try:
        options = EvalOptions(**opts)
    except TypeError as e:
        raise FusechatError(f"evaluate: {e}") from None
    names = parse_suite(suite)
    check_output_dir(out, STAGE)  # a folder of the user's own is refused before any data or model is read
    dirs = _check_names(models, options.allow_pickle)
    # What decides the scores (the models by where they are: their weights are checked by the result cache).
    fp = fingerprint(
        {
            "suite": names,
            "models": {k: str(Path(v).resolve()) for k, v in dirs.items()},
            "options": {k: v for k, v in vars(options).items() if k not in RUN_ONLY},
        }
    )
    from fusechat.models.packages import cache_dir

    cache = ResultCache(options.cache_dir or cache_dir() / "eval")
    judge = None
    if "mtbench" in names:
        from fusechat.evaluate.mtbench import JudgeConfig

        judge = JudgeConfig.from_env(options.judge_url, options.judge_model)
    data = {}
    for name in names:  # every task's data before any model: bad input fails before compute
        limit = options.limits.get(name, TASKS[name].default_limit)
        data[name] = (TASKS[name].load(options, limit), limit)
    out = prepare_output_dir(out, STAGE)
    if settings_check(out, STAGE, fp, overwrite) == "replace":
        clear_output(out)
    header = {"stage": STAGE, "fusechat_version": __version__, "fingerprint": fp, "suite": names, "models": {}}
    write_manifest(out, header, complete=False)
    scores: dict[str, dict] = {}
    for model_name, model_dir in dirs.items():
        fp = checkpoint_fingerprint(model_dir, options.hash_weights)
        header["models"][model_name] = {"dir": str(Path(model_dir).resolve()), "fingerprint": fp}
        results: dict[str, dict] = {}
        loaded = None
        for name in names:
            task, (task_data, limit) = TASKS[name], data[name]
            key = task_key(task, task_data, options, limit)
            hit = cache.get(fp, name, key)
            if hit is None:
                if loaded is None:
                    log.info("loading %s from %s", model_name, model_dir)
                    loaded = load_for_eval(model_name, model_dir, options)
                start = time.perf_counter()
                result: TaskResult = task.run(loaded, task_data, options)
                summary = {**result.summary(), "seconds": round(time.perf_counter() - start, 2)}
                hit = {"summary": summary, "items": result.items}
                cache.put(fp, name, key, hit)
                log.info("%s %s: %s = %.4g (%.1f s)", model_name, name, result.metric, result.value, summary["seconds"])
            else:
                log.info("%s %s: cached", model_name, name)
            results[name] = dict(hit["summary"])
            _write_items(out, model_name, name, hit["items"])
            if name == "mtbench":
                results[name].update(_mtbench_outputs(out, model_name, hit["items"], judge, cache, fp, key))
        scores[model_name] = results
        del loaded
        gc.collect()
    atomic_write_json(out / "scores.json", scores)
    write_manifest(out, header, complete=True)
    return scores


def _mtbench_outputs(out: Path, model: str, items: list[dict], judge, cache: ResultCache, fp: str, key: dict) -> dict:
    from fusechat.evaluate import datasets
    from fusechat.evaluate.base import mean_se
    from fusechat.evaluate.mtbench import judge_answers, write_model_answers

    path = write_model_answers(items, model, out / "mtbench" / "model_answer" / f"{model}.jsonl")
    extra: dict[str, Any] = {"answers": str(path.relative_to(out))}
    if judge is None:
        log.info("MT-Bench answers of %s written; judging skipped (no judge endpoint configured)", model)
        return extra | {"judged": False, "judge": "skipped: no judge endpoint configured"}
    jkey = {**key, "judge_url": judge.base_url, "judge_model": judge.model}
    hit = cache.get(fp, "mtbench-judge", jkey)
    if hit is None:
        judgments, _, _ = judge_answers(
            judge, items, datasets.mtbench_questions(), datasets.judge_prompts(), datasets.mtbench_references()
        )
        hit = {"judgments": judgments}
        cache.put(fp, "mtbench-judge", jkey, hit)
    ratings = [j["score"] for j in hit["judgments"] if j["score"] >= 0]
    mean, se = mean_se(ratings)
    _write_items(out, model, "mtbench-judgments", hit["judgments"])
    failed = sum(j["score"] < 0 for j in hit["judgments"])
    return extra | {
        "judged": True,
        "judge": judge.model,
        "metric": "judge_score",
        "value": mean,
        "stderr": se,
        "n_ratings": len(ratings),
        "unparsed": failed,
    }
