"""Allows `python -m fusechat` (and `torchrun -m fusechat`) to run the command line."""

from fusechat.cli import run

run()
