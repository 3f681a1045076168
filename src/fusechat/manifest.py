"""Stage output directories: manifests, fingerprints, checksums, atomic writes and locks.

Every stage writes a directory with `manifest.json`. The manifest is written last, with `complete: true`, and
every file is first written under a temporary name and then renamed, so a killed run never leaves a file or a
directory that looks whole and is not. A lock file keeps two runs out of one output directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fusechat.errors import FusechatError

MANIFEST = "manifest.json"
LOCK = ".lock"


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Give a full disk's error, which names no file (`write()` reports none), the name of the file written."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory, fsync, then rename."""
    path = Path(path)
    fd, tmp = _create_temporary(path)
    try:
        with naming(path), os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new file `.NAME.XXXXXXXX.tmp` beside `path`, opened for writing, with the mode any new file gets
    (0666 less the umask). `tempfile.mkstemp` would make it 0600, and the rename would carry that mode onto
    the output: another user, or a serving container under another UID, could not read a merged config.json.
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue


def remove_temporaries(directory: str | os.PathLike, name: str = "*") -> int:
    """Delete the temporary files (`.NAME.*.tmp`) a killed writer of `name` left in `directory`; return how many.

    A SIGKILL gives the writer no chance to clean up, and a shard's temporary file can be gigabytes. Call this
    only while holding the lock that makes the caller the sole writer of `name` in `directory`.
    """
    removed = 0
    for p in Path(directory).glob(f".{name}.*.tmp"):
        if not p.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed += 1
    return removed


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with naming(path):
            yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_VERIFIED: dict[tuple[str, int, int], str] = {}


def file_entries(directory: str | os.PathLike, names: list[str]) -> dict[str, dict[str, Any]]:
    """`{name: {bytes, sha256}}` for files of `directory`: what a manifest's `files` promises about them."""
    directory = Path(directory)
    return {n: {"bytes": (directory / n).stat().st_size, "sha256": sha256_file(directory / n)} for n in names}


def check_files(
    directory: str | os.PathLike,
    suffixes: tuple[str, ...] = (".safetensors", ".json"),
    defer: tuple[str, ...] = (),
) -> dict[Path, str]:
    """Fail, naming the file, unless every file the manifest's `files` lists (with one of `suffixes`) has the
    recorded size and sha256. A directory without a manifest or without `files` passes. Each file is hashed at
    most once per process for a given size and modification time, so loading one model twice costs one hash.

    Files ending in one of `defer` are only checked for size here; their recorded sha256 is returned (path →
    hex digest) for a caller that hashes them as it reads them anyway (`checksum_mismatch` words its error).
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        return {}
    files = load_manifest(path, f"rerun the stage that wrote {directory}").get("files") or {}
    if not isinstance(files, dict):
        raise FusechatError(f"{path}: `files` is not a mapping; rerun the stage that wrote {directory}")
    deferred = {}
    for name, info in files.items():
        if not name.endswith(suffixes):
            continue
        f = directory / name
        if not f.is_file():
            raise FusechatError(f"{f}: listed in {path} but missing; rerun the stage that wrote {directory}")
        key = _identity(f)
        if key[1] != info.get("bytes"):
            raise checksum_mismatch(f)
        if name.endswith(defer) and key not in _VERIFIED:
            deferred[f] = info.get("sha256")
            continue
        if (_VERIFIED.get(key) or sha256_file(f)) != info.get("sha256"):
            raise checksum_mismatch(f)
        _VERIFIED[key] = info["sha256"]
    return deferred


def checksum_mismatch(f: Path) -> FusechatError:
    """The error for a file that differs from its manifest's record."""
    return FusechatError(
        f"{f}: does not match the checksum in {f.parent / MANIFEST} (truncated or corrupted); "
        f"rerun the stage that wrote {f.parent} into a new directory"
    )


def mark_verified(f: Path, digest: str) -> None:
    """Record that `f`, as it is now, hashed to `digest` (a later check in this process skips it)."""
    _VERIFIED[_identity(f)] = digest


def file_digest(f: Path) -> str:
    """sha256 of `f`, hashed at most once per process while its size and modification time stay the same."""
    key = _identity(f)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(f)
    return _VERIFIED[key]


def _identity(f: Path) -> tuple[str, int, int]:
    """A file as `_VERIFIED` knows it: path, size, modification time."""
    st = f.stat()
    return str(f.resolve()), st.st_size, st.st_mtime_ns


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def load_manifest(path: Path, fix: str = "rerun the stage that wrote it") -> dict:
    """The JSON object in manifest file `path`; one clear error when it is damaged or not a manifest at all."""
    try:
        manifest = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FusechatError(f"{path}: not valid JSON ({e}); {fix}") from None
    if not isinstance(manifest, dict):
        raise FusechatError(f"{path}: not a fusechat manifest (a JSON {type(manifest).__name__}); {fix}")
    return manifest


def read_manifest(directory: str | os.PathLike, stage: str | None = None, require_complete: bool = True) -> dict:
    """Read a stage directory's manifest, checking its stage name and that it is complete."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise FusechatError(f"{directory}: no {MANIFEST}; is this the output of a fusechat stage?")
    manifest = load_manifest(path)
    if stage is not None and manifest.get("stage") != stage:
        raise FusechatError(
            f"{directory}: holds a '{manifest.get('stage')}' output, expected '{stage}'; check the path"
        )
    if require_complete and manifest.get("complete") is not True:
        raise FusechatError(f"{directory}: the '{manifest.get('stage')}' stage did not finish; rerun it to resume")
    return manifest


def write_manifest(directory: str | os.PathLike, manifest: dict, complete: bool) -> None:
    """Write the manifest atomically; `complete` is stored last so readers see it only when true."""
    body = {k: v for k, v in manifest.items() if k != "complete"}
    body["complete"] = bool(complete)
    atomic_write_json(Path(directory) / MANIFEST, body)


def _housekeeping(name: str) -> bool:
    """A file fusechat itself leaves beside an output: a lock file or a killed writer's temporary."""
    return name == LOCK or (name.startswith(".") and name.endswith((".lock", ".tmp")))


def output_owner(directory: str | os.PathLike) -> str | None:
    """The stage whose output `directory` holds (from its manifest), or None when it holds no manifest."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    fix = "if this directory is yours choose another --out, else remove it"
    return str(load_manifest(path, fix).get("stage"))


def check_output_dir(directory: str | os.PathLike, stage: str, option: str = "--out") -> None:
    """The one rule for an existing output directory, checked before any work: it is `stage`'s own (its manifest
    says so), or empty but for fusechat's lock and temporary files; anything else is refused, so a user's files
    (dotfiles such as `.git` and `.env` included) are never written into or removed. Creates nothing."""
    directory = Path(directory)
    if not directory.exists():
        return
    if not directory.is_dir():
        raise FusechatError(f"{directory}: exists and is not a directory; choose another {option}")
    owner = output_owner(directory)
    if owner is not None and owner != stage:
        raise FusechatError(f"{directory}: holds a '{owner}' output, not '{stage}'; choose another {option}")
    if owner is None and any(not _housekeeping(p.name) for p in directory.iterdir()):
        raise FusechatError(
            f"{directory}: exists, is not empty and is not a fusechat '{stage}' output; "
            f"choose another {option} or remove it"
        )


def prepare_output_dir(directory: str | os.PathLike, stage: str) -> Path:
    """Create `directory` for `stage` after `check_output_dir`'s rule (refusing what is not `stage`'s own)."""
    check_output_dir(directory, stage)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def holds_work(directory: str | os.PathLike) -> bool:
    """Whether an output directory holds anything besides its manifest and fusechat's housekeeping files."""
    return any(p.name != MANIFEST and not _housekeeping(p.name) for p in Path(directory).iterdir())


def settings_check(
    directory: str | os.PathLike,
    stage: str,
    fp: str,
    overwrite: bool = False,
    key: str = "fingerprint",
    what: str = "",
) -> str:
    """What to do with `stage`'s own output in `directory` for a run whose settings have fingerprint `fp`:
    'new' (nothing there yet), 'resume' (made with the same settings: continue or keep it), or 'replace'
    (other settings and `overwrite`, or other settings but no work in it yet: a run refused before it started).
    Other settings without `overwrite` are refused, so that no stage silently replaces an output. Call it
    under the directory's lock, after `prepare_output_dir`; `what` names the settings that differ."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        return "new"
    old = read_manifest(directory, stage=stage, require_complete=False)
    if old.get(key) == fp:
        return "resume"
    if overwrite or not holds_work(directory):
        return "replace"
    raise FusechatError(
        f"{directory}: holds a '{stage}' output made with other inputs or settings{f' ({what})' if what else ''}; "
        "pass --overwrite to replace it, or choose another --out"
    )


def clear_output(directory: str | os.PathLike) -> None:
    """Empty an output directory that `settings_check` said to replace (its lock and temporaries stay)."""
    import shutil

    for p in Path(directory).iterdir():
        if _housekeeping(p.name):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


@contextlib.contextmanager
def locked(
    directory: str | os.PathLike, shared: bool = False, name: str = LOCK, label: str | os.PathLike | None = None
) -> Iterator[None]:
    """Hold an advisory lock on `directory` (exclusive by default); a second holder fails at once.

    `name` picks the lock file, so that processes of one sharded run can each lock only their own shard;
    `label` is what the refusal names (default: `directory`), for a lock kept beside the output it guards.
    """
    path = Path(directory) / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FusechatError(
                f"{label or directory}: another fusechat run is writing here; wait for it or stop it"
            ) from None
        yield
    finally:
        os.close(fd)
