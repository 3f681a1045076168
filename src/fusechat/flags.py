"""Stage options declared once: pydantic models whose fields become command-line flags and recipe keys.

A stage's tunable options are the fields of one model (in `<stage>/options.py`): type, default, bounds and help
text in one place. The recipe's section for the stage is that model (or a subclass of it), and the stage's
command builds its flags from the same fields and validates what the user typed with the same model, so
`--batch-size 0` is refused by the rule, and with the words, that refuse `train: {batch_size: 0}` in a recipe.
"""

from __future__ import annotations

import argparse
import importlib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fusechat.errors import FusechatError


class Options(BaseModel):
    """Base of every stage's options: unknown keys refused, values frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


def option(default: Any, help: str, *, flags: tuple[str, ...] = (), trainer: str | None = None, **rules: Any) -> Any:
    """A field of an options model: its default, help text and bounds (pydantic's `ge`, `gt`, ...).

    `flags` are extra spellings of its command-line flag (`--lr` beside `--learning-rate`); `trainer` names the
    `transformers.TrainingArguments` field it sets, for the training stage.
    """
    extra = {k: v for k, v in (("flags", list(flags)), ("trainer", trainer)) if v}
    return Field(default, description=help, json_schema_extra=extra or None, **rules)


def _extra(field: Any) -> dict:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def flag_names(name: str, field: Any) -> list[str]:
    """The flags of one field: `--dashed-name` first, the `--underscore_name` that HF users type, then aliases."""
    key = field.alias or name
    names = [f"--{key.replace('_', '-')}", f"--{key}", *_extra(field).get("flags", [])]
    return list(dict.fromkeys(names))


def _choices(annotation: Any) -> tuple | None:
    """The values of a Literal (possibly Optional) annotation, else None."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if typing.get_origin(arg) is Literal:
                return typing.get_args(arg)
    return None


def default_text(field: Any) -> str:
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "off" if not default else "on"
    if isinstance(default, float):  # 5e-06 -> 5e-6, 5e+09 -> 5e9: as a user would type them
        return f"{default:g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
    return str(default)


def add_flags(
    parser: argparse.ArgumentParser, model: type[BaseModel], *, skip: tuple[str, ...] = (), bool_values: bool = False
) -> None:
    """Add one flag per field of `model` (but `skip`); defaults stay in the model (parsed values are strings).

    The `--underscore_name` spelling (as HF and TRL users type flags) is accepted too, left out of the help.
    With `bool_values` a switch also takes an optional value (`--gradient_checkpointing true`, as
    HfArgumentParser allows); only for a command without positional arguments, which the value could swallow.
    """
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        help_text = field.description or ""
        if field.annotation is bool and bool_values:
            kwargs.update(nargs="?", const=True, metavar="BOOL")
        elif field.annotation is bool:
            kwargs.update(action="store_const", const=True)
        else:
            choices = _choices(field.annotation)
            if choices:
                kwargs["choices"] = choices
            help_text = f"{help_text} (default {default_text(field)})"
            kwargs["metavar"] = "{" + ",".join(map(str, choices)) + "}" if choices else (field.alias or name).upper()
        flags = flag_names(name, field)
        shown = [f for f in flags if "_" not in f]
        parser.add_argument(*shown, help=help_text.replace("%", "%%"), **kwargs)
        hidden = [f for f in flags if "_" in f]
        if hidden:
            parser.add_argument(*hidden, help=argparse.SUPPRESS, **kwargs)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that an epilog of examples keeps its lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example"):
            return text
        return super()._fill_text(text, width, indent)


def given(model: type[BaseModel], args: argparse.Namespace) -> dict[str, Any]:
    """The fields of `model` the user gave on the command line (absent ones keep the model's default)."""
    return {name: getattr(args, name) for name in model.model_fields if hasattr(args, name)}


def validate(model: type[BaseModel], values: dict[str, Any], where: str = "") -> Any:
    """`model` from field values, or a FusechatError naming the first bad flag, its value and the rule."""
    try:
        return model.model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else ""
        field = model.model_fields.get(name) or next((f for f in model.model_fields.values() if f.alias == name), None)
        spellings = [flag_names(name, field)[0], *_extra(field).get("flags", [])] if field is not None else [name]
        flag = "/".join(spellings)
        value = f" {values[name]}" if name in values else ""
        msg = str(err["msg"]).removeprefix("Value error, ")
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        what = f"{flag}{value}: " if flag else ""
        raise FusechatError(f"{where}{what}{msg[:1].lower()}{msg[1:]}{more}") from None


def from_args(model: type[BaseModel], args: argparse.Namespace) -> Any:
    """Validate the flags of `model` that were given; the rest take the model's defaults."""
    return validate(model, given(model, args))


def subcommand(
    subparsers: argparse._SubParsersAction, name: str, help: str, description: str, example: str
) -> argparse.ArgumentParser:
    """A subcommand's parser: its line in `fusechat --help`, its description, and an epilog of examples that keeps
    its lines as written."""
    return subparsers.add_parser(
        name, help=help, description=description, epilog=example, formatter_class=HelpFormatter
    )


Arg = tuple[tuple[str, ...], dict[str, Any]]


def arg(*names: str, **kwargs: Any) -> Arg:
    """One `add_argument` call as data: its names and keywords."""
    return names, kwargs


def _dest(argument: Arg) -> str:
    names, kwargs = argument
    return kwargs.get("dest") or names[0].lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class StageCommand:
    """A command that is its stage's function on the command line: parse the inputs and the options model's flags,
    call `stage(*inputs, **options, **extras)`, print what it returns (the output directory), exit 0.

    That shape is written here once; a command states its words, its arguments and only what it passes
    otherwise: `rename` (an option whose keyword in the stage function is spelt differently), `adjust` (values
    computed from the parsed arguments), or `keywords` (all of them, for a command that gathers its options
    from more than its model's flags).
    """

    name: str
    help: str
    description: str
    example: str
    stage: str  # "module:function", imported when the command runs (so `--help` imports no torch)
    inputs: tuple[Arg, ...]  # passed to the stage by position, in this order
    options: type[BaseModel] | None = None  # its fields are flags, passed by keyword
    extras: tuple[Arg, ...] = ()  # more arguments, passed by keyword under their dest
    overwrite: str | None = None  # the help of --overwrite, for a stage that takes `overwrite`
    rename: Mapping[str, str] = dataclass_field(default_factory=dict)  # option -> the stage's keyword
    adjust: Callable[[argparse.Namespace, dict[str, Any]], dict[str, Any]] | None = None
    keywords: Callable[[argparse.Namespace], dict[str, Any]] | None = None
    bool_values: bool = False  # see add_flags

    def register(self, subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
        p = subcommand(subparsers, self.name, self.help, self.description, self.example)
        for names, kwargs in (*self.inputs, *self.extras):
            p.add_argument(*names, **kwargs)
        if self.options is not None:
            add_flags(p, self.options, bool_values=self.bool_values)
        if self.overwrite:
            p.add_argument("--overwrite", action="store_true", help=self.overwrite)
        p.set_defaults(func=self.run)
        return p

    def run(self, args: argparse.Namespace) -> int:
        if self.keywords is not None:
            kwargs = self.keywords(args)
        else:
            options = from_args(self.options, args).model_dump() if self.options is not None else {}
            kwargs = {self.rename.get(k, k): v for k, v in options.items()}
        kwargs.update({_dest(a): getattr(args, _dest(a)) for a in self.extras})
        if self.overwrite:
            kwargs["overwrite"] = args.overwrite
        if self.adjust is not None:
            kwargs = self.adjust(args, kwargs)
        module, _, function = self.stage.partition(":")
        stage = getattr(importlib.import_module(module), function)
        print(stage(*(getattr(args, _dest(a)) for a in self.inputs), **kwargs))
        return 0


def docs_table(model: type[BaseModel], *, recipe: bool = False) -> str:
    """A Markdown table of the model's options (flag or recipe key, default, meaning), as docs/ shows them."""
    head = "| key | default | meaning |" if recipe else "| flag | default | meaning |"
    rows = [head, "|---|---|---|"]
    for name, field in model.model_fields.items():
        flags = [flag_names(name, field)[0], *_extra(field).get("flags", [])]
        key = f"`{field.alias or name}`" if recipe else ", ".join(f"`{f}`" for f in flags)
        choices = _choices(field.annotation)
        meaning = (field.description or "") + (f" ({' / '.join(map(str, choices))})" if choices else "")
        rows.append(f"| {key} | {default_text(field)} | {meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m fusechat.flags fusechat.train.options:TrainCommandOptions [--recipe]
    import importlib
    import sys

    module, _, name = sys.argv[1].partition(":")
    print(docs_table(getattr(importlib.import_module(module), name), recipe="--recipe" in sys.argv), end="")
