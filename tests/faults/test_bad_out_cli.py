"""Output directories a stage cannot or must not use, through the real command line of every stage in the stage
table (stages.py; a subprocess each): a read-only file system, a place where nothing can be created (/proc), an
`--out` holding a damaged `manifest.json`, one holding only the user's dotfiles, one made with other settings.
Each is exit code 2 with one line naming the path, never a traceback, and nothing of the user's is changed.
Also: `verify` on a damaged manifest, and a reader that closes the pipe early (`status RUN | head`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fusechat.verify import verify
from tests.faults.common import ENV, assert_one_clear_error, claims_complete, fusechat, run, snapshot
from tests.faults.stages import stages


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """An empty tmpfs mounted read-only (as root, permissions alone would not stop a write)."""
    path = tmp_path_factory.mktemp("read-only")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("stage", stages("read-only"))
def test_read_only_out_is_one_line(world, read_only, stage):
    out = read_only / f"{stage.name}-out"
    line = assert_one_clear_error(run(stage.command(world, out)), "Read-only file system")
    assert str(read_only) in line and "choose an output directory you can write" in line


@pytest.mark.parametrize("stage", stages("no-such-place"))
def test_out_where_nothing_can_be_created_is_one_line(world, stage):
    out = Path("/proc/fusechat-cannot-exist") / stage.name
    line = assert_one_clear_error(run(stage.command(world, out)), "/proc/", "No such file or directory")
    assert not out.exists()
    assert "choose an output directory" in line


DAMAGED = [b'{"stage": "teach", "complete": tr', b"[1, 2]", b"\xff\xfe not text"]


# merge refuses any existing OUT; a run's workdir holds no manifest of its own
@pytest.mark.parametrize("stage", stages("damaged-manifest", lambda s: s.name not in ("merge", "run")))
@pytest.mark.parametrize("damage", range(len(DAMAGED)))
def test_out_holding_a_damaged_manifest_is_one_line_and_kept(world, tmp_path, stage, damage):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_bytes(DAMAGED[damage])
    (out / "notes.txt").write_text("the user's")
    assert_one_clear_error(run(stage.command(world, out)), str(out / "manifest.json"), "another --out")
    assert (out / "manifest.json").read_bytes() == DAMAGED[damage]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "notes.txt"]


# A run's workdir may be the user's project folder; the folders a run writes in it (`report/`, `eval/`, a teacher
# store, ...) are held to this rule in test_run_faults.py.
@pytest.mark.parametrize("stage", stages("users-folder", lambda s: s.name != "run"))
def test_out_holding_only_the_users_dotfiles_is_refused(world, tmp_path, stage):
    """`.git` and `.env` alone: not an empty folder, not fusechat's. Refused before any work, left as it was."""
    out = tmp_path / "mine"
    (out / ".git").mkdir(parents=True)
    (out / ".env").write_text("TOKEN=x\n")
    before = snapshot(out)
    assert_one_clear_error(run(stage.command(world, out)), str(out))
    assert snapshot(out) == before


@pytest.mark.parametrize("stage", stages("other-settings", lambda s: s.other))
def test_out_made_with_other_settings_is_refused_unless_overwrite(world, references, tmp_path, stage):
    """A whole output of the stage, rerun with other inputs or settings (fuse --method avgce into a MinCE store
    used to replace it silently): one line and nothing touched; `--overwrite` replaces it."""
    import shutil

    out = shutil.copytree(references(stage.name), tmp_path / "out")
    before = snapshot(out)
    cmd = stage.command(world, out, **stage.other(world))
    assert_one_clear_error(run(cmd), str(out), "--overwrite")
    assert snapshot(out) == before
    done = run([*cmd, "--overwrite"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert claims_complete(out) and verify(out) == [] and snapshot(out) != before


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
