"""From locations (URLs and paths) to backend objects.

Backend modules are imported only when their scheme is used, so the embedded default never
imports boto3 or pymongo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from s3idx.config import TRANSPORTS, Settings, redact
from s3idx.errors import UsageError
from s3idx.index.base import Index
from s3idx.store.base import ObjectStore


@dataclass(frozen=True, slots=True)
class StoreLocation:
    kind: str  # "local" or "s3"
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class IndexLocation:
    kind: str  # "sqlite" or "mongodb"
    path: Path | None = None
    uri: str = ""
    database: str = ""


def parse_store_location(text: str) -> StoreLocation:
    if text.startswith("s3://"):
        rest = text[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise UsageError(f"store {text!r} names no bucket; expected s3://BUCKET[/PREFIX]")
        return StoreLocation("s3", bucket=bucket, prefix=prefix.strip("/"))
    if text.startswith("file://"):
        return StoreLocation("local", path=Path(unquote(urlsplit(text).path)))
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise UsageError(
            f"unknown store scheme {scheme + '://'!r}; use a directory, file://PATH or "
            "s3://BUCKET/PREFIX"
        )
    if not text:
        raise UsageError("the store location is empty")
    return StoreLocation("local", path=Path(text).expanduser())


def parse_index_location(text: str) -> IndexLocation:
    if text.startswith(("mongodb://", "mongodb+srv://")):
        try:
            database = urlsplit(text).path.lstrip("/")
        except ValueError as exc:
            raise UsageError(f"index {redact(text)!r} is not a valid URI: {exc}") from None
        if not database:
            raise UsageError(
                f"index {redact(text)!r} names no database; expected mongodb://HOST[:PORT]/DB"
            )
        return IndexLocation("mongodb", uri=text, database=unquote(database))
    if text.startswith("sqlite://"):
        path = text[len("sqlite://") :]
        if not path.startswith("/"):
            raise UsageError(
                f"index {text!r}: a SQLite URL needs three slashes and an absolute path, "
                "as in sqlite:///home/me/index.sqlite3 (or give the plain file path)"
            )
        return IndexLocation("sqlite", path=Path(unquote(path)))
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise UsageError(
            f"unknown index scheme {scheme + '://'!r}; use a SQLite file path, sqlite:///PATH "
            "or mongodb://HOST/DB"
        )
    if not text:
        raise UsageError("the index location is empty")
    return IndexLocation("sqlite", path=Path(text).expanduser())


def open_store(settings: Settings) -> ObjectStore:
    location = parse_store_location(settings.store)
    if location.kind == "local":
        from s3idx.store.local import LocalStore

        assert location.path is not None
        return LocalStore(location.path)
    from s3idx.store.s3 import pool_size

    store_class = _s3_store_class(settings.transport)
    return store_class(
        location.bucket,
        location.prefix,
        profile=settings.aws_profile,
        region=settings.region,
        endpoint_url=settings.endpoint_url,
        create_bucket=settings.create_bucket,
        max_pool_connections=pool_size(settings.workers),
        # The engine retries (with backoff, jitter and adaptive concurrency) and counts the
        # retries; a second layer inside botocore would multiply attempts and hide them.
        max_attempts=0,
    )


def _s3_store_class(transport: str) -> Callable[..., ObjectStore]:
    """The S3 store class of a transport; obstore is imported only when chosen."""
    if transport == "boto3":
        from s3idx.store.s3 import S3Store

        return S3Store
    if transport == "obstore":
        try:
            from s3idx.store.obstore_s3 import ObstoreS3Store
        except ImportError as exc:
            raise UsageError(
                f"the obstore transport needs the obstore package ({exc})",
                hint="install it with: pip install 's3idx[fast]'",
            ) from None
        return ObstoreS3Store
    raise UsageError(f"unknown transport {transport!r}; choose one of: {', '.join(TRANSPORTS)}")


def open_index(settings: Settings) -> Index:
    location = parse_index_location(settings.index)
    if location.kind == "sqlite":
        from s3idx.index.sqlite import SqliteIndex

        assert location.path is not None
        return SqliteIndex(location.path)
    from s3idx.index.mongo import MongoIndex

    return MongoIndex(location.uri, location.database, settings.collection)
