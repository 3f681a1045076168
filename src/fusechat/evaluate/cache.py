"""Results cached per model checkpoint and task settings, so re-evaluating an unchanged checkpoint is free.

A checkpoint's fingerprint hashes the content of its small files (config, tokenizer, safetensors index) and the
name, size and modification time of its weight files; `hash_weights=True` hashes the weights' bytes instead
(slower on big models, but robust to files copied with new times). A result's key adds the task's settings and
the data's own fingerprint, so a change of limit, seed, prompt or data recomputes only what it affects.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from fusechat.manifest import atomic_write_json, fingerprint, sha256_file

SMALL = 1 << 20  # files under 1 MiB are hashed by content
FORMAT_VERSION = 1


def checkpoint_fingerprint(model_dir: str | os.PathLike, hash_weights: bool = False) -> str:
    """A short hash identifying the checkpoint in `model_dir` (see module doc)."""
    h = hashlib.sha256()
    for path in sorted(Path(model_dir).iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.name.lower().startswith("readme"):
            continue
        st = path.stat()
        h.update(path.name.encode() + b"\0")
        if st.st_size < SMALL:
            h.update(path.read_bytes())
        elif hash_weights:
            h.update(sha256_file(path).encode())
        else:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class ResultCache:
    """JSON files `ROOT/<checkpoint fingerprint>/<task>-<settings fingerprint>.json`, written atomically."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, model_fp: str, task: str, settings: dict) -> Path:
        key = fingerprint({"format": FORMAT_VERSION, "task": task, **settings})
        return self.root / model_fp / f"{task}-{key}.json"

    def get(self, model_fp: str, task: str, settings: dict) -> dict[str, Any] | None:
        path = self.path(model_fp, task, settings)
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, model_fp: str, task: str, settings: dict, value: dict[str, Any]) -> Path:
        path = self.path(model_fp, task, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"task": task, "settings": settings, **value})
        return path
