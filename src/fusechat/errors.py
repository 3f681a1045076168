"""One exception type for problems the user can fix.

The command line prints a `FusechatError` as one line and exits with code 2, never with a traceback; every
other exception is a bug and keeps its traceback. Messages name the file, the record or the key, and the fix.
"""

from __future__ import annotations

from typing import Any


class FusechatError(Exception):
    """A user-fixable problem: bad input, bad configuration, an output directory that is not ours."""


class InvalidRecordError(FusechatError):
    """One input record is malformed; `--skip-invalid` skips and counts these instead of stopping."""

    def __init__(self, path: str, record: int, problem: str, fix: str = "") -> None:
        self.path, self.record, self.problem, self.fix = str(path), record, problem, fix
        tail = f"; {fix}" if fix else ""
        super().__init__(f"{path}: record {record}: {problem}{tail}")


def yaml_error(path: Any, e: Exception) -> FusechatError:
    """A YAML parse error as one line naming the file, line and column (PyYAML's own text spans lines)."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or (str(e).splitlines() or ["unreadable"])[0]
    return FusechatError(f"{path}: not valid YAML{where}: {problem}")
