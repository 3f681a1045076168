"""Faults of `fusechat run` that are its own (kill -9 anywhere and two runs at once are the run row of
test_stage_faults.py): folders of the user's where the plan will write, and step fingerprints that survive
touching, copying and moving a project.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.faults.commands import write_recipe
from tests.faults.common import assert_one_clear_error, fusechat, record, run, snapshot
from tests.tiny_models import sample_chats


@pytest.mark.parametrize(
    ("folder", "notes"),
    [("report", True), ("eval", True), ("teach/pivot", True), ("report", False)],
    ids=["report", "eval", "teach/pivot", "report-dotfiles-only"],
)
def test_a_users_folder_in_the_way_stops_the_run_before_any_step(world, tmp_path, folder, notes):
    """A folder of the user's own where the plan will write (here `report/`, `eval/`, a teacher store) is refused
    before the first step, and nothing in it is written into or removed. Dotfiles alone (`.git`, `.env`) make
    it the user's too: not an empty folder, not fusechat's."""
    recipe = write_recipe(tmp_path, world)
    mine = tmp_path / "run" / folder
    (mine / ".git").mkdir(parents=True)
    (mine / ".env").write_text("TOKEN=x\n")
    if notes:
        (mine / "notes.md").write_text("my notes\n")
    before = snapshot(mine)
    line = assert_one_clear_error(run(fusechat("run", recipe)), str(mine), "not a fusechat")
    assert snapshot(mine) == before
    made = {p.name for p in (tmp_path / "run").iterdir()}
    assert made <= {folder.split("/")[0], ".lock"}, f"steps ran before the refusal: {made}"
    record("output-dir", "run", refused=True, folder=folder, line=line)


def _project(root, world):
    """A self-contained project: the recipe, its data and its models under `root`, named by relative paths."""
    import shutil

    root.mkdir(parents=True)
    path = write_recipe(root, world)
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
def test_a_copied_and_touched_run_redoes_nothing(world, tmp_path):
    """A whole run copied with `cp -a` and its data touched: `fusechat run` finds every step up to date."""
    import os
    import subprocess

    (tmp_path / "a").mkdir()
    first = run(fusechat("run", write_recipe(tmp_path / "a", world)))
    assert first.returncode == 0, first.stderr[-3000:]
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(tmp_path / "a"), str(copy)], check=True)
    os.utime(copy / "train.jsonl")
    done = run(fusechat("run", copy / "recipe.yaml"))
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert steps and all("up to date" in line for line in steps), steps
