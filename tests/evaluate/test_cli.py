"""`fusechat evaluate` end to end in a subprocess on a tiny model, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _run(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    env.pop("FUSECHAT_JUDGE_BASE_URL", None)
    env.pop("FUSECHAT_JUDGE_MODEL", None)
    return subprocess.run(
        [sys.executable, "-m", "fusechat", "evaluate", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )


def test_cli_end_to_end(tiny, tmp_path):
    out = tmp_path / "out"
    done = _run(
        f"tiny={tiny['llama']}",
        "--suite",
        "bpb,gsm,mtbench",
        "--conversations",
        tiny["conv"],
        "--limit",
        "gsm=2,mtbench=2",
        "--max-new-tokens",
        "4",
        "--mtbench-max-new-tokens",
        "4",
        "--out",
        out,
        "--cache-dir",
        tmp_path / "cache",
        "--no-progress",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["tiny"]) == {"bpb", "gsm", "mtbench"}
    assert scores["tiny"]["mtbench"]["judged"] is False and "skipped" in scores["tiny"]["mtbench"]["judge"]
    answers = (out / "mtbench" / "model_answer" / "tiny.jsonl").read_text().splitlines()
    assert len(answers) == 2 and json.loads(answers[0])["model_id"] == "tiny"
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["model", "bpb", "gsm", "mtbench"] and lines[2].startswith("tiny")
    assert "2 answered" in lines[2]


def test_cli_errors_are_one_line(tiny, tmp_path):
    done = _run(tiny["llama"], "--suite", "bpb,nope", "--out", tmp_path / "o", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "unknown task 'nope'" in done.stderr
    done = _run(tiny["llama"], "--suite", "gsm", "--limit", "hhh=3", "--out", tmp_path / "o", cwd=tmp_path)
    assert done.returncode == 2 and "not in --suite" in done.stderr
    done = _run(f"a={tiny['llama']}", f"a={tiny['gpt2']}", "--suite", "gsm", "--out", tmp_path / "o", cwd=tmp_path)
    assert done.returncode == 2 and "given twice" in done.stderr
