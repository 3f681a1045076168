"""Output directories a stage cannot use, through the real command line of every stage (a subprocess each): a
read-only file system, a place where nothing can be created (/proc), an `--out` holding a damaged
`manifest.json`. Each is exit code 2 with one line naming the path, never a traceback, and nothing of the user's
is changed. Also: `verify` on a damaged manifest, and a reader that closes the pipe early (`status RUN | head`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.faults.common import ENV, assert_one_clear_error, fusechat, run
from tests.tiny_models import sample_chats

STAGES = ("prepare", "teach", "align", "fuse", "train", "merge", "evaluate", "run")


def stage_command(stage: str, world: dict, out: Path) -> list[str]:
    """The shortest real command of `stage` writing into `out`."""
    w = world
    chats = w["root"] / "chats.jsonl"
    if not chats.is_file():
        chats.write_text("".join(json.dumps({"messages": c}) + "\n" for c in sample_chats(4)))
    if stage == "prepare":
        return fusechat("prepare", chats, "--pivot", w["pivot"], "--out", out)
    if stage == "run":  # the recipe's workdir is the run's output
        recipe = {
            "name": "t",
            "workdir": str(out),
            "pivot": str(w["pivot"]),
            "sources": [{"name": "a", "model": str(w["source"])}],
            "data": {"train": [{"kind": "file", "path": str(chats)}], "max_length": 256},
        }
        (w["root"] / "recipe.yaml").write_text(json.dumps(recipe))
        return fusechat("run", w["root"] / "recipe.yaml")
    if stage == "teach":
        return fusechat("teach", "--model", w["pivot"], "--conversations", w["conv"], "--out", out, "--no-progress")
    if stage == "align":
        return fusechat("align", "--pivot-store", w["pivot_store"], "--source-store", w["source_store"], "--out", out)
    if stage == "fuse":
        return fusechat("fuse", "--pivot-store", w["pivot_store"], "--aligned", w["aligned"], "--out", out)
    if stage == "train":
        return fusechat("train", "--pivot", w["pivot"], "--targets", w["fused"], "--out", out, "--max-steps", "1")
    if stage == "merge":
        config = w["root"] / "linear.yml"
        models = [{"model": str(m), "parameters": {"weight": 0.5}} for m in w["merge_inputs"][:2]]
        config.write_text(json.dumps({"merge_method": "linear", "models": models}))
        return fusechat("merge", config, out)
    return fusechat(
        "evaluate", w["pivot"], "--suite", "bpb", "--conversations", w["conv"], "--out", out, "--no-progress"
    )


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """An empty tmpfs mounted read-only (as root, permissions alone would not stop a write)."""
    path = tmp_path_factory.mktemp("read-only")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("stage", STAGES)
def test_read_only_out_is_one_line(world, read_only, stage):
    out = read_only / f"{stage}-out"
    line = assert_one_clear_error(run(stage_command(stage, world, out)), "Read-only file system")
    assert str(read_only) in line and "choose an output directory you can write" in line


@pytest.mark.parametrize("stage", STAGES)
def test_out_where_nothing_can_be_created_is_one_line(world, stage):
    out = Path("/proc/fusechat-cannot-exist") / stage
    line = assert_one_clear_error(run(stage_command(stage, world, out)), "/proc/", "No such file or directory")
    assert not out.exists()
    assert "choose an output directory" in line


DAMAGED = [b'{"stage": "teach", "complete": tr', b"[1, 2]", b"\xff\xfe not text"]


@pytest.mark.parametrize("stage", [s for s in STAGES if s not in ("merge", "run")])  # merge refuses any existing
@pytest.mark.parametrize("damage", range(len(DAMAGED)))
def test_out_holding_a_damaged_manifest_is_one_line_and_kept(world, tmp_path, stage, damage):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_bytes(DAMAGED[damage])
    (out / "notes.txt").write_text("the user's")
    assert_one_clear_error(run(stage_command(stage, world, out)), str(out / "manifest.json"), "another --out")
    assert (out / "manifest.json").read_bytes() == DAMAGED[damage]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "notes.txt"]


@pytest.mark.parametrize(
    "manifest",
    [*DAMAGED, b'{"complete": true, "files": [1], "shards": [3, {"bytes": 1}]}', b'{"files": {"a": 1}}'],
)
def test_verify_reports_a_damaged_manifest(tmp_path, manifest):
    (tmp_path / "manifest.json").write_bytes(manifest)
    done = run(fusechat("verify", tmp_path))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1].startswith(f"{tmp_path}: ") and "problem" in done.stdout


def test_a_reader_that_stops_early_is_not_an_error(tmp_path):
    """`fusechat status RUN | head -1`: the pipe closes under the table; exit 0, nothing on stderr."""
    steps = [{"name": f"teach/m{i}", "out": f"teach/m{i}", "fingerprint": "0"} for i in range(2000)]
    state = {"format": "fusechat.pipeline-state", "steps": steps, "done": {}}
    (tmp_path / "pipeline.json").write_text(json.dumps(state))
    reader = subprocess.Popen(["head", "-1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    done = subprocess.run(fusechat("status", tmp_path), stdout=reader.stdin, stderr=subprocess.PIPE, env=ENV, text=True)
    reader.stdin.close()
    first = reader.stdout.read().decode()
    reader.wait()
    assert done.returncode == 0 and done.stderr == "", done.stderr[-3000:]
    assert first.strip(), "status printed nothing"
