"""`fusechat prepare` through a real subprocess: success, and one line with exit code 2 on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fusechat.data.conversations import Conversations
from tests.data.chatdata import CHATS, as_format, write_records

SRC = Path(__file__).resolve().parents[2] / "src"


def fusechat(*args: str) -> subprocess.CompletedProcess:
    """Run the command line in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=str(SRC), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "fusechat", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_prepare_end_to_end(tmp_path, bpe_pivot):
    data = write_records(
        tmp_path / "chats.json", [as_format(c, "sharegpt", f"s{i}") for i, c in enumerate(CHATS)], "json"
    )
    out = tmp_path / "out"
    done = fusechat("prepare", str(data), "--pivot", str(bpe_pivot), "--out", str(out), "--max-length", "512")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    assert "prepared 3 conversations from 3 records" in done.stderr
    conv = Conversations(out)
    assert conv.ids == ["s0", "s1", "s2"] and conv.manifest["max_length"] == 512


def test_bad_input_is_one_line_and_exit_2(tmp_path, bpe_pivot):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(as_format(CHATS[1], "openai", "g"))
    path.write_text(good + "\n" + json.dumps({"messages": [{"role": "user", "content": "only a question"}]}) + "\n")
    done = fusechat("prepare", str(path), "--pivot", str(bpe_pivot), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("fusechat prepare: error: ") and "bad.jsonl: record 1" in lines[0]
    assert "no assistant turn" in lines[0] and "Traceback" not in done.stderr

    done = fusechat("prepare", str(path), "--pivot", str(bpe_pivot), "--out", str(tmp_path / "o2"), "--skip-invalid")
    assert done.returncode == 0, done.stderr
    assert Conversations(tmp_path / "o2").manifest["counts"]["skipped_invalid"] == {"no_assistant_turn": 1}
