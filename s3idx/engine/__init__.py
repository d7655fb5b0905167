"""The engine under every command: put, get, query, delete, rebuild-index, sync, verify."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from s3idx.engine.core import Engine, open_engine
    from s3idx.engine.events import Events
    from s3idx.engine.results import (
        DeleteResult,
        GetResult,
        PutResult,
        RebuildResult,
        ReindexResult,
        Reject,
        SyncResult,
        VerifyResult,
    )

# Imported on first use (PEP 562): importing one engine module (``s3idx.engine.results`` for
# the CLI's result types) runs this file first, and must not import every operation with it.
_HOMES = {
    "Engine": "s3idx.engine.core",
    "open_engine": "s3idx.engine.core",
    "Events": "s3idx.engine.events",
    **dict.fromkeys(
        (
            "DeleteResult",
            "GetResult",
            "PutResult",
            "RebuildResult",
            "ReindexResult",
            "Reject",
            "SyncResult",
            "VerifyResult",
        ),
        "s3idx.engine.results",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 's3idx.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "DeleteResult",
    "Engine",
    "Events",
    "GetResult",
    "PutResult",
    "RebuildResult",
    "ReindexResult",
    "Reject",
    "SyncResult",
    "VerifyResult",
    "open_engine",
]
