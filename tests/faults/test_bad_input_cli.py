"""Malformed chat data through the real command line (a subprocess each): `fusechat prepare` with and without
--skip-invalid, and `fusechat run` on a recipe whose training file is malformed. Each ends in exit code 0 with
exactly the good records, or exit code 2 with one error line naming the file and record; never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusechat.data.conversations import Conversations
from tests.data.chatdata import train_tokenizer
from tests.faults.malformed import CONTAINERS, REFUSING_TEMPLATE, SUFFIX, cases, kinds_for
from tests.faults.oracle import expected, write_file
from tests.tiny_models import byte_bpe_tokenizer, sample_chats, save_llama

SRC = str(Path(__file__).resolve().parents[2] / "src")
# Beyond `-m slow`, the thousand-example variants (about half an hour each here) also need FUSECHAT_SLOW=1.
AT_SCALE = pytest.mark.skipif(not os.environ.get("FUSECHAT_SLOW"), reason="set FUSECHAT_SLOW=1 to run at scale")


def fusechat(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "fusechat", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def error_line(done: subprocess.CompletedProcess, command: str) -> str:
    """The one error line of a failed command: exit 2, no traceback, the last stderr line."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"fusechat {command}: error: "), done.stderr[-2000:]
    return last.removeprefix(f"fusechat {command}: error: ")


@pytest.fixture(scope="module")
def pivot(tmp_path_factory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("pivot"), "bpe")


@st.composite
def mixed_files(draw: st.DrawFn, fmt: str, container: str) -> list:
    """8 records: three good ones and five of different fault kinds, in a drawn order."""
    kinds = [k for k in kinds_for(fmt, container) if k not in ("good", "message_1mb")]
    n = min(5, len(kinds))
    chosen = ["good"] * 3 + draw(st.lists(st.sampled_from(kinds), min_size=n, max_size=n, unique=True))
    return [draw(cases(fmt, container, k)) for k in draw(st.permutations(chosen))]


def _check_cli(tmp_path: Path, pivot: Path, fmt: str, container: str, drawn: list) -> None:
    path = tmp_path / f"{fmt}{SUFFIX[container]}"
    if not write_file(path, container, drawn):
        return
    template = tmp_path / "refusing.jinja"
    template.write_text(REFUSING_TEMPLATE)
    common = ["--pivot", str(pivot), "--chat-template", str(template), "--max-length", "4096"]
    strict = fusechat("prepare", str(path), "--out", str(tmp_path / "strict"), *common)
    want = expected(drawn, skip_invalid=False)
    assert error_line(strict, "prepare").startswith(f"{path}: record {want.error_record}: ")
    assert not (tmp_path / "strict" / "conversations.parquet").exists()

    skip = fusechat("prepare", str(path), "--out", str(tmp_path / "skip"), "--skip-invalid", *common)
    want = expected(drawn, skip_invalid=True)
    if want.error_record is not None:  # a broken JSON list cannot be read past the break
        assert error_line(skip, "prepare").startswith(f"{path}: record {want.error_record}: ")
        return
    assert skip.returncode == 0 and "Traceback" not in skip.stderr, skip.stderr[-3000:]
    conv = Conversations(tmp_path / "skip")
    assert [conv.messages(i) for i in range(len(conv))] == want.kept
    assert conv.manifest["counts"]["skipped_invalid"] == dict(sorted(want.skipped.items()))


ONE_EACH = [("openai", "jsonl"), ("sharegpt", "json"), ("alpaca", "parquet")]
EVERY = [(f, c) for f in ("openai", "sharegpt", "alpaca") for c in CONTAINERS]


@pytest.mark.parametrize(("fmt", "container"), ONE_EACH)
@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_prepare_cli_on_malformed_files(tmp_path_factory, pivot, fmt, container, data):
    _check_cli(tmp_path_factory.mktemp("cli"), pivot, fmt, container, data.draw(mixed_files(fmt, container)))


@pytest.mark.slow
@AT_SCALE
@pytest.mark.parametrize(("fmt", "container"), EVERY)
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_prepare_cli_on_malformed_files_at_scale(tmp_path_factory, pivot, fmt, container, data):
    _check_cli(tmp_path_factory.mktemp("cli"), pivot, fmt, container, data.draw(mixed_files(fmt, container)))


def _recipe(tmp_path: Path, train_text: str) -> Path:
    pivot = save_llama(tmp_path / "pivot", byte_bpe_tokenizer(400), seed=0)
    (tmp_path / "train.json").write_text(train_text)
    (tmp_path / "heldout.jsonl").write_text(json.dumps({"messages": sample_chats(1)[0]}) + "\n")
    recipe = {
        "name": "bad-data",
        "workdir": "run",
        "pivot": str(pivot),
        "sources": [{"name": "a", "model": str(pivot)}],
        "data": {
            "train": [{"kind": "file", "path": "train.json"}],
            "heldout": [{"kind": "file", "path": "heldout.jsonl"}],
            "max_length": 256,
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_run_stops_on_a_broken_data_file_before_any_model(tmp_path):
    """A JSON list broken in the middle cannot be read past the break: `fusechat run` stops at prepare."""
    records = [json.dumps({"messages": c}) for c in sample_chats(6)]
    records[3] = records[3][:-2] + ",}"
    path = _recipe(tmp_path, "[\n" + ",\n".join(records) + "\n]\n")
    line = error_line(fusechat("run", str(path), timeout=600), "run")
    assert line.startswith(f"{tmp_path / 'train.json'}: record 3: not valid JSON at line 5"), line
    assert not (tmp_path / "run" / "teach").exists()  # stopped at prepare: no model was run


def test_run_skips_and_counts_bad_records(tmp_path, pivot):
    """`fusechat run` prepares with --skip-invalid: the bad records of a recipe's file are skipped and counted,
    the good ones kept exactly (the pipeline's own prepare step, run in-process)."""
    from fusechat.run.plan import plan
    from fusechat.run.recipe import load_recipe

    good = [{"messages": c} for c in sample_chats(4)]
    bad = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 7}]},
        {"messages": []},
    ]
    records = [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3]]
    path = _recipe(tmp_path, json.dumps(records))
    recipe, base = load_recipe(path)
    step = next(s for s in plan(recipe, base) if s.name == "prepare/train")
    conv = Conversations(step.run())
    assert [conv.messages(i) for i in range(len(conv))] == [g["messages"] for g in good]
    counts = conv.manifest["counts"]["skipped_invalid"]
    assert counts == {"no_assistant_turn": 1, "non_string_content": 1, "unknown_role": 1}
