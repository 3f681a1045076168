"""What a run's inputs are, by content: the identity of data files and model directories in step fingerprints.

A step is redone when what it reads changes, not when a file is touched, the project is moved, or it is copied
with `cp -a`: so an input is identified by its size and sha256, never by its absolute path or modification time.
Hashing a 7B model (about 15 GB) takes half a minute, so each file's digest is kept in a small cache under the
fusechat cache directory, keyed by device, inode, size and modification time: an unchanged file is hashed once,
a touched or copied one again (its content, and so every fingerprint, stays the same).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from fusechat.manifest import atomic_write_json, sha256_file

CACHE_FILE = "content-hashes.json"


class ContentHashes:
    """sha256 of files, remembered across runs by (device, inode, size, mtime)."""

    def __init__(self, cache: Path | None = None):
        if cache is None:
            from fusechat.models.packages import cache_dir

            cache = cache_dir() / CACHE_FILE
        self.path = cache
        try:
            self.known: dict[str, str] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.known = {}
        self.changed = False

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        if key not in self.known:
            self.known[key] = sha256_file(path)
            self.changed = True
        return self.known[key]

    def file(self, path: Path) -> list:
        """[size, sha256] of a file, or [None, None] if it does not exist (the step then fails by itself)."""
        if not path.is_file():
            return [None, None]
        return [path.stat().st_size, self.sha256(path)]

    def directory(self, path: Path) -> dict[str, list]:
        """{name: [size, sha256]} of the visible files of a model directory (weights, config, tokenizer)."""
        return {p.name: self.file(p) for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")}

    def save(self) -> None:
        """Keep the new digests for the next run (best effort: a read-only cache only costs hashing again)."""
        if not self.changed:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, self.known)
        self.changed = False


def model_identity(spec: str, base: Path, hashes: ContentHashes) -> object:
    """A model as a step's settings name it: a directory by its files' content, an installed model by name."""
    path = base / spec
    if path.is_dir():
        return {"files": hashes.directory(path)}
    return spec


def relative(path: Path, root: Path) -> str:
    """`path` as seen from `root` when it lies under it (a run's own outputs), else as given."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(os.path.abspath(root)))
    except ValueError:
        return str(path)
