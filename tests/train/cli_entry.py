"""`python -m fusechat` for the tests of this branch, where some stages' command modules are not merged yet.

It runs `fusechat.cli.main` unchanged once every module in `COMMANDS` imports; until then it drops the ones
that do not exist, so `fusechat train` can be tested through the real parser and dispatcher.
"""

import importlib.util

from fusechat import cli

cli.COMMANDS = tuple(
    name
    for name in cli.COMMANDS
    if importlib.util.find_spec(name.rsplit(".", 1)[0]) is not None and importlib.util.find_spec(name) is not None
)
raise SystemExit(cli.main())
