"""From locations (URLs and paths) to backend objects.

Backend modules are imported only when their scheme is used, so the embedded default never
imports boto3 or pymongo.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from s3idx.codec import check_prefix
from s3idx.config import (
    AT_AFTER_HOST_HINT,
    TRANSPORTS,
    Settings,
    at_after_host,
    default_index,
    default_store,
    redact_location,
)
from s3idx.errors import UsageError
from s3idx.frozen import Frozen, init_field
from s3idx.index.base import Index
from s3idx.store.base import ObjectStore, check_endpoint_url, s3_url


class StoreLocation(Frozen):
    __slots__ = ("bucket", "kind", "path", "prefix")
    _fields = ("kind", "path", "bucket", "prefix")
    kind: str  # "local" or "s3"
    path: Path | None
    bucket: str
    prefix: str

    def __init__(
        self, kind: str, path: Path | None = None, bucket: str = "", prefix: str = ""
    ) -> None:
        init_field(self, "kind", kind)
        init_field(self, "path", path)
        init_field(self, "bucket", bucket)
        init_field(self, "prefix", prefix)


class IndexLocation(Frozen):
    __slots__ = ("database", "kind", "path", "uri")
    _fields = ("kind", "path", "uri", "database")
    kind: str  # "sqlite" or "mongodb"
    path: Path | None
    uri: str
    database: str

    def __init__(
        self, kind: str, path: Path | None = None, uri: str = "", database: str = ""
    ) -> None:
        init_field(self, "kind", kind)
        init_field(self, "path", path)
        init_field(self, "uri", uri)
        init_field(self, "database", database)


def parse_store_location(text: str) -> StoreLocation:
    _refuse_blank_ends(text, "store")
    if text.startswith("s3://"):
        rest = text[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise UsageError(
                f"store {redact_location(text)!r} names no bucket; expected s3://BUCKET[/PREFIX]"
            )
        if "@" in bucket:
            # No bucket name holds an '@'; botocore's refusal would quote it, password and all.
            raise UsageError(
                f"store {redact_location(text)!r} names a user or password, which S3 does not "
                "take in a location; expected s3://BUCKET[/PREFIX]",
                hint="S3 credentials come from the environment (AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY) or an AWS profile (--aws-profile)",
            )
        _check_bucket_name(text, bucket)
        prefix = check_prefix(bucket, prefix, redact_location(text))
        return StoreLocation("s3", bucket=bucket, prefix=prefix)
    if text.startswith("file://"):
        return StoreLocation("local", path=_file_url_path(text))
    _refuse_url_typos(text, "store")
    if not text:
        raise UsageError("the store location is empty")
    return StoreLocation("local", path=Path(text).expanduser())


# What botocore lets into a request (its own check, or an access point's ARN): a name outside
# it would fail every request with botocore's parameter-validation text (exit 1). Stricter
# rules (3-63 lowercase characters) are AWS's alone: legacy buckets and other S3 services
# take capitals and '_', so those are left to the server.
@functools.cache  # compiled for an S3 location only (start-up time, issue 17)
def _bucket_name() -> re.Pattern[str]:
    return re.compile(
        r"[A-Za-z0-9._-]{1,255}"
        r"|arn:aws.*:(s3|s3-object-lambda):[a-z0-9-]*:[0-9]{12}:accesspoint:[A-Za-z0-9.-]{1,63}"
        r"|arn:aws.*:s3-outposts:[a-z0-9-]+:[0-9]{12}:outpost:[A-Za-z0-9-]{1,63}:accesspoint"
        r":[A-Za-z0-9-]{1,63}"
    )


def _check_bucket_name(text: str, bucket: str) -> None:
    if _bucket_name().fullmatch(bucket) is None:
        raise UsageError(
            f"store {redact_location(text)!r}: {bucket!r} is not a bucket name; S3 bucket names "
            "hold only letters, digits, '.', '-' and '_', at most 255 of them",
            hint="bucket names are 3-63 characters: lowercase letters, digits, dots and hyphens",
        )


def _file_url_path(text: str) -> Path:
    """The local path a ``file://`` URL names: on this machine (no host but localhost), and
    some directory (``file://`` alone would be the current one)."""
    shown = redact_location(text)
    try:
        parts = urlsplit(text)
        host = parts.netloc
    except ValueError:  # an unbalanced '[' in the host
        parts, host = urlsplit("file:///"), "?"
    if host and host.lower() != "localhost":
        # No guess: "file://tmp/x" meant /tmp/x, "file://server/data" another machine's /data.
        raise UsageError(
            f"store {shown!r} names a host; a file URL names a directory on this machine: "
            "file:///PATH, with three slashes"
        )
    if not parts.path:
        raise UsageError(f"store {shown!r} names no directory; expected file:///PATH")
    return Path(unquote(parts.path))


def parse_index_location(text: str) -> IndexLocation:
    _refuse_blank_ends(text, "index")
    if text.startswith(("mongodb://", "mongodb+srv://")):
        if at_after_host(text):
            raise UsageError(
                f"index {redact_location(text)!r} has an '@' after its host part",
                hint=AT_AFTER_HOST_HINT,
            )
        try:
            database = urlsplit(text).path.lstrip("/")
        except ValueError as exc:
            raise UsageError(f"index {redact_location(text)!r} is not a valid URI: {exc}") from None
        if not database:
            raise UsageError(
                f"index {redact_location(text)!r} names no database; "
                "expected mongodb://HOST[:PORT]/DB"
            )
        return IndexLocation("mongodb", uri=text, database=unquote(database))
    if text.startswith("sqlite://"):
        path = text[len("sqlite://") :]
        if not path.startswith("/"):
            raise UsageError(
                f"index {redact_location(text)!r}: a SQLite URL needs three slashes and an "
                "absolute path, as in sqlite:///home/me/index.sqlite3 (or give the plain file path)"
            )
        return IndexLocation("sqlite", path=Path(unquote(path)))
    _refuse_url_typos(text, "index")
    if not text:
        raise UsageError("the index location is empty")
    return IndexLocation("sqlite", path=Path(text).expanduser())


def _refuse_blank_ends(text: str, role: str) -> None:
    """A location that begins or ends with a blank (a space, a tab, a line end) was pasted
    with it or read from a CRLF file: taken as it is, ' s3://b/p' is a relative directory."""
    if text and text != text.strip():
        raise UsageError(
            f"{role} {redact_location(text)!r} begins or ends with a blank (a space, tab or "
            "line end)",
            hint=f"give it without: {redact_location(text.strip())!r}",
        )


# The URL forms each role takes, as a user would write them.
_FORMS = {
    "store": {"s3": "s3://BUCKET/PREFIX", "file": "file:///PATH"},
    "index": {"mongodb": "mongodb://HOST/DB", "mongodb+srv": "mongodb+srv://HOST/DB",
              "sqlite": "sqlite:///PATH"},
}  # fmt: skip
_PLAIN = {"store": "a directory", "index": "a SQLite file path"}


# "word:" or "word//" at the start: a URL meant, whatever the slashes. One letter and a colon is
# a Windows drive.
@functools.cache
def _url_like() -> re.Pattern[str]:
    return re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)(?P<sep>:/*|//+)(?P<rest>.*)", re.S)


def _refuse_url_typos(text: str, role: str) -> None:
    """Refuse text that looks like a URL but is not one this role takes, suggesting the right one.

    Without this, ``s3:/bucket/docs`` is a relative directory ``s3:`` that ``put`` creates.
    """
    found = _url_like().fullmatch(text)
    if found is None:
        return
    scheme, sep = found["scheme"], found["sep"]
    if ":" not in sep and scheme.lower() not in (*_FORMS["store"], *_FORMS["index"]):
        return  # "docs//x" is a path; only a scheme's name before "//" reads as a URL
    if len(scheme) == 1 and sys.platform == "win32":
        return
    forms = _FORMS[role]
    other = "index" if role == "store" else "store"
    guess = _closest_scheme(scheme)
    if role == "index" and guess == "file":
        guess = "sqlite"  # a file URL for the index means its SQLite file
    shown = redact_location(text)
    # The hint matters where a real directory name could look like this ("data:2024").
    plain = None if "//" in sep else f"a local path with ':' in its name can be given as ./{shown}"
    if guess in _FORMS[other] and guess not in forms:
        raise UsageError(
            f"{role} {shown!r} is {_a(other)} location, not {_a(role)}; {_a(role)} is "
            f"{_PLAIN[role]} or {' or '.join(forms.values())}"
        )
    if guess is not None:
        fixed = _respelled(shown, guess)
        raise UsageError(
            f"{role} {shown!r} is not a valid location; did you mean {fixed!r}?", hint=plain
        )
    if role == "store" and scheme.lower() in ("http", "https"):
        plain = "for MinIO or another S3 service: --store s3://BUCKET/PREFIX --endpoint-url URL"
    raise UsageError(
        f"unknown {role} scheme {scheme + ('://' if '//' in sep else ':')!r} in {shown!r}; "
        f"use {_PLAIN[role]} or "
        f"{' or '.join(forms.values())}",
        hint=plain,
    )


def _a(role: str) -> str:
    return f"an {role}" if role == "index" else f"a {role}"


def _respelled(shown: str, scheme: str) -> str:
    """The location as it was meant, made from what may be shown of it: a suggestion built from
    the text as typed could show what its spelling hid ("mongodb:pw@host" has no user)."""
    slashes = "///" if scheme in ("file", "sqlite") else "//"
    found = _url_like().fullmatch(shown)
    rest = found["rest"].lstrip("/") if found else "..."
    if scheme == "file" and rest.lower().startswith("localhost/"):
        rest = rest[len("localhost/") :]
    return f"{scheme}:{slashes}{rest}"


def _closest_scheme(scheme: str) -> str | None:
    known = [*_FORMS["store"], *_FORMS["index"]]
    if scheme.lower() in known:
        return scheme.lower()
    close = difflib.get_close_matches(scheme.lower(), known, n=1, cutoff=0.6)
    return close[0] if close else None


def open_store(settings: Settings) -> ObjectStore:
    return store_opener(settings)()


def store_identity(settings: Settings) -> str:
    """What the store of ``settings`` says as its ``identity`` once opened (the store an index
    records it describes), said without opening it: a query of the index alone opens none."""
    location = parse_store_location(settings.store)
    if location.kind == "local":
        assert location.path is not None
        return os.path.realpath(location.path)
    return s3_url(location.bucket, location.prefix, None)


def location_checks(settings: Settings) -> list[tuple[str, Callable[[], object]]]:
    """Each location setting, and the check opening the store or the index makes of it: run
    early, a refusal can name where the value came from (``cli.CommandContext``)."""

    def endpoint() -> None:  # as store_opener: a local store sends no request
        if (
            settings.endpoint_url is not None
            and _kind(parse_store_location, settings.store) == "s3"
        ):
            check_endpoint_url(settings.endpoint_url)

    def collection() -> None:
        if _kind(parse_index_location, settings.index) == "mongodb":
            from s3idx.index.mongo import check_collection_name

            check_collection_name(settings.collection)

    return [
        ("store", lambda: parse_store_location(settings.store)),
        ("index", lambda: parse_index_location(settings.index)),
        ("endpoint_url", endpoint),
        ("collection", collection),
    ]


def _kind(parse: Callable[[str], StoreLocation | IndexLocation], text: str) -> str | None:
    """The kind of a location, None when it is refused (its own check says so)."""
    try:
        return parse(text).kind
    except UsageError:
        return None


def store_opener(settings: Settings) -> Callable[[], ObjectStore]:
    """What opens the store of ``settings``, its location checked now. The engine opens it at
    first use: a query of the index alone, or the parent of a put split over processes, never
    imports botocore nor builds a client (~0.3 s)."""
    location = parse_store_location(settings.store)
    if location.kind == "s3" and settings.endpoint_url is not None:
        check_endpoint_url(settings.endpoint_url)  # by a command that sends no request too
    return lambda: _open_store_at(location, settings)


def _open_store_at(location: StoreLocation, settings: Settings) -> ObjectStore:
    if location.kind == "local":
        from s3idx.store.local import LocalStore

        assert location.path is not None
        # Only the default location, under the per-user data directory, may need parents made.
        return LocalStore(location.path, create_parents=settings.store == default_store())
    from s3idx.store.s3 import pool_size

    store_class = _s3_store_class(settings.transport)
    return store_class(
        location.bucket,
        location.prefix,
        profile=settings.aws_profile,
        region=settings.region,
        endpoint_url=settings.endpoint_url,
        create_bucket=settings.create_bucket,
        max_pool_connections=pool_size(max(settings.workers, settings.head_workers)),
        connect_timeout=min(settings.timeout, 10.0),
        read_timeout=settings.timeout,
    )


def _s3_store_class(transport: str) -> Callable[..., ObjectStore]:
    """The S3 store class of a transport; obstore is imported only when chosen."""
    if transport == "boto3":
        from s3idx.store.s3 import S3Store

        return S3Store
    if transport == "http":
        from s3idx.store.s3 import HttpS3Store

        return HttpS3Store
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
        return SqliteIndex(location.path, create_parents=settings.index == default_index())
    from s3idx.index.mongo import MongoIndex

    return MongoIndex(location.uri, location.database, settings.collection)
