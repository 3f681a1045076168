"""Each stage's options are declared once (`<stage>/options.py`): the command's flags, the recipe's section and
the Python API's defaults agree, and the command line refuses a value by the rule the recipe uses."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from fusechat import cli
from fusechat.align.options import AlignOptions
from fusechat.data.options import PrepareCommandOptions, PrepareOptions
from fusechat.errors import FusechatError
from fusechat.evaluate.options import EvaluateCommandOptions
from fusechat.flags import docs_table, from_args
from fusechat.fuse.methods import METHODS
from fusechat.fuse.options import FuseOptions
from fusechat.merge.options import MergeOptions
from fusechat.run import recipe
from fusechat.teacher.options import TeachCommandOptions, TeachOptions
from fusechat.train.options import TrainCommandOptions, TrainOptions, trainer_defaults

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_recipe_sections_are_the_commands_options():
    assert issubclass(recipe.Data, PrepareOptions) and issubclass(PrepareCommandOptions, PrepareOptions)
    assert recipe.Teach is TeachOptions and issubclass(TeachCommandOptions, TeachOptions)
    assert recipe.Align is AlignOptions
    assert issubclass(recipe.Fuse, FuseOptions)
    assert issubclass(recipe.Train, TrainOptions) and issubclass(TrainCommandOptions, TrainOptions)
    assert FuseOptions.model_fields["method"].annotation.__args__ == METHODS


def test_choices_and_defaults_come_from_the_registries():
    """A recipe's evaluate tasks and merge methods are the registries' names, and the default suite is declared
    once (evaluate/options.py) for the command and the recipe alike: a task or a method is added in one place."""
    from fusechat.evaluate.options import DEFAULT_SUITE
    from fusechat.evaluate.tasks import TASKS
    from fusechat.merge.registry import METHODS as MERGE_METHODS

    (task,) = recipe.Evaluate.model_fields["suite"].annotation.__args__
    assert task.__args__ == tuple(TASKS) and set(DEFAULT_SUITE) <= set(TASKS)
    assert recipe.MergeMethod.model_fields["method"].annotation.__args__ == tuple(MERGE_METHODS)
    assert recipe.Evaluate().suite == list(DEFAULT_SUITE)
    args = cli.build_parser("evaluate").parse_args(["evaluate", "m", "--out", "o"])
    assert from_args(EvaluateCommandOptions, args).suite.split(",") == list(DEFAULT_SUITE)
    parser = cli.build_parser()
    helps = {a.dest: a.help for a in parser._subparsers._group_actions[0]._choices_actions}
    assert all(name in helps["merge"] for name in MERGE_METHODS), helps["merge"]


def _defaults(function) -> dict:
    return {k: p.default for k, p in inspect.signature(function).parameters.items() if p.default is not p.empty}


def test_python_api_defaults_are_the_declared_ones():
    """The stage functions' keyword defaults are the ones the commands and recipes declare."""
    from fusechat.align.stage import align
    from fusechat.data.prepare import prepare
    from fusechat.fuse.stage import fuse
    from fusechat.teacher.teach import teach
    from fusechat.train.api import train
    from fusechat.train.engines import PAPER_DEFAULTS

    declared = PrepareCommandOptions()
    assert _defaults(prepare)["max_length"] == declared.max_length and _defaults(prepare)["on_long"] == declared.on_long
    t = _defaults(teach)
    declared_teach = TeachCommandOptions().model_dump(exclude={"no_progress"})
    assert {k: t[k] for k in declared_teach} == declared_teach and t["progress"] is True
    assert {k: _defaults(align)[k] for k in ("alignment", "vocab_map")} == AlignOptions().model_dump()
    assert _defaults(fuse)["method"] == FuseOptions().method
    opts, api = TrainCommandOptions(), _defaults(train)
    assert (api["lam"], api["temperature"], api["max_length"], api["tail"]) == (
        opts.lam,
        opts.temperature,
        opts.max_length,
        opts.tail_bucket,
    )
    assert {k: PAPER_DEFAULTS[k] for k in trainer_defaults()} == trainer_defaults()
    from fusechat.evaluate.tasks import EvalOptions

    command_only = {"suite", "limit", "gsm_seed", "trust_remote_code", "allow_pickle", "no_progress"}
    declared_eval = EvaluateCommandOptions().model_dump(exclude=command_only)
    assert {k: getattr(EvalOptions(), k) for k in declared_eval} == declared_eval
    assert PAPER_DEFAULTS["learning_rate"] == 5e-6 and PAPER_DEFAULTS["num_train_epochs"] == 3  # the paper's
    assert PAPER_DEFAULTS["warmup_steps"] == 0.03 and PAPER_DEFAULTS["lr_scheduler_type"] == "cosine"


TRAIN = ["train", "--pivot", "p", "--targets", "t"]
# (command line, the flag and rule its one error line states, the same value in a recipe or None)
BAD = [
    (
        TRAIN + ["--batch-size", "0"],
        "--batch-size 0: input should be greater than or equal to 1",
        ("train", "batch_size", 0),
    ),
    (
        TRAIN + ["--grad-accum", "0"],
        "--grad-accum 0: input should be greater than or equal to 1",
        ("train", "grad_accum", 0),
    ),
    (
        TRAIN + ["--lr=-1e-5"],
        "--learning-rate/--lr -1e-5: input should be greater than 0",
        ("train", "learning_rate", -1e-5),
    ),
    (TRAIN + ["--lr", "0"], "--learning-rate/--lr 0: input should be greater than 0", ("train", "learning_rate", 0)),
    (TRAIN + ["--epochs", "0"], "--epochs 0: input should be greater than 0", ("train", "epochs", 0)),
    (TRAIN + ["--epochs", "-1"], "--epochs -1: input should be greater than 0", ("train", "epochs", -1)),
    (
        TRAIN + ["--max-steps", "0"],
        "--max-steps 0: input should be greater than or equal to 1",
        ("train", "max_steps", 0),
    ),
    (TRAIN + ["--lambda", "1.5"], "--lambda 1.5: input should be less than or equal to 1", ("train", "lambda", 1.5)),
    (
        TRAIN + ["--lr", "nan"],
        "--learning-rate/--lr nan: input should be a finite number",
        ("train", "learning_rate", float("nan")),
    ),
    (TRAIN + ["--per_device_train_batch_size", "0"], "--batch-size 0: input should be greater", None),
    (TRAIN + ["--trainer-arg", "learning_rate=-1"], "--learning-rate/--lr -1: input should be greater than 0", None),
    (TRAIN + ["--temperature", "0"], "--temperature 0: input should be greater than 0", None),
    (TRAIN + ["--warmup", "3", "--warmup-ratio", "0.1"], "give --warmup-ratio or --warmup-steps, not both", None),
    (["merge", "c.yml", "o", "--threads", "-1"], "--threads -1: input should be greater than or equal to 1", None),
    (
        ["merge", "c.yml", "o", "--max-shard-size", "0"],
        "--max-shard-size 0: input should be greater than or equal to 1",
        None,
    ),
    (
        ["teach", "--model", "m", "--conversations", "c", "--top-k", "0"],
        "--top-k 0: input should be greater",
        ("teach", "top_k", 0),
    ),
    (["teach", "--model", "m", "--conversations", "c", "--shard-rows", "0"], "--shard-rows 0: input should be", None),
    (
        ["prepare", "d.jsonl", "--pivot", "p", "--max-length", "8"],
        "--max-length 8: input should be greater than or equal to 16",
        ("data", "max_length", 8),
    ),
    (["evaluate", "m", "--max-tokens", "0"], "--max-tokens 0: input should be greater than or equal to 16", None),
    (["evaluate", "m", "--batch-size", "0"], "--batch-size 0: input should be greater than or equal to 1", None),
    (
        ["prepare", "d.jsonl", "--pivot", "p", "--limit", "0"],
        "--limit 0: input should be greater than or equal to 1",
        None,
    ),
]


def _recipe_error(tmp_path: Path, section: str, key: str, value) -> str:
    raw = {
        "name": "r",
        "workdir": "w",
        "pivot": "p",
        "sources": [{"name": "a", "model": "m"}],
        "data": {"train": [{"kind": "sharegpt"}]},
    }
    raw.setdefault(section, {})[key] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(FusechatError) as e:
        recipe.load_recipe(path)
    return str(e.value)


@pytest.mark.parametrize(("argv", "says", "in_recipe"), BAD, ids=[" ".join(b[0][-2:]) for b in BAD])
def test_cli_values_are_refused_by_the_recipes_rules(tmp_path, capsys, argv, says, in_recipe):
    out = tmp_path / "out"
    assert cli.main([*argv, "--out", str(out)] if argv[0] != "merge" else [argv[0], argv[1], str(out), *argv[3:]]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fusechat {argv[0]}: error: {says}"), lines
    assert not out.exists()
    if in_recipe:
        section, key, value = in_recipe
        rule = says.split(": ", 1)[1]
        assert f"{section}.{key}: {rule[0].upper()}{rule[1:]}" in _recipe_error(tmp_path, section, key, value)


def _train_options(*flags: str) -> dict:
    from fusechat.train.command import options_from

    parser = cli.build_parser("train")
    args, extra = parser.parse_known_args([*TRAIN, "--out", "o", *flags])
    if extra:
        args.trainer_flags = args.extra_args(extra)
    return options_from(args)[1]


def test_training_arguments_flags_as_hf_and_trl_users_type_them():
    options = _train_options(
        "--learning_rate", "1e-5", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps=2",
        "--lr_scheduler_type", "linear", "--eval_strategy", "no", "--dataloader_num_workers", "2",
        "--gradient_checkpointing", "true", "--max_steps", "7", "--trainer-arg", "adam_beta2=0.95",
    )  # fmt: skip
    assert options == {
        "learning_rate": 1e-5,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "lr_scheduler_type": "linear",
        "eval_strategy": "no",
        "dataloader_num_workers": 2,
        "gradient_checkpointing": True,
        "max_steps": 7,
        "adam_beta2": 0.95,
        "bf16": "auto",
    }
    # fusechat's own spellings give the same options; only what was typed is passed (defaults stay the API's)
    same = _train_options("--lr", "1e-5", "--batch-size", "4", "--grad-accum", "2", "--scheduler", "linear")
    assert same == {k: options[k] for k in same}
    assert _train_options() == {"bf16": "auto"}
    assert _train_options("--gradient-checkpointing") == _train_options("--gradient_checkpointing", "True")
    assert "gradient_checkpointing" not in _train_options("--gradient_checkpointing", "false")


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--batch-size", "4", "--per_device_train_batch_size", "8"), "--per_device_train_batch_size repeats"),
        (("--trainer-arg", "seed=1", "--seed", "2"), "--trainer-arg seed repeats"),
        (("--no_such_field", "1"), "unrecognized arguments: --no_such_field 1"),
        (("--num_train_epochs", "x"), "--num_train_epochs/--num-train-epochs: invalid float value: 'x'"),
    ],
)
def test_training_arguments_flags_refused_in_one_line(flags, says):
    with pytest.raises(FusechatError, match=says.replace("-", r"\-")):
        _train_options(*flags)


def test_an_optional_engine_that_is_missing_is_one_line(tmp_path):
    import importlib.util

    from fusechat.train.engines import training_args

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    with pytest.raises(FusechatError, match=r"DeepSpeed is not installed \(pip install deepspeed\)"):
        training_args(tmp_path, {"deepspeed": "ds.json"})


@pytest.mark.parametrize(
    ("model", "doc", "recipe_keys"),
    [
        (TrainCommandOptions, "training.md", False),
        (PrepareCommandOptions, "recipes.md", False),
        (TeachCommandOptions, "recipes.md", False),
        (AlignOptions, "align.md", False),
        (FuseOptions, "align.md", False),
        (MergeOptions, "merging.md", False),
        (EvaluateCommandOptions, "evaluate.md", False),
        (recipe.Data, "recipes.md", True),
        (recipe.Teach, "recipes.md", True),
        (recipe.Align, "recipes.md", True),
        (recipe.Fuse, "recipes.md", True),
        (recipe.Train, "recipes.md", True),
    ],
)
def test_docs_show_the_declared_options(model, doc, recipe_keys):
    """The options tables in docs/ are generated from the declarations (`python -m fusechat.flags`)."""
    assert docs_table(model, recipe=recipe_keys) in (DOCS / doc).read_text(), f"regenerate the table in docs/{doc}"


def test_python_api_trainer_options_follow_the_same_rules(tmp_path):
    """train(..., num_train_epochs=0) is refused as --epochs 0 is (it used to write a 0-step copy of the pivot
    marked complete); TrainingArguments' own -1 for "no step limit" is accepted."""
    from fusechat.train.engines import training_args

    for options, says in [
        ({"num_train_epochs": 0}, "--epochs 0: input should be greater than 0"),
        ({"per_device_train_batch_size": 0}, "--batch-size 0"),
        ({"learning_rate": -1e-5}, "--learning-rate/--lr -1e-05: input should be greater than 0"),
        ({"max_steps": 0}, "--max-steps 0"),
    ]:
        with pytest.raises(FusechatError, match=says):
            training_args(tmp_path, options)
    assert training_args(tmp_path, {"max_steps": -1, "report_to": ["none"]}).max_steps == -1
    assert not (tmp_path / "checkpoints").exists()
