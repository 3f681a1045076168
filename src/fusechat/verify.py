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
from fusechat.manifest import MANIFEST, load_manifest, sha256_file


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
        manifest = load_manifest(path)
    except FusechatError as e:
        return [str(e)]
    problems = [] if manifest.get("complete") is True else [f"{directory}: not complete (the stage did not finish)"]
    shards = manifest.get("shards")
    entries = [(i.get("file") if isinstance(i, dict) else None, i) for i in shards] if isinstance(shards, list) else []
    files = manifest.get("files") or {}  # a merge's `shards` is a count, not a list
    entries += list(files.items()) if isinstance(files, dict) else [(None, None)]
    for name, info in entries:
        if not isinstance(name, str) or not isinstance(info, dict):
            problems.append(f"{path}: a file entry is malformed ({name!r}: {info!r})")
            continue
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
    from fusechat.flags import subcommand

    p = subcommand(
        sub,
        "verify",
        help="check a stage output against its manifest's checksums",
        description="Check each stage output directory against its manifest.json: every listed file present, "
        "of its recorded size and sha256, and the manifest complete. Prints each problem, then ok or a count; "
        "exit code 1 if any directory has a problem.",
        example="example:\n  fusechat verify runs/demo/train/pair-qwen-s0 runs/demo/merge/varm-s0\n",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="stage output directories (each holds manifest.json)")
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
