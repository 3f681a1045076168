"""The resumable protocol by which a sharded stage (align, fuse) writes its top-k store.

Every such stage does the same dance around its own per-row work: claim the output directory (refusing one that
another stage or the user owns), hold its lock, decide whether the output is already up to date (or was made
from other inputs: refused unless the user asks to overwrite it), drop what a killed writer left, mark the
manifest incomplete, write each missing or damaged shard under a temporary name, and write the complete
manifest only once every shard is in place. Written once here, so a stage only says what goes into its rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from fusechat.errors import FusechatError
from fusechat.manifest import (
    clear_output,
    locked,
    prepare_output_dir,
    read_manifest,
    remove_temporaries,
    settings_check,
    write_manifest,
)
from fusechat.store.format import ShardWriter, finalize, shard_done

log = logging.getLogger(__name__)


class ShardedOutput:
    """One stage's sharded output directory, written resumably under its lock.

    Use as `with ShardedOutput(...) as output:`; then `output.up_to_date` says whether there is nothing to do,
    `start(manifest)` begins (or resumes) the run, `shard(i)` writes one shard, `finish(manifest)` completes it.
    `overwrite` replaces an output made with other inputs or settings (refused without it).
    """

    def __init__(
        self,
        out: str | os.PathLike,
        stage: str,
        fp: str,
        n_shards: int,
        k: int,
        command: str,
        extra: pa.Schema | None = None,
        overwrite: bool = False,
    ):
        self.stage, self.fp, self.n_shards, self.k, self.command = stage, fp, n_shards, k, command
        self.extra, self.overwrite = extra, overwrite
        self.dir = prepare_output_dir(out, stage)
        self._lock: contextlib.AbstractContextManager | None = None
        self.up_to_date = False

    def __enter__(self) -> ShardedOutput:
        self._lock = locked(self.dir)
        self._lock.__enter__()
        self.up_to_date = self._check_up_to_date()
        return self

    def __exit__(self, *exc) -> None:
        assert self._lock is not None
        self._lock.__exit__(*exc)

    def _check_up_to_date(self) -> bool:
        """True if the directory holds a complete output of these inputs. One made with other inputs is refused
        unless `overwrite` (manifest.settings_check), and then cleared."""
        state = settings_check(self.dir, self.stage, self.fp, self.overwrite)
        if state == "replace":
            log.info("%s: replacing an output made with other inputs or settings", self.dir)
            clear_output(self.dir)
        if state != "resume":
            return False
        old = read_manifest(self.dir, stage=self.stage, require_complete=False)
        # A shard deleted or damaged after the fact (checked against its sidecar's sha256) makes the output
        # resumable again: the rerun rebuilds that shard only.
        whole = all(shard_done(self.dir, i, self.n_shards) is not None for i in range(self.n_shards))
        if old.get("complete") and whole:
            log.info("%s: up to date", self.dir)
        return bool(old.get("complete")) and whole

    def start(self, manifest: dict) -> None:
        """Begin or resume: drop what a killed writer left (sole writer under the lock), mark incomplete."""
        remove_temporaries(self.dir)
        write_manifest(self.dir, manifest, complete=False)

    def done(self, index: int) -> bool:
        return shard_done(self.dir, index, self.n_shards) is not None

    @contextlib.contextmanager
    def shard(self, index: int) -> Iterator[ShardWriter]:
        """A writer for shard `index`: renamed into place when the block ends, dropped if it raises."""
        writer = ShardWriter(self.dir, index, self.n_shards, self.k, extra=self.extra)
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.close()

    def finish(self, manifest: dict) -> Path:
        """Write the complete manifest; every shard must be in place."""
        if not finalize(self.dir, manifest, self.n_shards):
            raise FusechatError(f"{self.dir}: some shards are missing after the run; rerun `{self.command}` to resume")
        return self.dir
