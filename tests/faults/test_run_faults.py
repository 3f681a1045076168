"""Faults in `fusechat run` (a whole tiny recipe) through the real CLI: kill -9 anywhere, two runs at once.

After each kill, `fusechat status RUN_DIR` must work and no step it calls complete may fail `fusechat
verify`; the rerun resumes and must reproduce the uninterrupted run: byte-identical stores (prepare, teach,
align, fuse are deterministic) and checkpoints within float tolerance (training resumes from checkpoints).
"""

from __future__ import annotations

import json

import pytest
import yaml
from safetensors.torch import load_file

from fusechat.verify import verify
from tests.faults.common import (
    assert_one_clear_error,
    claims_complete,
    fusechat,
    kill_sweep,
    manifest,
    record,
    reference_run,
    run,
    second_run_refused,
    snapshot,
)
from tests.tiny_models import sample_chats


def recipe_file(root, world) -> object:
    chats = sample_chats(14)
    (root / "train.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats[:10]))
    (root / "heldout.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats[10:]))
    recipe = {
        "name": "faults",
        "workdir": "run",
        "pivot": str(world["pivot"]),
        "sources": [{"name": "a", "model": str(world["source"])}, {"name": "b", "model": str(world["pivot"])}],
        "data": {
            "train": [{"kind": "file", "path": "train.jsonl"}],
            "heldout": [{"kind": "file", "path": "heldout.jsonl"}],
            "max_length": 256,
        },
        "teach": {"top_k": 4},
        "train": {"lambda": 0.9, "max_steps": 3, "batch_size": 2, "learning_rate": 1e-3},
        "merge": {"methods": [{"method": "linear"}]},
        "evaluate": {"suite": ["bpb"]},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def outputs(run_dir):
    """Every step output of a run (directories holding a manifest), by path relative to the run."""
    return {str(m.parent.relative_to(run_dir)): m.parent for m in sorted(run_dir.rglob("manifest.json"))}


@pytest.fixture(scope="module")
def setup(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("run-faults")

    def cmd(run_root):
        run_root.mkdir(parents=True, exist_ok=True)
        return fusechat("run", recipe_file(run_root, world))

    ref = root / "reference"
    report = ref / "run" / "report"
    window = reference_run(cmd(ref), lambda: (ref / "run" / "pipeline.json").exists(), lambda: claims_complete(report))
    return {"root": root, "cmd": cmd, "ref": ref / "run", "window": window}


def same_run(setup):
    want = outputs(setup["ref"])

    def check(run_root):
        got = outputs(run_root / "run")
        assert got.keys() == want.keys()
        worst = 0.0
        for name, ref_dir in want.items():
            a, b = manifest(got[name]), manifest(ref_dir)
            if isinstance(b.get("shards"), list):  # a store: byte-identical shards
                assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]], name
            for f in b.get("files", {}):
                if f.endswith(".safetensors"):
                    x, y = load_file(got[name] / f), load_file(ref_dir / f)
                    worst = max([worst] + [float((x[k] - y[k]).abs().max()) for k in y])
        assert worst <= 1e-5, f"resumed checkpoints differ by {worst}"
        record("run-resume", "run", max_abs_diff=worst)

    return check


def started(run_root):
    return (run_root / "run" / "pipeline.json").exists()


def status_is_truthful(run_root) -> bool:
    done = run(fusechat("status", run_root / "run"))
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines()[1:-1]:
        state, out = line.split()[0], line.split()[-1]
        if state == "complete":
            assert verify(out) == [], (line, verify(out))
    return True


def _sweep(setup, kills, seed):
    def outs(run_root):
        status_is_truthful(run_root) if started(run_root) else None
        return list(outputs(run_root / "run").values()) if (run_root / "run").exists() else []

    def done(run_root):
        status = run(fusechat("status", run_root / "run")) if started(run_root) else None
        return bool(status and status.returncode == 0 and status.stdout.splitlines()[-1].endswith("complete")
                    and "partial" not in status.stdout and "missing" not in status.stdout)  # fmt: skip

    def steps_done(run_root):
        try:
            return len(json.loads((run_root / "run" / "pipeline.json").read_text())["done"])
        except (OSError, ValueError, KeyError):
            return 0

    units = len(json.loads((setup["ref"] / "pipeline.json").read_text())["steps"])
    return kill_sweep("run", setup["cmd"], outs, started, setup["window"], same_run(setup),
                      setup["root"] / f"sweep-{seed}", kills, seed, done=done, progress=steps_done,
                      units=units)  # fmt: skip


@pytest.mark.slow  # a whole recipe per run: test_pipeline_e2e covers the recipe itself by default
def test_kill_9_then_rerun_gives_the_same_run(setup):
    tally = _sweep(setup, kills=1, seed=51)
    assert tally.recovered == 1


@pytest.mark.slow
def test_kill_9_sweep(setup):
    tally = _sweep(setup, kills=10, seed=1051)
    assert tally.recovered == 10 and tally.mid_work >= 8


@pytest.mark.slow
def test_second_run_on_the_same_run_directory_refuses(setup, tmp_path):
    second_run_refused("run", setup["cmd"](tmp_path), lambda: started(tmp_path))
    same_run(setup)(tmp_path)


@pytest.mark.parametrize("folder", ["report", "eval", "teach/pivot"])
def test_a_users_folder_in_the_way_stops_the_run_before_any_step(world, tmp_path, folder):
    """A folder of the user's own where the plan will write (here `report/`, `eval/`, a teacher store) is refused
    before the first step, and nothing in it is written into or removed. The folder's only file a dotfile
    (`.env`) counts as the user's too."""
    recipe = recipe_file(tmp_path, world)
    mine = tmp_path / "run" / folder
    mine.mkdir(parents=True)
    (mine / "notes.md").write_text("my notes\n")
    (mine / ".env").write_text("TOKEN=x\n")
    before = snapshot(mine)
    line = assert_one_clear_error(run(fusechat("run", recipe)), str(mine), "not a fusechat")
    assert snapshot(mine) == before
    made = {p.name for p in (tmp_path / "run").iterdir()}
    assert made <= {folder.split("/")[0], ".lock"}, f"steps ran before the refusal: {made}"
    record("output-dir", "run", refused=True, folder=folder, line=line)


def test_dotfiles_alone_still_make_a_folder_the_users(world, tmp_path):
    """`.git` and `.env` without anything else: not an empty folder, not fusechat's. Refused as output."""
    recipe = recipe_file(tmp_path, world)
    mine = tmp_path / "run" / "report"
    (mine / ".git").mkdir(parents=True)
    (mine / ".env").write_text("TOKEN=x\n")
    before = snapshot(mine)
    assert_one_clear_error(run(fusechat("run", recipe)), str(mine))
    assert snapshot(mine) == before


def _project(root, world):
    """A self-contained project: the recipe, its data and its models under `root`, named by relative paths."""
    import shutil

    root.mkdir(parents=True)
    path = recipe_file(root, world)
    for name, model in (("pivot", world["pivot"]), ("source", world["source"])):
        shutil.copytree(model, root / "models" / name)
    body = yaml.safe_load(path.read_text())
    body["pivot"] = "models/pivot"
    body["sources"] = [{"name": "a", "model": "models/source"}, {"name": "b", "model": "models/pivot"}]
    path.write_text(yaml.safe_dump(body))
    return path


def _fingerprints(recipe):
    from fusechat.run.pipeline import Pipeline
    from fusechat.run.plan import plan
    from fusechat.run.recipe import load_recipe

    loaded, base = load_recipe(recipe)
    return Pipeline((base / loaded.workdir).resolve(), plan(loaded, base)).fingerprints()


def test_touching_moving_or_copying_a_project_changes_no_fingerprint(world, tmp_path, monkeypatch):
    """Step fingerprints name inputs by content (size + sha256) and paths relative to the recipe: `touch` on the
    data and the models, `cp -a` of the project and `mv` of it keep every step's fingerprint, so `run` redoes
    nothing (they used absolute paths and modification times: every step went stale). An edit of the data
    changes the steps that read it."""
    import os
    import subprocess

    monkeypatch.setenv("FUSECHAT_CACHE", str(tmp_path / "cache"))  # where the digests are kept between runs
    first = _project(tmp_path / "a", world)
    want = _fingerprints(first)
    for f in [first.parent / "train.jsonl", *sorted((first.parent / "models" / "pivot").iterdir())]:
        os.utime(f)
    assert _fingerprints(first) == want, "touch made steps stale"
    subprocess.run(["cp", "-a", str(tmp_path / "a"), str(tmp_path / "b")], check=True)
    assert _fingerprints(tmp_path / "b" / "recipe.yaml") == want, "cp -a made steps stale"
    (tmp_path / "b").rename(tmp_path / "c")
    assert _fingerprints(tmp_path / "c" / "recipe.yaml") == want, "moving made steps stale"
    with open(tmp_path / "c" / "train.jsonl", "a") as f:
        f.write(json.dumps({"messages": sample_chats(1)[0]}) + "\n")
    edited = _fingerprints(tmp_path / "c" / "recipe.yaml")
    assert edited["prepare/train"] != want["prepare/train"] and edited["prepare/heldout"] == want["prepare/heldout"]
    assert (tmp_path / "cache" / "content-hashes.json").is_file(), "digests are cached for the next run"


@pytest.mark.slow
def test_a_copied_and_touched_run_redoes_nothing(setup, tmp_path):
    """The reference run copied with `cp -a` and its data touched: `fusechat run` finds every step up to date."""
    import os
    import subprocess

    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(setup["ref"].parent), str(copy)], check=True)
    os.utime(copy / "train.jsonl")
    done = run(fusechat("run", copy / "recipe.yaml"))
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert steps and all("up to date" in line for line in steps), steps
