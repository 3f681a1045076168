"""`fusechat align` and `fusechat fuse` end to end through the command line; bad input: one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fusechat.store.format import TopKStore

SRC = Path(__file__).resolve().parents[2] / "src"
ENTRY = "import sys; import fusechat.cli as c; raise SystemExit(c.main(sys.argv[1:]))"  # the real command line


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, env=env, timeout=300)


def test_align_then_fuse(world, tmp_path):
    piv, src = str(world["stores"]["bytelevel"]), str(world["stores"]["metaspace"])
    r = run(
        "align",
        "--pivot-store",
        piv,
        "--source-store",
        src,
        "--out",
        str(tmp_path / "al"),
        "--vocab-map",
        "prefix",
    )
    assert r.returncode == 0, r.stderr
    assert TopKStore(tmp_path / "al", stage="align").manifest["vocab_map"]["method"] == "prefix"
    r = run(
        "fuse",
        "--pivot-store",
        piv,
        "--aligned",
        str(tmp_path / "al"),
        "--method",
        "mince",
        "--out",
        str(tmp_path / "fu"),
    )
    assert r.returncode == 0, r.stderr
    assert TopKStore(tmp_path / "fu", stage="fuse").manifest["selection"]["fallback_positions"] >= 0


def test_bad_input_is_one_line_and_exit_code_2(world, tmp_path):
    piv = str(world["stores"]["bytelevel"])
    r = run(
        "align",
        "--pivot-store",
        piv,
        "--source-store",
        str(tmp_path / "missing"),
        "--out",
        str(tmp_path / "o"),
    )
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "fusechat align: error: source store:" in r.stderr
    r = run("align", "--pivot-store", piv, "--source-store", piv, "--out", str(tmp_path / "o"), "--vocab-map", "x")
    assert r.returncode == 2 and "invalid choice" in r.stderr
