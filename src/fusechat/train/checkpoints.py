"""Trainer checkpoints that a rerun can trust: each one sealed with its files' sha256 when the Trainer has
written it, and checked (whole, then against its seal) before a run resumes from it.

A resumed run that loads a damaged checkpoint trains on from garbage and still ends "complete"; a half-written
one (a kill during a save) fails or half loads. Either is removed and the run resumes from the newest good one
before it, or starts over.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from transformers import TrainerCallback

from fusechat.manifest import atomic_write_json, sha256_file

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


class SealCheckpoints(TrainerCallback):
    """Seals every checkpoint the Trainer saves (on the process that writes it)."""

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            seal_checkpoint(Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        return control


CHECKSUMS = "fusechat-checksums.json"


def _checkpoint_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def seal_checkpoint(path: Path) -> None:
    """Record the sha256 of every file of a checkpoint the Trainer has just finished writing, so that a damaged
    file (a flipped bit, a bad disk) is found before a rerun resumes from it."""
    entries = {str(p.relative_to(path)): sha256_file(p) for p in _checkpoint_files(path)}
    atomic_write_json(path / CHECKSUMS, entries)


def _checkpoint_problem(path: Path) -> str | None:
    """Why this checkpoint cannot be resumed from, or None. It must be whole (trainer_state.json, written last,
    is valid JSON for the step in the directory's name, and every safetensors file ends where its header says)
    and, when sealed, every file must still have the sha256 recorded when it was written."""
    from fusechat.verify import safetensors_problem

    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "half-written (the run was stopped while saving it)"
    if str(state.get("global_step")) != path.name.rsplit("-", 1)[-1]:
        return "half-written (the run was stopped while saving it)"
    if any(safetensors_problem(f) is not None for f in path.glob("*.safetensors")):
        return "half-written (the run was stopped while saving it)"
    try:
        sealed = json.loads((path / CHECKSUMS).read_text())
    except FileNotFoundError:
        return None  # stopped between the Trainer's save and the seal, or written by an older fusechat
    except (OSError, json.JSONDecodeError):
        return "damaged (its checksum file is unreadable)"
    for name, digest in sealed.items():
        f = path / name
        if not f.is_file() or sha256_file(f) != digest:
            return f"damaged ({name} no longer has the checksum it was written with)"
    return None


def latest_checkpoint(out: Path) -> str | None:
    """The newest whole, undamaged Trainer checkpoint; newer half-written (a kill during a save) or damaged ones
    are removed first, so a rerun repairs the run from the last good state.

    The Trainer writes a checkpoint's files in place, so a run killed while saving leaves a directory that
    `get_last_checkpoint` would pick and `resume_from_checkpoint` would fail on or, worse, half load.
    """
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    d = out / CHECKPOINTS
    if not d.is_dir():
        return None
    steps = []
    for p in d.iterdir():
        tail = p.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
        if p.is_dir() and tail != p.name and tail.isdigit():
            steps.append((int(tail), p))
    for _, p in sorted(steps, reverse=True):
        problem = _checkpoint_problem(p)
        if problem is None:
            return str(p)
        log.warning("%s: %s; removing it and resuming from the one before, if any", p, problem)
        shutil.rmtree(p, ignore_errors=True)
    return None
