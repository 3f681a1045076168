"""Exact match by greedy generation: ask for a worked solution, grade the final number (GSM-Symbolic, ASDiv).

The prompt is the model's own chat template around one user turn (the problem and an instruction to end with
`#### <number>`), with no few-shot examples: the fused models are chat models, and this is how a user asks.
"""

from __future__ import annotations

from fusechat.evaluate.base import Loaded, TaskResult, accuracy
from fusechat.evaluate.datasets import MathProblem
from fusechat.evaluate.generation import generate
from fusechat.evaluate.numbers import extract_number, numbers_equal
from fusechat.evaluate.prompts import MATH_INSTRUCTION, prompt_format, render, stop_strings


def math_prompt(tokenizer, problem: MathProblem) -> str:
    return render(tokenizer, [{"role": "user", "content": MATH_INSTRUCTION + problem.question}])


def run_exact_match(
    loaded: Loaded,
    problems: list[MathProblem],
    max_new_tokens: int = 256,
    batch_size: int = 8,
    desc: str = "exact match",
    progress: bool = True,
) -> TaskResult:
    """Greedy answers to `problems`, graded by the extracted final number; metric: exact-match accuracy."""
    tok = loaded.tokenizer
    prompts = [math_prompt(tok, p) for p in problems]
    answers = generate(
        loaded.model, tok, prompts, max_new_tokens, batch_size, stop_strings(tok), desc=desc, progress=progress
    )
    items, correct = [], []
    for p, a in zip(problems, answers, strict=True):
        value = extract_number(a)
        ok = numbers_equal(value, p.answer)
        correct.append(ok)
        items.append({"id": p.id, "gold": p.answer, "predicted": value, "correct": ok, "answer": a})
    acc, se = accuracy(correct)
    extra = {"prompt_format": prompt_format(tok), "max_new_tokens": max_new_tokens}
    return TaskResult("exact_match", acc, se, len(problems), extra, items)
