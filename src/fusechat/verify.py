"""`fusechat verify DIR`: check a stage output against what its manifest promises, before trusting it.

A top-k store is checked shard by shard against the checksums in its manifest; any output whose manifest lists
`files` with sha256 is checked file by file; safetensors files are also checked for truncation from their own
header (the data must end exactly where the header says), so a cut checkpoint is caught even without checksums.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
from pathlib import Path

from fusechat.errors import FusechatError
from fusechat.manifest import MANIFEST, sha256_file


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is not whole (truncated, bad header), or None."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                return f"{path}: header length {n} runs past the end of the file (truncated?)"
            header = json.loads(f.read(n))
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError):
        return f"{path}: unreadable safetensors header"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"{path}: {size} bytes, its header describes {8 + n + end} (truncated or padded)"
    return None


def weight_files(directory: Path) -> list[str]:
    """The files of a model directory that a manifest's checksums cover: weights and their index."""
    return sorted(p.name for p in directory.iterdir() if p.suffix == ".safetensors" or p.name.endswith(".index.json"))


def verify(directory: str | os.PathLike) -> list[str]:
    """Every problem found in `directory` (empty when it is sound)."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        tensors = sorted(directory.glob("*.safetensors"))
        if not tensors:
            raise FusechatError(f"{directory}: no {MANIFEST} and no safetensors; not a fusechat output or a model")
        return [p for f in tensors if (p := safetensors_problem(f)) is not None]
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        return [f"{path}: not valid JSON"]
    problems = [] if manifest.get("complete") is True else [f"{directory}: not complete (the stage did not finish)"]
    shards = manifest.get("shards")
    for info in shards if isinstance(shards, list) else []:  # a merge's `shards` is a count, not a list
        f = directory / info["file"]
        problems += _check(f, info.get("bytes"), info.get("sha256"))
    files = manifest.get("files", {}) or {}
    for name, info in files.items():
        problems += _check(directory / name, info.get("bytes"), info.get("sha256"))
    for f in sorted(directory.glob("*.safetensors")):
        if (p := safetensors_problem(f)) is not None:
            problems.append(p)
    return problems


def _check(path: Path, size: int | None, digest: str | None) -> list[str]:
    if not path.is_file():
        return [f"{path}: missing"]
    if size is not None and path.stat().st_size != size:
        return [f"{path}: {path.stat().st_size} bytes, the manifest says {size}"]
    if digest is not None and sha256_file(path) != digest:
        return [f"{path}: checksum differs from the manifest (corrupted)"]
    return []


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check a stage output against its manifest's checksums")
    p.add_argument("dirs", nargs="+", metavar="DIR")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    bad = 0
    for d in args.dirs:
        problems = verify(d)
        for p in problems:
            print(p)
        print(f"{d}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        bad += bool(problems)
    return 1 if bad else 0
