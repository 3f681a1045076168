"""`fusechat evaluate`'s options, declared once: its flags, their rules, the defaults of `EvalOptions`, and the
suite that both the command and a recipe's `evaluate:` section score unless told otherwise.

The models, --out, --conversations and --overwrite are the command's inputs and output, declared beside it."""

from __future__ import annotations

from typing import Literal

from fusechat.flags import Options, option

# Held-out bits per byte: the measure every fusion here is judged by (docs/results.md), fair across tokenizers,
# needing nothing beyond held-out conversations; the generation and multiple-choice tasks are asked for by name.
DEFAULT_SUITE: tuple[str, ...] = ("bpb",)


class EvaluateCommandOptions(Options):
    # The names are evaluate/tasks.py's registry (which reads its defaults from here, so they are not listed here).
    suite: str = option(",".join(DEFAULT_SUITE), "comma-separated tasks, e.g. bpb,gsm_bpb (an unknown one lists all)")
    limit: str | None = option(None, "items per task: N for every task, or TASK=N,... (none: each task's own)")
    bpb_scope: Literal["turn", "content"] = option(
        "turn", "bpb over each assistant turn as trained (content + end-of-turn text), or its content only"
    )
    gsm_seed: int | None = option(None, "GSM-Symbolic draw (none: the evaluation seed, not the demo's)", ge=0)
    max_new_tokens: int = option(256, "exact-match answer length", ge=1)
    mtbench_max_new_tokens: int = option(512, "MT-Bench answer length", ge=1)
    batch_size: int = option(8, "prompts per generation batch", ge=1)
    batch_tokens: int = option(4096, "scoring batch size x longest length", ge=16)
    max_tokens: int = option(4096, "longest sequence read (also capped by the model's own limit)", ge=16)
    hash_weights: bool = option(False, "fingerprint checkpoints by the weights' sha256")
    trust_remote_code: bool = option(False, "run the model repositories' own code")
    allow_pickle: bool = option(False, "accept pickled .bin weights (runs their code)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", "the models' dtype (auto: bf16 on GPUs that have it, else fp32)"
    )
    device: str | None = option(None, "cpu, cuda, cuda:1 ... (none: cuda if present, else cpu)")
    cache_dir: str | None = option(None, "result cache (none: $FUSECHAT_CACHE/eval)")
    judge_url: str | None = option(None, "OpenAI-compatible base URL for MT-Bench judging (or FUSECHAT_JUDGE_BASE_URL)")
    judge_model: str | None = option(
        None, "judge model name (or FUSECHAT_JUDGE_MODEL); key: FUSECHAT_JUDGE_API_KEY, never a flag"
    )
    no_progress: bool = option(False, "no progress bars")
