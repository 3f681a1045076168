"""The registry of evaluation tasks: what data each reads, which settings decide its result, how it runs.

One explicit table (no registration by import side effect). A task's `settings` are everything that changes its
numbers (data fingerprint, item count, seed, prompt, generation length); they form its cache key. Options that
only change speed (batch sizes, progress) stay out of the key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusechat.errors import FusechatError
from fusechat.evaluate import datasets
from fusechat.evaluate.base import Loaded, TaskResult
from fusechat.evaluate.options import EvaluateCommandOptions
from fusechat.evaluate.prompts import MATH_INSTRUCTION, prompt_format
from fusechat.manifest import fingerprint

_FLAGS = EvaluateCommandOptions()  # the defaults, declared with the command's flags (evaluate/options.py)
PROMPT_VERSION = 2  # bump when a prompt or a grading rule changes: cached results then recompute


@dataclass
class EvalOptions:
    """Everything `evaluate` accepts besides the models, the suite and the output directory."""

    conversations: str | Path | None = None  # a prepared conversations dir, for bpb
    bpb_scope: str = (
        _FLAGS.bpb_scope
    )  # "turn": the supervised spans (content + end-of-turn text); "content": its content
    limits: dict[str, int] = field(default_factory=dict)  # items per task (default: each task's DEFAULT_LIMIT)
    gsm_seed: int = datasets.GSM_EVAL_SEED
    max_new_tokens: int = _FLAGS.max_new_tokens  # exact-match answers
    mtbench_max_new_tokens: int = _FLAGS.mtbench_max_new_tokens
    batch_size: int = _FLAGS.batch_size  # prompts per generation batch
    batch_tokens: int = _FLAGS.batch_tokens  # tokens per scoring batch (batch x longest length)
    max_batch: int = 32
    max_tokens: int = _FLAGS.max_tokens  # longest sequence read, also capped by the model's own limit
    dtype: str = "auto"
    device: str | None = None
    cache_dir: str | Path | None = None  # default: $FUSECHAT_CACHE/eval
    hash_weights: bool = _FLAGS.hash_weights
    judge_url: str | None = None
    judge_model: str | None = None
    progress: bool = True
    trust_remote_code: bool = False  # run a model repository's own Python code (auto_map)
    allow_pickle: bool = False  # read pickled .bin/.pt weights (loading a pickle runs code)


@dataclass
class Task:
    """One task: `load(opts, limit)` reads its data once; `run(loaded, data, opts)` scores one model."""

    name: str
    description: str
    metric: str  # what `value` means in scores.json
    higher_is_better: bool
    default_limit: int | None
    load: Callable[[EvalOptions, int | None], Any]
    data_fingerprint: Callable[[Any], Any]
    run: Callable[[Loaded, Any, EvalOptions], TaskResult]
    settings: Callable[[EvalOptions], dict] = lambda opts: {}


# ---------------------------------------------------------------- bits per byte
def _load_conversations(opts: EvalOptions, limit: int | None):
    from fusechat.data.conversations import Conversations

    if opts.conversations is None:
        raise FusechatError("suite 'bpb' needs held-out conversations: pass --conversations DIR (a `prepare` output)")
    conv = Conversations(opts.conversations)
    n = len(conv) if limit is None else min(limit, len(conv))
    if n == 0:
        raise FusechatError(f"{opts.conversations}: no conversations to score")
    return conv, n


def content_spans(text: str, spans: np.ndarray, messages: list[dict]) -> np.ndarray:
    """The assistant contents inside the supervised spans, without the template's end-of-turn text.

    The end-of-turn marker (`<|im_end|>`) is one special token for a model whose vocabulary has it and several
    ordinary ones for a model whose does not; scoring contents only removes that advantage from the comparison.
    """
    contents = [m["content"].strip() for m in messages if m["role"] == "assistant"]
    out = []
    for (s, e), content in zip(np.asarray(spans).reshape(-1, 2), contents, strict=False):
        at = text.find(content, int(s), int(e)) if content else -1
        out.append([at, at + len(content)] if at >= 0 else [int(s), int(e)])
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def _run_bpb(loaded: Loaded, data, opts: EvalOptions) -> TaskResult:
    conv, n = data
    spans = conv.spans[:n]
    if opts.bpb_scope == "content":
        spans = [content_spans(conv.texts[i], conv.spans[i], conv.messages(i)) for i in range(n)]
    elif opts.bpb_scope != "turn":
        raise FusechatError(f"bpb_scope {opts.bpb_scope!r}: choose 'turn' or 'content'")
    result = _spans_bpb(loaded, opts, "bpb", conv.ids[:n], conv.texts[:n], spans, tokens=True)
    totals = result.extra
    totals.update(scope=opts.bpb_scope, bytes_per_token=totals["n_bytes"] / max(totals["n_tokens"], 1))
    return result


# ---------------------------------------------------------------- exact match
def _math_task(name: str, description: str, loader, default_limit: int) -> Task:
    def run(loaded: Loaded, problems, opts: EvalOptions) -> TaskResult:
        from fusechat.evaluate.exact_match import run_exact_match

        return run_exact_match(
            loaded, problems, opts.max_new_tokens, opts.batch_size, f"{name} {loaded.name}", opts.progress
        )

    return Task(
        name,
        description,
        "exact_match",
        True,
        default_limit,
        loader,
        lambda problems: [(p.id, p.question, p.answer) for p in problems],
        run,
        lambda opts: {"max_new_tokens": opts.max_new_tokens, "prompt": MATH_INSTRUCTION, "v": PROMPT_VERSION},
    )


def _choice_task(name: str, description: str, loader, default_limit: int | None) -> Task:
    def run(loaded: Loaded, items, opts: EvalOptions) -> TaskResult:
        from fusechat.evaluate.choice import run_choice

        return run_choice(
            loaded, items, opts.batch_tokens, opts.max_batch, f"{name} {loaded.name}", progress=opts.progress
        )

    return Task(
        name,
        description,
        "accuracy",
        True,
        default_limit,
        lambda opts, limit: loader(limit),
        lambda items: [(i.id, i.prompt, i.options, i.correct) for i in items],
        run,
        lambda opts: {"v": PROMPT_VERSION},
    )


def _run_solution_bpb(loaded: Loaded, problems, opts: EvalOptions) -> TaskResult:
    """Bits per byte of the reference worked solutions, each after its question in the model's own prompt format.

    Exact match of a small model is often at the floor (SmolLM2-135M solves 0 of 50 GSM-Symbolic problems); the
    likelihood of correct solutions still moves when a target learns from a stronger math source.
    """
    from fusechat.evaluate.exact_match import math_prompt

    texts, spans = [], []
    for p in problems:
        prompt = math_prompt(loaded.tokenizer, p)
        texts.append(prompt + p.solution)
        spans.append(np.array([[len(prompt), len(prompt) + len(p.solution)]], dtype=np.int64))
    ids = [p.id for p in problems]
    return _spans_bpb(loaded, opts, "gsm_bpb", ids, texts, spans, prompt_format=prompt_format(loaded.tokenizer))


def _run_code_bpb(loaded: Loaded, problems, opts: EvalOptions) -> TaskResult:
    """Bits per byte of HumanEval reference bodies, inside the reply to the function to complete.

    The reply is the training chats' (`CodeProblem.messages`): the function in a code block, prompt included;
    only the reference body is scored, so repeating the given signature and docstring earns nothing.
    """
    from fusechat.evaluate.prompts import render

    texts, spans = [], []
    for p in problems:
        user, reply = p.messages()
        text = render(loaded.tokenizer, [user]) + reply["content"]
        start = len(text) - len(reply["content"]) + reply["content"].index(p.solution, len(p.prompt))
        texts.append(text)
        spans.append(np.array([[start, start + len(p.solution)]], dtype=np.int64))
    ids = [p.id for p in problems]
    return _spans_bpb(loaded, opts, "code_bpb", ids, texts, spans, prompt_format=prompt_format(loaded.tokenizer))


def _spans_bpb(
    loaded: Loaded,
    opts: EvalOptions,
    task: str,
    ids: list,
    texts: list[str],
    spans: list,
    tokens: bool = False,
    **extra: Any,
) -> TaskResult:
    """Bits per byte of the given character spans of each text, with per-item results and `extra` in the result;
    with `tokens`, also the token counts (bpb reports bytes per token, the tokenizer's share of the comparison)."""
    from fusechat.evaluate.likelihood import bits_per_byte, span_logprobs

    scores = span_logprobs(
        loaded.backbone,
        loaded.head,
        loaded.tokenizer,
        texts,
        spans,
        loaded.max_tokens,
        opts.batch_tokens,
        opts.max_batch,
        loaded.device,
        desc=f"{task} {loaded.name}",
        progress=opts.progress,
    )
    nll = np.array([-s.logprob for s in scores])
    nbytes = np.array([s.n_bytes for s in scores])
    value, se = bits_per_byte(nll, nbytes)
    items = [{"id": item, "nll_nats": float(nll[i]), "n_bytes": int(nbytes[i])} for i, item in enumerate(ids)]
    totals: dict[str, Any] = {"n_bytes": int(nbytes.sum())}
    if tokens:
        for item, s in zip(items, scores, strict=True):
            item["n_tokens"] = s.n_tokens
        totals["n_tokens"] = sum(s.n_tokens for s in scores)
    return TaskResult("bits_per_byte", value, se, len(ids), {**totals, **extra}, items)


# ---------------------------------------------------------------- MT-Bench
def _run_mtbench(loaded: Loaded, questions, opts: EvalOptions) -> TaskResult:
    from fusechat.evaluate.mtbench import answer_questions

    return answer_questions(loaded, questions, opts.mtbench_max_new_tokens, opts.batch_size, opts.progress)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "bpb",
            "held-out bits per byte of assistant turns (lower is better; comparable across tokenizers)",
            "bits_per_byte",
            False,
            None,
            _load_conversations,
            lambda data: (data[0].fingerprint, data[1]),
            _run_bpb,
            lambda opts: {"scope": opts.bpb_scope},
        ),
        _math_task(
            "gsm",
            "GSM-Symbolic exact match of the final number, greedy, zero-shot (higher is better)",
            lambda opts, limit: datasets.gsm_symbolic_problems(limit or 100, opts.gsm_seed),
            100,
        ),
        Task(
            "gsm_bpb",
            "bits per byte of GSM-Symbolic reference solutions after their question (lower is better)",
            "bits_per_byte",
            False,
            100,
            lambda opts, limit: datasets.gsm_symbolic_problems(limit or 100, opts.gsm_seed),
            lambda problems: [(p.id, p.question, p.solution) for p in problems],
            _run_solution_bpb,
            lambda opts: {"prompt": MATH_INSTRUCTION, "v": PROMPT_VERSION},
        ),
        Task(
            "code_bpb",
            "bits per byte of held-out HumanEval reference solutions after the function (lower is better)",
            "bits_per_byte",
            False,
            64,
            lambda opts, limit: datasets.spread(datasets.humaneval_problems("heldout"), limit),
            lambda problems: [(p.id, p.prompt, p.solution) for p in problems],
            _run_code_bpb,
            lambda opts: {"prompt": datasets.CODE_INSTRUCTION, "v": PROMPT_VERSION},
        ),
        _math_task(
            "asdiv",
            "ASDiv exact match of the final number, greedy, zero-shot (higher is better)",
            lambda opts, limit: datasets.asdiv_problems(limit),
            200,
        ),
        _choice_task(
            "hhh",
            "BIG-bench hhh_alignment accuracy, option log-likelihood per byte (higher is better)",
            datasets.hhh_items,
            None,
        ),
        _choice_task(
            "boolq", "BoolQ accuracy, option log-likelihood per byte (higher is better)", datasets.boolq_items, 200
        ),
        _choice_task(
            "csqa",
            "CommonsenseQA accuracy, option log-likelihood per byte (higher is better)",
            datasets.csqa_items,
            200,
        ),
        Task(
            "mtbench",
            "MT-Bench single-answer judge score 1-10 (higher is better)",
            "answered",
            True,
            None,
            lambda opts, limit: datasets.spread(datasets.mtbench_questions(), limit),
            lambda qs: [(q["question_id"], q["turns"]) for q in qs],
            _run_mtbench,
            lambda opts: {"max_new_tokens": opts.mtbench_max_new_tokens, "v": PROMPT_VERSION},
        ),
    )
}


def task_key(task: Task, data: Any, opts: EvalOptions, limit: int | None) -> dict:
    """The settings that decide a task's result: its own settings, the item limit and the data's fingerprint."""
    return {**task.settings(opts), "limit": limit, "data": fingerprint(task.data_fingerprint(data))}


def parse_suite(suite: list[str] | str) -> list[str]:
    names = [s.strip() for s in (suite.split(",") if isinstance(suite, str) else suite) if s.strip()]
    unknown = [s for s in names if s not in TASKS]
    if unknown or not names:
        raise FusechatError(
            f"--suite: unknown task {unknown[0]!r}; choose from {', '.join(TASKS)}"
            if unknown
            else f"--suite: empty; choose from {', '.join(TASKS)}"
        )
    return list(dict.fromkeys(names))
