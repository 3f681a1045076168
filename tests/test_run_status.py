"""`fusechat status RUN_DIR`: every state a step can be in, read from the run directory alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusechat.manifest import write_manifest
from fusechat.run.pipeline import Pipeline, Step
from fusechat.run.status import run_dir_statuses

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _steps(root: Path, a_setting: int, fail: str | None = None, with_d: bool = False) -> list[Step]:
    def make(name: str, out: Path):
        def run():
            out.mkdir(parents=True, exist_ok=True)
            (out / "data.bin").write_bytes(b"x" * 1500)
            if name == fail:
                raise RuntimeError(f"{name} was stopped part-way")
            write_manifest(out, {"stage": name}, complete=True)

        return run

    c, a, b, d = (root / n for n in "cabd")
    steps = [Step("c", c, {}, [], make("c", c)), Step("a", a, {"x": a_setting}, [], make("a", a))]
    steps.append(Step("b", b, {}, ["a"], make("b", b)))
    if with_d:
        steps.append(Step("d", d, {}, ["b"], make("d", d)))
    return steps


def test_status_of_a_run_directory_shows_complete_partial_stale_missing(tmp_path):
    quiet = lambda s: None  # noqa: E731
    Pipeline(tmp_path, _steps(tmp_path, 1)).run(echo=quiet)
    with pytest.raises(RuntimeError):  # a's settings changed; its rerun dies part-way
        Pipeline(tmp_path, _steps(tmp_path, 2, fail="a", with_d=True)).run(echo=quiet)
    rows = {r.name: r for r in run_dir_statuses(tmp_path)}
    assert {n: r.state for n, r in rows.items()} == {"c": "complete", "a": "partial", "b": "stale", "d": "missing"}
    assert rows["c"].bytes > 1500 and rows["c"].finished and rows["c"].seconds is not None
    assert rows["a"].seconds is None and rows["d"].bytes == 0 and rows["d"].finished is None
    env = dict(os.environ, PYTHONPATH=SRC)
    done = subprocess.run(
        [sys.executable, "-m", "fusechat", "status", str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:5]] == ["complete", "partial", "stale", "missing"]
    assert lines[-1] == "1 complete, 1 partial, 1 stale, 1 missing"


def test_status_of_a_directory_that_is_no_run_is_one_clear_error(tmp_path):
    env = dict(os.environ, PYTHONPATH=SRC)
    done = subprocess.run(
        [sys.executable, "-m", "fusechat", "status", str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "no pipeline.json" in done.stderr and "Traceback" not in done.stderr
