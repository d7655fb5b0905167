"""The engine under every command: put, get, query, delete, rebuild-index, sync, verify."""

from __future__ import annotations

from typing import TYPE_CHECKING

from s3idx._lazy import imported_on_first_use

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


__getattr__ = imported_on_first_use(__name__, _HOMES)


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
