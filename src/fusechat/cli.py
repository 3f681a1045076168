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

COMMANDS = (
    "fusechat.data.command",
    "fusechat.models_command",
    "fusechat.teacher.command",
    "fusechat.verify",
    "fusechat.run_command",
    "fusechat.align.command",
    "fusechat.merge.command",
    "fusechat.train.command",
    "fusechat.evaluate.command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusechat", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fusechat {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
        where = f" writing {e.filename}" if getattr(e, "filename", None) else ""
        print(
            f"fusechat {args.command}: error: the disk is full{where}; finished parts are kept: "
            "free space and rerun the same command to resume",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"fusechat {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(result or 0)


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
