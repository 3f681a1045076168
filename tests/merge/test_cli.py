"""`fusechat merge CONFIG.yml OUT` end to end in a subprocess: success, --explain, and a one-line error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.merge.checkpoints import make_family

SRC = Path(__file__).resolve().parents[2] / "src"
ENTRY = "import sys; from fusechat import cli; sys.exit(cli.main())"  # the real command line


def fusechat(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_merge_explain_and_errors(tmp_path):
    base, a, b = make_family(tmp_path / "in", seed=5)
    config = tmp_path / "varm.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "merge_method": "varm",
                "base_model": str(base),
                "models": [{"model": str(a)}, {"model": str(b)}],
                "parameters": {"granularity": "module"},
                "dtype": "bfloat16",
            }
        )
    )
    done = fusechat("merge", str(config), str(tmp_path / "out"), "--explain")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and (out / "explain" / "varm_weights.png").is_file()
    assert "granularity: module" in (out / "README.md").read_text()

    again = fusechat("merge", str(config), str(out))
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "already exists" in again.stderr

    bad = tmp_path / "bad.yml"
    bad.write_text(
        yaml.safe_dump(
            {
                "merge_method": "ties",
                "base_model": str(base),
                "models": [{"model": str(a), "parameters": {"weight": 1, "density": 2}}],
            }
        )
    )
    failed = fusechat("merge", str(bad), str(tmp_path / "out2"))
    assert failed.returncode == 2
    assert "models[0].parameters.density: must be in (0, 1], got 2" in failed.stderr
    assert "Traceback" not in failed.stderr and not (tmp_path / "out2").exists()
