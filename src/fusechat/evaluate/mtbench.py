"""MT-Bench: both turns of the 80 questions, FastChat's `model_answer` JSONL, and optional single-answer judging.

The answers file has FastChat's schema (question_id, answer_id, model_id, choices[{index, turns}], tstamp), so it
drops into FastChat's `llm_judge` (data/mt_bench/model_answer/MODEL.jsonl) to be judged with GPT-4 elsewhere.
Where an OpenAI-compatible endpoint is configured, `judge_answers` grades each turn here with FastChat's bundled
single-answer prompts: the reference-guided ones for math, reasoning and coding, the multi-turn ones for the
second turn, and the `[[rating]]` in the judge's reply as the score (1-10). Nothing is sent anywhere otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fusechat.errors import FusechatError
from fusechat.evaluate.base import Loaded, TaskResult, mean_se
from fusechat.evaluate.generation import generate
from fusechat.evaluate.prompts import prompt_format, render, stop_strings
from fusechat.manifest import atomic_write_bytes

log = logging.getLogger(__name__)
NEED_REF = ("math", "reasoning", "coding")
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_LOOSE = re.compile(r"\[(\d+\.?\d*)\]")


def answer_questions(
    loaded: Loaded,
    questions: list[dict],
    max_new_tokens: int = 512,
    batch_size: int = 8,
    progress: bool = True,
) -> TaskResult:
    """Greedy answers to both turns (the second turn sees the model's own first answer)."""
    tok = loaded.tokenizer
    stops = stop_strings(tok)
    chats = [[{"role": "user", "content": q["turns"][0]}] for q in questions]
    answers: list[list[str]] = []
    for turn in (1, 2):
        if turn == 2:  # the model's own first answer, then the second question
            chats = [
                [*m, {"role": "assistant", "content": a}, {"role": "user", "content": q["turns"][1]}]
                for m, a, q in zip(chats, answers[0], questions, strict=True)
            ]
        prompts = [render(tok, m) for m in chats]
        answers.append(
            generate(loaded.model, tok, prompts, max_new_tokens, batch_size, stops, f"mt-bench turn {turn}", progress)
        )
    items = [
        {"question_id": q["question_id"], "category": q["category"], "turns": [a, b]}
        for q, a, b in zip(questions, *answers, strict=True)
    ]
    extra = {"prompt_format": prompt_format(tok), "max_new_tokens": max_new_tokens, "judged": False}
    return TaskResult("answered", float(len(items)), float("nan"), len(items), extra, items)


def write_model_answers(items: list[dict], model_id: str, path: Path) -> Path:
    """FastChat `model_answer` JSONL: one line per question, written atomically."""
    lines = []
    for it in items:
        digest = hashlib.sha256(json.dumps([model_id, it["question_id"], it["turns"]]).encode()).hexdigest()[:22]
        record = {
            "question_id": it["question_id"],
            "answer_id": digest,
            "model_id": model_id,
            "choices": [{"index": 0, "turns": list(it["turns"])}],
            "tstamp": time.time(),
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


@dataclass
class JudgeConfig:
    """An OpenAI-compatible chat-completions endpoint: base URL (…/v1), model name, and API key (may be empty)."""

    base_url: str
    model: str
    api_key: str = ""
    timeout: float = 120.0
    retries: int = 3

    @classmethod
    def from_env(cls, base_url: str | None = None, model: str | None = None) -> JudgeConfig | None:
        """From options, else FUSECHAT_JUDGE_BASE_URL / FUSECHAT_JUDGE_MODEL; key from FUSECHAT_JUDGE_API_KEY."""
        url = base_url or os.environ.get("FUSECHAT_JUDGE_BASE_URL")
        name = model or os.environ.get("FUSECHAT_JUDGE_MODEL")
        if not url and not name:
            return None
        if not url or not name:
            raise FusechatError(
                "MT-Bench judge: set both the base URL (--judge-url or FUSECHAT_JUDGE_BASE_URL) "
                "and the model (--judge-model or FUSECHAT_JUDGE_MODEL), or neither to skip judging"
            )
        return cls(url.rstrip("/"), name, os.environ.get("FUSECHAT_JUDGE_API_KEY", ""))


def chat_completion(config: JudgeConfig, system: str, user: str) -> str:
    """One judge call (temperature 0); retried on connection errors and 5xx/429, then a FusechatError."""
    body = {
        "model": config.model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "temperature": 0,
        "max_tokens": 2048,
    }
    headers = {"Content-Type": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    url = f"{config.base_url}/chat/completions"
    last = ""
    for attempt in range(config.retries):
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=config.timeout) as response:
                return json.loads(response.read())["choices"][0]["message"]["content"]
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
            if e.code not in (429, 500, 502, 503, 504):
                break
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            last = str(getattr(e, "reason", e))
        except (KeyError, IndexError, json.JSONDecodeError):
            raise FusechatError(f"judge at {url}: the reply is not an OpenAI chat completion") from None
        time.sleep(min(2.0**attempt, 10.0) * 0.1)
    raise FusechatError(f"judge at {url}: {last}; check --judge-url, the model name and FUSECHAT_JUDGE_API_KEY")


def parse_rating(text: str) -> float:
    """The judge's `[[rating]]` (FastChat's rule, with its single-bracket fallback); -1 if there is none."""
    found = _RATING.findall(text) or _RATING_LOOSE.findall(text)
    return float(found[-1]) if found else -1.0


def judge_prompt(prompts: dict[str, dict], question: dict, turns: list[str], refs: list[str] | None, turn: int):
    """(system, user) messages of FastChat's single-answer prompt for `turn` (0 or 1) of one answer."""
    math = question["category"] in NEED_REF and refs is not None
    name = ("single-math-v1" if math else "single-v1") + ("-multi-turn" if turn == 1 else "")
    p = prompts[name]
    fields = {"question": question["turns"][0], "answer": turns[0]}
    if turn == 1:
        fields = {"question_1": question["turns"][0], "question_2": question["turns"][1]}
        fields.update(answer_1=turns[0], answer_2=turns[1])
    if math:
        fields.update(ref_answer_1=refs[0], ref_answer_2=refs[1] if len(refs) > 1 else "")
    return p["system_prompt"], p["prompt_template"].format(**fields)


def judge_answers(
    config: JudgeConfig, items: list[dict], questions: list[dict], prompts: dict, refs: dict[int, list[str]]
) -> tuple[list[dict], float, float]:
    """Rate both turns of every answer; returns judgments, mean rating and its standard error (failed parses out)."""
    by_id = {q["question_id"]: q for q in questions}
    judgments, ratings = [], []
    for it in items:
        q = by_id[it["question_id"]]
        for turn in (0, 1):
            system, user = judge_prompt(prompts, q, it["turns"], refs.get(q["question_id"]), turn)
            reply = chat_completion(config, system, user)
            score = parse_rating(reply)
            judgments.append({"question_id": q["question_id"], "turn": turn + 1, "score": score, "judgment": reply})
            if score >= 0:
                ratings.append(score)
    mean, se = mean_se(ratings)
    return judgments, mean, se
