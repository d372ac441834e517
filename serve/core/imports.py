"""Keeping a command's start-up to what it needs.

pyarrow imports pandas (about 0.2 s, half of a small ``linreg-predict`` run) the first time it
converts between Arrow and numpy, only to recognise pandas objects. A command that never meets a
pandas object runs inside :func:`without_pandas`: pyarrow then finds pandas absent and converts
as it does without it. A process that has already imported pandas is left as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.machinery import ModuleSpec
from typing import Any


class _Refuse:
    """An import finder (``sys.meta_path``) under which one package (and its modules) is found
    but fails to import, as a broken install would: ``import`` raises ImportError, while
    ``importlib.util.find_spec`` (which torch._dynamo runs over known packages) still works."""

    def __init__(self, package: str) -> None:
        self.package = package

    def find_spec(self, name: str, path: object = None, target: object = None) -> Any:
        if name == self.package or name.startswith(self.package + "."):
            return ModuleSpec(name, self)
        return None

    def create_module(self, spec: ModuleSpec) -> None:
        raise ImportError(f"{spec.name} is not imported by this command", name=spec.name)

    def exec_module(self, module: object) -> None:  # never reached: create_module raises
        raise ImportError(module)


@contextmanager
def without_pandas() -> Iterator[None]:
    """Within the block, ``import pandas`` fails as if pandas were not installed (unless it is
    already imported). For a command's own process: pyarrow remembers what it found."""
    if "pandas" in sys.modules:
        yield
        return
    finder = _Refuse("pandas")
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
