"""`fusechat evaluate`'s options, declared once: its flags, their rules, the defaults of `EvalOptions`, and the
suite that both the command and a recipe's `evaluate:` section score unless told otherwise."""

from __future__ import annotations

from typing import Literal

from fusechat.flags import Options, option

# Held-out bits per byte: the measure every fusion here is judged by (docs/results.md), fair across tokenizers,
# needing nothing beyond held-out conversations; the generation and multiple-choice tasks are asked for by name.
DEFAULT_SUITE: tuple[str, ...] = ("bpb",)


class EvaluateCommandOptions(Options):
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
