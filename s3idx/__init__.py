"""s3idx: JSON documents as compressed objects in S3, a small queryable index in MongoDB or SQLite.

Use it from Python without the command line::

    from s3idx import open_engine

    with open_engine(store="s3://bucket/docs", index="mongodb://localhost/db") as engine:
        engine.put_documents([{"fs_id": "a", "task_id": "mp-1"}], fields=["task_id"])
        print(list(engine.query({"task_id": "mp-1"})))
"""

from s3idx._version import __version__
from s3idx.config import Settings, resolve_settings
from s3idx.engine import (
    DeleteResult,
    Engine,
    Events,
    GetResult,
    PutResult,
    RebuildResult,
    ReindexResult,
    Reject,
    SyncResult,
    VerifyResult,
    open_engine,
)
from s3idx.errors import ExitStatus, S3idxError
from s3idx.sharding import Shard

__all__ = [
    "DeleteResult",
    "Engine",
    "Events",
    "ExitStatus",
    "GetResult",
    "PutResult",
    "RebuildResult",
    "ReindexResult",
    "Reject",
    "S3idxError",
    "Settings",
    "Shard",
    "SyncResult",
    "VerifyResult",
    "__version__",
    "open_engine",
    "resolve_settings",
]
