"""The smaller faults of issue 16, through the real CLI: each is one clear line that says what is wrong and what
to do, and a refusal creates nothing (no lock file beside `/`)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from tests.faults.common import ENV, assert_one_clear_error, fusechat, run
from tests.tiny_models import byte_bpe_tokenizer, sample_chats, save_llama


def _chats(path):
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in sample_chats(2)))
    return path


def test_a_json_error_says_at_once(world, tmp_path):
    """Python's message "Unterminated string starting at" followed by "at column" read "at at column"."""
    data = _chats(tmp_path / "chats.jsonl")
    data.write_text(data.read_text() + '{"messages": [{"role": "user", "content": "cut\n')
    line = assert_one_clear_error(run(fusechat("prepare", data, "--pivot", world["pivot"], "--out", tmp_path / "o")))
    assert "line 3" in line and "column" in line and "at at" not in line, line


@pytest.mark.parametrize("kind", ["directory", "symlink-loop", "dangling-symlink"])
def test_a_data_path_that_is_not_a_file_says_what_it_is(world, tmp_path, kind):
    """A directory or a symbolic link loop given as data was reported as "no such file"."""
    path = tmp_path / "data"
    if kind == "directory":
        path.mkdir()
        words = "is a directory"
    elif kind == "symlink-loop":
        (tmp_path / "other").symlink_to(path)
        path.symlink_to(tmp_path / "other")
        words = "symbolic link"
    else:
        path.symlink_to(tmp_path / "gone.jsonl")
        words = "symbolic link"
    line = assert_one_clear_error(run(fusechat("prepare", path, "--pivot", world["pivot"], "--out", tmp_path / "o")))
    assert words in line and "no such file" not in line, line
    assert not (tmp_path / "o").exists()


def test_remote_code_refusal_is_one_line(tmp_path):
    """A model of a type transformers does not know, with its own code (auto_map): transformers' refusal ran over
    three lines and told the user to pass `trust_remote_code=True` in Python."""
    model = save_llama(tmp_path / "m", byte_bpe_tokenizer(300), seed=0)
    (model / "evil.py").write_text(f"open({str(tmp_path / 'marker')!r}, 'w')\n")
    for name, auto_map, key in (
        ("config.json", {"AutoConfig": "evil.C", "AutoModelForCausalLM": "evil.M"}, "model_type"),
        ("tokenizer_config.json", {"AutoTokenizer": ["evil.T", "evil.T"]}, "tokenizer_class"),
    ):
        body = json.loads((model / name).read_text())
        body.update(auto_map=auto_map, **{key: "evil" if key == "model_type" else "EvilTokenizer"})
        (model / name).write_text(json.dumps(body))
    data = _chats(tmp_path / "chats.jsonl")
    line = assert_one_clear_error(run(fusechat("prepare", data, "--pivot", model, "--out", tmp_path / "o")))
    assert "--trust-remote-code" in line and str(model) in line, line
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("out", ["/", "."])
def test_merge_into_root_or_cwd_creates_no_lock_file(world, tmp_path, out):
    """`merge CFG /` refused, but only after it had created `/..lock` (and `merge CFG .` a `..lock` in the current
    directory)."""
    base, *models = world["merge_inputs"]
    config = tmp_path / "m.yml"
    config.write_text(
        yaml.safe_dump(
            {"merge_method": "linear", "models": [{"model": str(m), "parameters": {"weight": 0.5}} for m in models]}
        )
    )
    cwd = tmp_path / "here"
    cwd.mkdir()
    before = os.path.exists("/..lock")
    done = subprocess.run(fusechat("merge", config, out), env=ENV, capture_output=True, text=True, cwd=cwd)
    assert_one_clear_error(done)
    assert not (cwd / "..lock").exists() and os.path.exists("/..lock") == before
