"""The command line builds only the chosen subcommand's parser, and its module map matches what modules add."""

from __future__ import annotations

import argparse
import importlib

from fusechat import cli


def test_command_map_matches_what_each_module_registers():
    for module, names in cli.COMMANDS.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        assert tuple(sub.choices) == names, module


def test_parser_for_one_command_or_all():
    every = {n for names in cli.COMMANDS.values() for n in names}
    full = cli.build_parser()
    assert set(full._subparsers._group_actions[0].choices) == every
    only = cli.build_parser("fuse")
    assert set(only._subparsers._group_actions[0].choices) == {"fuse"}
    assert set(cli.build_parser("no-such-command")._subparsers._group_actions[0].choices) == every


def test_main_builds_the_parser_of_the_named_command(monkeypatch, tmp_path, capsys):
    seen = []
    build = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda command=None: seen.append(command) or build(command))
    assert cli.main(["-v", "verify", str(tmp_path)]) == 2  # an empty directory: one clear error
    assert seen == ["verify"] and "fusechat verify: error" in capsys.readouterr().err


def _parsers(parser: argparse.ArgumentParser, path: str = "fusechat"):
    """Every (sub)command's parser, with its command line, the top-level one aside."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{path} {name}", sub
                yield from _parsers(sub, f"{path} {name}")


def test_every_command_has_a_description_and_an_example():
    top = cli.build_parser()
    assert top.description and "\nexample:\n" in top.format_help()
    seen = list(_parsers(top))
    assert len(seen) >= 13  # ten modules' commands, and `models install` / `models list`
    for command, parser in seen:
        text = parser.format_help()
        assert parser.description and len(parser.description) > 40, command
        assert "\nexample:\n" in text, command
        example = text.split("\nexample:\n", 1)[1]
        assert command.removeprefix("fusechat ").split()[0] in example, (command, example)
