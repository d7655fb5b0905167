"""s3idx: JSON documents as compressed objects in S3, a small queryable index in MongoDB or SQLite.

Use it from Python without the command line::

    from s3idx import open_engine

    with open_engine(store="s3://bucket/docs", index="mongodb://localhost/db") as engine:
        engine.put_documents([{"fs_id": "a", "task_id": "mp-1"}], fields=["task_id"])
        print(list(engine.query({"task_id": "mp-1"})))
"""

from __future__ import annotations

from s3idx._lazy import imported_on_first_use
from s3idx._version import __version__

# Not typing's TYPE_CHECKING: importing typing (with re, enum, collections) was most of what
# `s3idx --version` took in an installed s3idx (issue 17). mypy reads this name as typing's.
TYPE_CHECKING = False

if TYPE_CHECKING:
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

# Each name is imported on first use (PEP 562), so `s3idx --version`, and every module of the
# package importing `s3idx` first, does not pay for the whole engine (issue 17: start-up time).
_HOMES = {
    "Settings": "s3idx.config",
    "resolve_settings": "s3idx.config",
    "ExitStatus": "s3idx.errors",
    "S3idxError": "s3idx.errors",
    "Shard": "s3idx.sharding",
    **dict.fromkeys(
        (
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
        ),
        "s3idx.engine",
    ),
}


__getattr__ = imported_on_first_use(__name__, _HOMES)


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
