"""One exception type for problems the user can fix.

The command line prints a `FusechatError` as one line and exits with code 2, never with a traceback; every
other exception is a bug and keeps its traceback. Messages name the file, the record or the key, and the fix.
"""

from __future__ import annotations


class FusechatError(Exception):
    """A user-fixable problem: bad input, bad configuration, an output directory that is not ours."""


class InvalidRecordError(FusechatError):
    """One input record is malformed; `--skip-invalid` skips and counts these instead of stopping."""

    def __init__(self, path: str, record: int, problem: str, fix: str = "") -> None:
        self.path, self.record, self.problem, self.fix = str(path), record, problem, fix
        tail = f"; {fix}" if fix else ""
        super().__init__(f"{path}: record {record}: {problem}{tail}")
