"""The resumable protocol by which a sharded stage (teach, align, fuse) writes its top-k store.

Every such stage does the same dance around its own per-row work: claim the output directory (refusing one that
another stage or the user owns), hold its lock, decide whether the output is already up to date (or was made
from other inputs: refused unless the user asks to overwrite it), drop what a killed writer left, mark the
manifest incomplete, write each missing or damaged shard under a temporary name, and write the complete
manifest only once every shard is in place. Written once here, so a stage only says what goes into its rows.
A teacher pass split between processes (torchrun, `--shard I/N`) locks per process and per shard, leaves other
processes' temporaries alone (`ShardWriter` removes its own), and the last process to finish writes the manifest.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from fusechat.errors import FusechatError
from fusechat.manifest import (
    LOCK,
    MANIFEST,
    clear_output,
    holds_work,
    locked,
    prepare_output_dir,
    read_manifest,
    remove_temporaries,
    settings_check,
    write_manifest,
)
from fusechat.store.format import ShardWriter, finalize, shard_done, shard_name

log = logging.getLogger(__name__)


class ShardedOutput:
    """One stage's sharded output directory, written resumably under its lock.

    Use as `with ShardedOutput(...) as output:`; then `output.up_to_date` says whether there is nothing to do,
    `start(manifest)` begins (or resumes) the run, `shard(i)` writes one shard, `finish(manifest)` completes it.
    `overwrite` replaces an output made with other inputs or settings (refused without it). `split`: (rank, world)
    of a split run. `settings` (the manifest's header) lets a refusal name what differs; its keys in `same` are
    outside the fingerprint (outputs written before they were recorded still resume) but must match to resume.
    """

    def __init__(
        self, out: str | os.PathLike, stage: str, fp: str, n_shards: int, k: int, command: str,
        extra: pa.Schema | None = None, overwrite: bool = False, split: tuple[int, int] | None = None,
        settings: dict | None = None, same: Sequence[str] = (),
    ):  # fmt: skip
        self.stage, self.fp, self.n_shards, self.k, self.command = stage, fp, n_shards, k, command
        self.extra, self.overwrite, self.split, self.settings, self.same = extra, overwrite, split, settings, same
        self.dir = prepare_output_dir(out, stage)
        self._lock: contextlib.AbstractContextManager | None = None
        self.up_to_date = False

    def __enter__(self) -> ShardedOutput:
        # A split run's processes each lock their shard set: a second run of the same split refuses at once.
        name = f".{self.stage}-{self.split[0]}-of-{self.split[1]}.lock" if self.split else LOCK
        self._lock = locked(self.dir, name=name)
        self._lock.__enter__()
        self.up_to_date = self._check_up_to_date()
        return self

    def __exit__(self, *exc) -> None:
        assert self._lock is not None
        self._lock.__exit__(*exc)

    def _check_up_to_date(self) -> bool:
        """True if the directory holds a complete output of these inputs. One made with other inputs is refused
        unless `overwrite` (manifest.settings_check), and then cleared."""
        old = {}
        if (self.dir / MANIFEST).is_file():
            old = read_manifest(self.dir, stage=self.stage, require_complete=False)
        new = self.settings or {}
        changed = ", ".join(k for k in new if k != "fusechat_version" and old.get(k) != new[k])
        state = settings_check(self.dir, self.stage, self.fp, self.overwrite, what=changed)
        # Shards computed otherwise (in another dtype) must not be mixed in.
        key = next((k for k in self.same if state == "resume" and old.get(k, new[k]) != new[k]), None)
        if key and not self.overwrite and holds_work(self.dir):
            raise FusechatError(
                f"{self.dir}: its finished shards were computed with {key} {old[key]}, this run would use {new[key]}; "
                "rerun with the same settings, pass --overwrite, or choose another --out"
            )
        state = "replace" if key else state
        if state == "replace":
            log.info("%s: replacing an output made with other inputs or settings", self.dir)
            clear_output(self.dir)
        if state != "resume":
            return False
        # A shard deleted or damaged after the fact (checked against its sidecar's sha256) makes the output
        # resumable again: the rerun rebuilds that shard only.
        whole = all(shard_done(self.dir, i, self.n_shards) is not None for i in range(self.n_shards))
        if old.get("complete") and whole:
            log.info("%s: up to date", self.dir)
        return bool(old.get("complete")) and whole

    def start(self, manifest: dict) -> None:
        """Begin or resume: drop what a killed writer left (sole writer under the lock), mark incomplete."""
        if self.split is None:
            remove_temporaries(self.dir)
        elif self.split[0] != 0 and (self.dir / MANIFEST).is_file():
            return  # the other processes' work: rank 0 (or the first to start) marks the output incomplete
        write_manifest(self.dir, manifest, complete=False)

    def done(self, index: int) -> bool:
        return shard_done(self.dir, index, self.n_shards) is not None

    def claim(self, index: int) -> contextlib.ExitStack | None:
        """Lock shard `index` until the returned stack is closed; None if it is done by now (another process)."""
        claim = contextlib.ExitStack()
        claim.enter_context(locked(self.dir, name=f".{shard_name(index, self.n_shards)}.lock"))
        if self.done(index):
            claim.close()
            return None
        return claim

    def writer(self, index: int) -> ShardWriter:
        """A writer for shard `index` (any thread may use it): `close()` renames it into place, `abort()` drops it."""
        return ShardWriter(self.dir, index, self.n_shards, self.k, extra=self.extra)

    @contextlib.contextmanager
    def shard(self, index: int) -> Iterator[ShardWriter]:
        """A writer for shard `index`: renamed into place when the block ends, dropped if it raises."""
        writer = self.writer(index)
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.close()

    def finish(self, manifest: dict) -> Path | None:
        """Write the complete manifest; every shard must be in place, unless the run is split, in which case the
        process that finishes last writes it and the others return None."""
        if finalize(self.dir, manifest, self.n_shards):
            return self.dir
        if self.split is None:
            raise FusechatError(f"{self.dir}: some shards are missing after the run; rerun `{self.command}` to resume")
        return None
