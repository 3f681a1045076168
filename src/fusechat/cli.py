"""The `fusechat` command line: parse, validate, call one stage function.

Each stage keeps its arguments in its own `command.py` (a `register(subparsers)` function that sets `func`);
this file only lists those modules, runs the chosen one, and turns a `FusechatError` into one clear line and
exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import gc
import importlib
import logging
import sys
from typing import NoReturn

from fusechat import __version__
from fusechat.errors import FusechatError

COMMANDS = {  # module: the subcommands its register() adds (a test holds this map to what they add)
    "fusechat.data.command": ("prepare",),
    "fusechat.models.command": ("models",),
    "fusechat.teacher.command": ("teach",),
    "fusechat.verify": ("verify",),
    "fusechat.run.command": ("run", "status", "demo"),
    "fusechat.align.command": ("align",),
    "fusechat.fuse.command": ("fuse",),
    "fusechat.merge.command": ("merge",),
    "fusechat.train.command": ("train",),
    "fusechat.evaluate.command": ("evaluate",),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or only of the module that defines `command` when it names one.

    Importing every command module costs a `fusechat merge` 0.4 s (pyarrow, the data readers), a tenth of
    a merge of three 500M models; `fusechat --help` and unknown commands still get the full list.
    """
    parser = argparse.ArgumentParser(prog="fusechat", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fusechat {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = [m for m, names in COMMANDS.items() if command in names] or list(COMMANDS)
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        result = args.func(args)
    except FusechatError as e:
        print(f"fusechat {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) and "No space left" not in str(e):
            raise
        print(f"fusechat {args.command}: error: {disk_full_message(args, e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fusechat {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(result or 0)


# Commands that start over after a failure instead of resuming (their partial output is removed).
RESTARTS = ("merge",)


def disk_full_message(args: argparse.Namespace, e: OSError) -> str:
    """What a full disk cost and what to do: the file being written (else the output directory), and whether a
    rerun resumes or starts over."""
    where = e.filename or getattr(args, "out", None)
    what = f"the disk is full writing {where}" if where else "the disk is full"
    if args.command in RESTARTS:
        return f"{what}; the partial output was removed: free space and rerun the same command (it starts over)"
    return f"{what}; finished parts are kept: free space and rerun the same command to resume"


def run() -> NoReturn:
    """The console entry point: `main()`, then exit without the interpreter's teardown collections.

    At exit Python runs full garbage collections over every object torch and numba created: 1.5-2 s of a
    `fusechat merge` here, longer than some merges. Freezing them first (nothing runs after) skips that.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
