"""Where data comes from: `open_source` turns what a user names (a file, a `datasets` directory or object, a named
data set, or a Source of their own) into a Source of raw records.

Kept apart from the readers it dispatches to, so that the file readers and the `datasets` reader each depend
only on the record type, not on one another.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fusechat.data import hf_datasets
from fusechat.data.assets import NAMED_SOURCES
from fusechat.data.readers import FileSource, Source
from fusechat.errors import FusechatError


def open_source(spec: Any, kind: str | None = None) -> Source:
    """A Source for a file path, a `datasets` save_to_disk directory, a named data set
    (`data.assets.NAMED_SOURCES`), a `datasets.Dataset` object, or an existing Source.

    An existing path wins over a name, as for models."""
    if hf_datasets.is_dataset(spec):
        return hf_datasets.DatasetSource.of(spec)
    if not isinstance(spec, str | os.PathLike):
        if callable(getattr(spec, "records", None)) and callable(getattr(spec, "describe", None)):
            return spec
        raise FusechatError(
            f"a {type(spec).__name__} is not data fusechat reads; give a file path, a `datasets.Dataset` or a Source"
        )
    path = Path(spec)
    if path.is_dir():
        return hf_datasets.DatasetSource.from_disk(path)
    if not path.exists() and not path.is_symlink():
        if str(spec) in NAMED_SOURCES:
            return FileSource(NAMED_SOURCES[str(spec)](), kind)
        names = ", ".join(sorted(NAMED_SOURCES))
        raise FusechatError(f"{spec}: no such file or directory, and not a named data set ({names})")
    return FileSource(path, kind)
