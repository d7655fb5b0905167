"""Package attributes imported on first use (PEP 562), for ``s3idx`` and ``s3idx.engine``.

Importing one module of a package runs the package's ``__init__`` first: names it re-exports
are imported only when asked for, so ``s3idx --version`` and a query do not pay for the whole
engine (start-up time, issue 17). Imports nothing but importlib and sys, for the same reason.
"""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False  # not typing's: see s3idx/__init__.py
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any


def imported_on_first_use(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: a name of ``homes`` is imported from the
    module there the first time it is asked for, then kept as the package's own attribute."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
