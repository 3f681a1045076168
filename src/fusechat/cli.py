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
import os
import sys
from pathlib import Path
from typing import NoReturn

from fusechat._version import __version__
from fusechat.errors import FusechatError
from fusechat.flags import HelpFormatter

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
    parser = argparse.ArgumentParser(
        prog="fusechat",
        description="FuseChat (Wan et al. 2024): fuse chat models with different tokenizers and architectures "
        "into one pivot model. Each stage is a command; `run` runs a recipe of them all. "
        "`fusechat COMMAND --help` shows a command's options and an example.",
        epilog="example:\n  fusechat demo                 the embedded demo on three real small models\n"
        "  fusechat run recipe.yaml      every stage of a recipe (docs/recipes.md)\n",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fusechat {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument(
        "--offline", action="store_true", help="fetch nothing from PyPI or the hub (as FUSECHAT_OFFLINE=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = [m for m, names in COMMANDS.items() if command in names] or list(COMMANDS)
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args, extra = parser.parse_known_args(argv)
    if extra and not hasattr(args, "extra_args"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.offline:
        os.environ["FUSECHAT_OFFLINE"] = "1"  # read where a fetch would happen (pipcache, models.load)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        if extra:  # a command that takes flags of another library's (train: TrainingArguments fields)
            args.trainer_flags = args.extra_args(extra)
        result = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
    except FusechatError as e:
        print(f"fusechat {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `fusechat status RUN | head`: the reader has what it wanted
        _quiet_stdout()
        return 0
    except OSError as e:
        # A read-only or someone else's directory, or an --out where nothing can be created (/proc/...).
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) or (e.errno == errno.ENOENT and _at_out(args, e)):
            print(f"fusechat {args.command}: error: {_os_problem(e)}", file=sys.stderr)
            return 2
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) and "No space left" not in str(e):
            raise
        print(f"fusechat {args.command}: error: {disk_full_message(args, e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fusechat {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(result or 0)


def _os_problem(e: OSError) -> str:
    """A refused file operation as one line: which path, what the system said, and what to do."""
    where = e.filename if e.filename is not None else "a file"
    return f"{where}: {e.strerror or e}; choose an output directory you can write, or fix its permissions"


def _at_out(args: argparse.Namespace, e: OSError) -> bool:
    """Whether a failed file operation was on the command's --out, inside it, on a folder above it (created
    with it), or on a lock file beside it."""
    out = getattr(args, "out", None)
    if out is None or e.filename is None:
        return False
    out, path = Path(out).absolute(), Path(os.fsdecode(e.filename)).absolute()
    return path == out or out in path.parents or path in out.parents or path.parent == out.parent


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise a second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


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
