"""Faults in the prepared conversations and in `fusechat prepare` itself, through the real CLI.

The conversations file is the one input every later stage reads: a flipped bit in it must be refused by name,
not decoded into other text; a failed prepare must leave a good earlier output as it was; a huge message must
not cost memory in proportion to its size.
"""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from fusechat.verify import verify
from tests.faults.common import assert_one_clear_error, claims_complete, fusechat, manifest, record, run, snapshot
from tests.tiny_models import sample_chats


@pytest.fixture(scope="module")
def prepared(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("data-faults")
    data = root / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in sample_chats(24)))
    out = root / "conv"
    done = run(fusechat("prepare", data, "--pivot", world["pivot"], "--out", out, "--max-length", "256"))
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "data": data, "out": out, "world": world}


def decoding_flip(path, original: list[str]) -> int:
    """Flip single bits through the file until one still decodes, to other text; return how many were tried.

    zstd pages carry no checksum that pyarrow checks, so such flips exist (116 of 300 in the issue's sweep)."""
    clean = path.read_bytes()
    for tried, i in enumerate(range(len(clean) // 8, len(clean) * 7 // 8, 7), 1):
        data = bytearray(clean)
        data[i] ^= 0x04
        path.write_bytes(bytes(data))
        try:
            texts = pq.read_table(path).column("text").to_pylist()
        except Exception:  # noqa: BLE001 (any failure of the decoder: not the case we look for)
            continue
        if texts != original:
            return tried
    raise AssertionError("no single-bit flip decoded to other text")


def test_bit_flipped_conversations_are_refused_by_name(prepared, tmp_path):
    copy = tmp_path / "conv"
    shutil.copytree(prepared["out"], copy)
    original = pq.read_table(copy / "conversations.parquet").column("text").to_pylist()
    tried = decoding_flip(copy / "conversations.parquet", original)
    record("corruption-parses", "prepare", kind="bit-flipped", parses_as_parquet=True, tried=tried)
    out = tmp_path / "store"
    cmd = fusechat("teach", "--model", prepared["world"]["pivot"], "--conversations", copy, "--out", out)
    line = assert_one_clear_error(run([*cmd, "--top-k", "4", "--no-progress"]), "conversations.parquet", "checksum")
    record("corruption", "teach", kind="bit-flipped", file=".parquet", detected=True)
    assert not claims_complete(out)
    assert verify(copy), "verify must report the damaged conversations file"
    assert "rerun" in line


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


def test_evaluate_follows_the_output_rule(prepared, tmp_path):
    """evaluate: a folder of the user's own is refused before any data or model is read; its own scores of other
    models are refused unless --overwrite (they were replaced silently)."""
    world = prepared["world"]
    mine = tmp_path / "mine"
    (mine / ".git").mkdir(parents=True)
    cmd = fusechat("evaluate", "--suite", "bpb", "--conversations", prepared["out"], "--no-progress", "--out")
    assert_one_clear_error(run([*cmd, mine, f"p={world['pivot']}"]), str(mine), "not a fusechat 'evaluate'")
    assert [p.name for p in mine.iterdir()] == [".git"]
    out = tmp_path / "eval"
    done = run([*cmd, out, f"p={world['pivot']}"])
    assert done.returncode == 0, done.stderr[-3000:]
    before = snapshot(out)
    assert_one_clear_error(run([*cmd, out, f"s={world['source']}"]), str(out), "--overwrite")
    assert snapshot(out) == before
    done = run([*cmd, out, f"s={world['source']}", "--overwrite"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(json.loads((out / "scores.json").read_text())) == ["s"]
