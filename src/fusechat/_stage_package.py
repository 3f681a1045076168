"""Stage packages that are also their stage function, so `from fusechat import train` gives a callable.

Six names of the Python API (`align`, `evaluate`, `fuse`, `merge`, `run`, `train`) are also subpackages of
`fusechat`. Importing a submodule sets the parent package's attribute to it (`import fusechat.train.api` makes
`fusechat.train` the package), so `fusechat.train` cannot stay the function. Instead each of those packages
is made callable: calling it calls the stage function (imported on the first call), its signature is the
function's, and `fusechat.train.api` and every other submodule work as before.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from typing import Any


class StagePackage(types.ModuleType):
    """A package module that forwards calls to its stage function `__stage__ = (module, name)`."""

    __stage__: tuple[str, str]

    def _function(self) -> Any:
        module, name = self.__stage__
        return getattr(importlib.import_module(module), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self._function())

    @property
    def __wrapped__(self) -> Any:
        return self._function()


def make_callable(package: str, module: str, name: str) -> None:
    """Make the package `package` (already in sys.modules: call this from its __init__) call `module.name`."""
    mod = sys.modules[package]
    mod.__class__ = StagePackage
    mod.__stage__ = (module, name)
