"""Faults of `fusechat prepare` that are its own, through the real CLI: a failed prepare must leave a good earlier
output as it was; a huge message must not cost memory in proportion to its size. (A flipped bit in the prepared
conversations, refused by name rather than decoded into other text, is the teach row of test_stage_faults.py.)
"""

from __future__ import annotations

import json
import shutil

import pytest

from fusechat.verify import verify
from tests.faults.common import assert_one_clear_error, claims_complete, fusechat, manifest, record, run, snapshot
from tests.tiny_models import sample_chats


@pytest.fixture
def prepared(world, references):
    """The prepare stage's reference output (stages.py: 24 chats, --max-length 256)."""
    return {"out": references("prepare"), "world": world}


@pytest.mark.parametrize(
    "bad",
    [
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{"messages": 3}\n',
        "not json at all\n",
    ],
    ids=["bad-record", "garbage"],
)
def test_a_failed_prepare_leaves_the_good_output_as_it_was(prepared, tmp_path, bad):
    """prepare into an existing good output, from a file it refuses: one line, and the old output stays whole
    and readable (it used to be reduced to a header with `complete: false`, its counts lost). Without
    --overwrite the other inputs are refused first, as by every stage."""
    out = tmp_path / "conv"
    shutil.copytree(prepared["out"], out)
    before = snapshot(out)
    data = tmp_path / "bad.jsonl"
    data.write_text(bad)
    cmd = fusechat("prepare", data, "--pivot", prepared["world"]["pivot"], "--out", out)
    assert_one_clear_error(run(cmd), str(out), "--overwrite")  # other inputs: refused before any work
    assert snapshot(out) == before
    assert_one_clear_error(run([*cmd, "--overwrite"]), str(data))
    assert snapshot(out) == before, "a failed prepare changed the good output"
    assert claims_complete(out) and verify(out) == []
    assert manifest(out)["counts"]["kept"] == 24
    record("failed-prepare", "prepare", kept_whole=True)


PEAK = """
import resource, sys
from fusechat.cli import main
code = main(sys.argv[1:])
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, code)
"""


def _peak(args) -> tuple[int, int]:
    """Peak resident memory (bytes) and exit code of `fusechat ARGS` run in a fresh process."""
    import sys

    done = run([sys.executable, "-c", PEAK, *map(str, args)])
    line = [x for x in done.stdout.splitlines() if x.startswith("PEAK")]
    assert line, done.stderr[-3000:]
    _, peak, code = line[-1].split()
    return int(peak), int(code)


@pytest.mark.parametrize("on_long", ["drop", pytest.param("truncate", marks=pytest.mark.slow)])
def test_memory_does_not_grow_with_a_huge_message(prepared, tmp_path, on_long):
    """A 4 MB message is measured on a prefix, not tokenised whole (about 160 bytes per character: 0.65 GB;
    before, 12 MB cost 1.9 GB here): the peak memory of prepare stays within 200 MB of the same run without
    it, and the result is the one the whole-text rule gives (dropped, or cut before the long exchange)."""
    chats = sample_chats(4)
    huge = [*chats[0][:3], {"role": "user", "content": "again"}, {"role": "assistant", "content": "word " * 800_000}]
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    small.write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats))
    big.write_text("".join(json.dumps({"messages": c}) + "\n" for c in [*chats, huge]))
    pivot = prepared["world"]["pivot"]
    common = ["--pivot", pivot, "--max-length", "256", "--on-long", on_long]
    base, code = _peak(["prepare", small, "--out", tmp_path / "a", *common])
    assert code == 0
    peak, code = _peak(["prepare", big, "--out", tmp_path / "b", *common])
    assert code == 0
    record("memory", "prepare", on_long=on_long, base=base, peak=peak, message_chars=len(huge[-1]["content"]))
    assert peak - base < 200 << 20, f"peak {peak >> 20} MB against {base >> 20} MB without the 4 MB message"
    counts = manifest(tmp_path / "b")["counts"]
    if on_long == "drop":
        assert counts["kept"] == 4 and counts["dropped_too_long"] == 1
    else:
        assert counts["kept"] == 5 and counts["truncated"] == 1
