"""The engine under every command: put, get, query, delete, rebuild-index, sync, verify."""

from s3idx.engine.core import Engine, open_engine
from s3idx.engine.results import (
    DeleteResult,
    Events,
    GetResult,
    PutResult,
    RebuildResult,
    ReindexResult,
    Reject,
    SyncResult,
    VerifyResult,
)

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
