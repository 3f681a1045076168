"""Safety: a model directory's own Python code never runs unless asked (trust_remote_code), pickled weights are
refused unless --allow-pickle, and nothing a config names can make fusechat write outside its output directory.

The remote code and the pickle here write a marker file when executed; every stage that loads a model (prepare,
teach, train, merge, evaluate) runs on them and the marker must never appear.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from fusechat import cli
from fusechat.errors import FusechatError
from tests.faults.bad_configs import UNSAFE_NAMES, full_recipe
from tests.tiny_models import byte_bpe_tokenizer, sample_chats, save_llama


class _Touch:
    """Unpickling this runs `Path.touch(marker)`: what a malicious pickle could do with any function."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _remote_code_model(path: Path, marker: Path) -> Path:
    """A tiny Llama whose config and tokenizer config point (auto_map) at a module that writes `marker`."""
    save_llama(path, byte_bpe_tokenizer(300), seed=0)
    (path / "evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (path / "config.json").write_text(json.dumps(config))
    tok_config = json.loads((path / "tokenizer_config.json").read_text())
    tok_config["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", "evil.EvilTokenizer"]}
    (path / "tokenizer_config.json").write_text(json.dumps(tok_config))
    return path


def _pickled_model(path: Path, marker: Path) -> Path:
    """A tiny model directory whose only weights are a pickle that writes `marker` when loaded."""
    save_llama(path, byte_bpe_tokenizer(300), seed=0)
    for f in path.glob("*.safetensors"):
        f.unlink()
    torch.save({"model.embed_tokens.weight": _Touch(marker)}, path / "pytorch_model.bin")
    return path


def _conversations(tmp: Path, pivot: Path) -> Path:
    from fusechat.data.prepare import prepare

    data = tmp / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in sample_chats(4)))
    return prepare([data], pivot, tmp / "conv", max_length=128)


def test_remote_code_never_runs_in_any_stage(tmp_path):
    """prepare, teach, train, merge and evaluate all load the model of a repository with auto_map code."""
    from fusechat.evaluate import evaluate
    from fusechat.merge.engine import merge
    from fusechat.teacher.teach import teach
    from fusechat.train.api import train

    marker = tmp_path / "REMOTE_CODE_RAN"
    model = _remote_code_model(tmp_path / "evil", marker)
    conv = _conversations(tmp_path, model)
    store = teach(str(model), conv, tmp_path / "teach", top_k=4, progress=False)
    trained = train(
        model, store, tmp_path / "train", clm_only=True, max_steps=1, per_device_train_batch_size=2, report_to=[]
    )
    merged = merge(
        {
            "merge_method": "linear",
            "models": [{"model": str(model)}, {"model": str(trained)}],
            "parameters": {"weight": 0.5},
        },
        tmp_path / "merged",
    )
    evaluate({"evil": model, "merged": merged}, "bpb", tmp_path / "eval", conversations=conv, progress=False)
    assert not marker.exists(), "a model repository's own code ran without --trust-remote-code"


@pytest.mark.parametrize("stage", ["teach", "train", "merge", "evaluate"])
def test_pickled_weights_are_refused_unless_allowed(tmp_path, stage):
    marker = tmp_path / "PICKLE_RAN"
    model = _pickled_model(tmp_path / "pickled", marker)
    good = save_llama(tmp_path / "good", byte_bpe_tokenizer(300), seed=1)
    conv = _conversations(tmp_path, good)
    if stage == "teach":
        args = ["teach", "--model", str(model), "--conversations", str(conv), "--out", str(tmp_path / "o")]
    elif stage == "train":
        from fusechat.teacher.teach import teach

        store = teach(str(good), conv, tmp_path / "store", top_k=4, progress=False)
        args = ["train", "--pivot", str(model), "--targets", str(store), "--out", str(tmp_path / "o"), "--clm-only"]
    elif stage == "merge":
        cfg = tmp_path / "merge.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "merge_method": "linear",
                    "models": [{"model": str(good)}, {"model": str(model)}],
                    "parameters": {"weight": 0.5},
                }
            )
        )
        args = ["merge", str(cfg), str(tmp_path / "o")]
    else:
        args = ["evaluate", str(model), "--suite", "bpb", "--conversations", str(conv), "--out", str(tmp_path / "o")]
    parsed = cli.build_parser().parse_args(args)
    with pytest.raises(FusechatError, match="pickled .*--allow-pickle"):
        parsed.func(parsed)
    assert not marker.exists()
    assert cli.build_parser().parse_args([*args, "--allow-pickle"]).allow_pickle is True  # the way to allow it
    if stage != "merge":  # merge reads tensors only: no model code to trust
        assert cli.build_parser().parse_args([*args, "--trust-remote-code"]).trust_remote_code is True


def _recipe_file(tmp: Path, **changes) -> Path:
    raw = full_recipe()
    for key, value in changes.items():
        section, _, leaf = key.rpartition(".")
        target = raw
        for part in section.split(".") if section else []:
            target = target[int(part)] if part.isdigit() else target[part]
        target[leaf] = value
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _refused_line(capsys, path: Path) -> str:
    code = cli.main(["run", "--dry-run", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert err.startswith(f"fusechat run: error: {path}: "), err
    return err


@pytest.mark.parametrize("key", ["name", "sources.0.name"])
@pytest.mark.parametrize("bad", UNSAFE_NAMES)
def test_names_that_would_leave_the_run_directory_are_refused(tmp_path, capsys, key, bad):
    before = sorted(tmp_path.rglob("*"))
    path = _recipe_file(tmp_path, **{key: bad})
    err = _refused_line(capsys, path)
    assert ("sources[0].name" if key != "name" else ": name: ") in err
    assert sorted(tmp_path.rglob("*")) == [*before, path]  # nothing created


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"train.seeds": [0, 0]}, "train.seeds: [0, 0]: a seed is listed twice"),
        ({"merge.methods": [{"method": "linear"}, {"method": "linear"}]}, "method 'linear' is listed twice"),
        ({"sources": [{"name": "ties-s0", "model": "m"}]}, "ends like a trained or merged model's name"),
        ({"sources": [{"name": "pivot", "model": "m"}]}, "not 'pivot'"),
    ],
)
def test_names_that_would_collide_are_refused(tmp_path, capsys, changes, says):
    err = _refused_line(capsys, _recipe_file(tmp_path, **changes))
    assert says in err, err


def test_every_step_writes_inside_the_workdir(tmp_path):
    from fusechat.run.plan import plan
    from fusechat.run.recipe import Recipe

    raw = full_recipe()
    raw["sources"] = [{"name": "a.b", "model": "m1"}, {"name": "c_d-e", "model": "m2"}]
    raw["train"]["seeds"] = [0, 7]
    raw["merge"]["methods"] = [{"method": m} for m in ("varm", "linear", "task_arithmetic")]
    raw["workdir"] = "../elsewhere/run"  # the user's choice of workdir is free; everything stays under it
    steps = plan(Recipe.model_validate(raw), tmp_path)
    work = (tmp_path / "../elsewhere/run").resolve()
    assert len(steps) > 15
    for s in steps:
        assert s.out.resolve().is_relative_to(work), s


def test_merge_writes_only_inside_out(tmp_path):
    """Model paths may point anywhere (read only); the config's name and paths never become output paths."""
    from fusechat.merge.engine import merge

    inputs = tmp_path / "models"
    a = save_llama(inputs / "a", byte_bpe_tokenizer(300), seed=0)
    save_llama(inputs / "b", byte_bpe_tokenizer(300), seed=1)
    work = tmp_path / "work"
    work.mkdir()
    cfg = {
        "merge_method": "linear",
        "models": [{"model": str(a), "parameters": {"weight": 1.0}}, {"model": f"{work}/../models/b"}],
        "parameters": {"weight": 0.5},
        "name": "../../escaped",
        "tokenizer_source": f"{work}/../models/a",
    }
    before = {p for p in tmp_path.rglob("*")}
    out = merge(cfg, work / "out")
    created = {p for p in tmp_path.rglob("*")} - before
    # The one file beside OUT is the merge's own lock (OUT appears by a rename, so it cannot hold its lock).
    lock = out.parent / f".{out.name}.lock"
    assert created and all(p in (out, lock) or p.is_relative_to(out) for p in created), sorted(created)
    assert not any("escaped" in p.name for p in created)
    shutil.rmtree(out)


def test_pickle_marker_is_a_real_exploit(tmp_path):
    """The pickle used above does run its code when loaded without protection (so the tests can fail)."""
    marker = tmp_path / "RAN"
    model = _pickled_model(tmp_path / "m", marker)
    torch.load(model / "pytorch_model.bin", weights_only=False)
    assert marker.exists()


def test_remote_code_marker_is_a_real_exploit(tmp_path):
    """The auto_map module does run when remote code is trusted (so the test above can fail)."""
    from transformers import AutoConfig

    marker = tmp_path / "RAN"
    model = _remote_code_model(tmp_path / "m", marker)
    with pytest.raises(Exception):  # noqa: B017 (evil.py defines no class: importing it is the exploit)
        AutoConfig.from_pretrained(model, trust_remote_code=True)
    assert marker.exists()


@pytest.mark.parametrize("stage", ["teach", "train", "evaluate"])
def test_trust_remote_code_reaches_the_loader(tmp_path, stage):
    """With the flag, each stage does hand it to transformers (the module runs; it defines no class, so the load
    then fails): the flag is wired through, not silently dropped."""
    from fusechat.evaluate import evaluate
    from fusechat.teacher.teach import teach
    from fusechat.train.api import train

    marker = tmp_path / "RAN"
    model = _remote_code_model(tmp_path / "evil", marker)
    good = save_llama(tmp_path / "good", byte_bpe_tokenizer(300), seed=0)
    conv = _conversations(tmp_path, good)
    with pytest.raises(Exception):  # noqa: B017
        if stage == "teach":
            teach(str(model), conv, tmp_path / "o", trust_remote_code=True, progress=False)
        elif stage == "train":
            store = teach(str(good), conv, tmp_path / "store", top_k=4, progress=False)
            train(model, store, tmp_path / "o", clm_only=True, max_steps=1, trust_remote_code=True)
        else:
            evaluate({"m": model}, "bpb", tmp_path / "o", conversations=conv, trust_remote_code=True)
    assert marker.exists()
