"""The object-store protocol: what every object store (local directory, S3) provides.

Keys given to a store are document keys; the store adds its own prefix. Metadata names are
lowercase ASCII (S3 and MinIO fold case), values ASCII; a store returns them as they were put.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from s3idx.config import redact_location
from s3idx.errors import UsageError
from s3idx.frozen import Frozen, init_field


class ObjectInfo(Frozen):
    """One listed object: enough to tell whether it changed since the index recorded it."""

    __slots__ = ("etag", "key", "last_modified", "size")
    _fields = ("key", "etag", "size", "last_modified")
    key: str
    etag: str
    size: int
    # When the object was stored (UTC), from the listing itself (S3's LastModified, a local
    # file's mtime): with the ETag it lets a manifest line vouch for an object without a HEAD.
    last_modified: datetime | None

    def __init__(
        self, key: str, etag: str, size: int, last_modified: datetime | None = None
    ) -> None:
        init_field(self, "key", key)
        init_field(self, "etag", etag)
        init_field(self, "size", size)
        init_field(self, "last_modified", last_modified)


class RequestCounter:
    """Requests a store sent (thread-safe), so a run can report what it cost in requests.

    S3 stores count every HTTP request (each list page, HEAD, GET, PUT, DELETE, COPY and
    multipart call, each attempt of a retried one); the local store counts one per operation.
    """

    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def add(self, n: int = 1) -> None:
        with self._lock:
            self._value += n

    @property
    def value(self) -> int:
        return self._value


class ObjectHead(Frozen):
    __slots__ = ("etag", "key", "last_modified", "metadata", "size")
    _fields = ("key", "etag", "size", "metadata", "last_modified")
    key: str
    etag: str
    size: int
    metadata: dict[str, str]
    # When the object was stored (S3's Last-Modified): the only date an object written by
    # another tool (maggma) may carry, so entries recovered from it can still have one.
    last_modified: datetime | None

    def __init__(
        self,
        key: str,
        etag: str,
        size: int,
        metadata: dict[str, str],
        last_modified: datetime | None = None,
    ) -> None:
        init_field(self, "key", key)
        init_field(self, "etag", etag)
        init_field(self, "size", size)
        init_field(self, "metadata", metadata)
        init_field(self, "last_modified", last_modified)


class PutReceipt(Frozen):
    __slots__ = ("etag", "size")
    _fields = ("etag", "size")
    etag: str
    size: int

    def __init__(self, etag: str, size: int) -> None:
        init_field(self, "etag", etag)
        init_field(self, "size", size)


class ObjectBody(Frozen):
    """An object being read: metadata first, then the body as chunks (streamed)."""

    __slots__ = ("chunks", "head", "length")
    _fields = ("head", "chunks", "length")
    head: ObjectHead
    chunks: Iterable[bytes]
    # How many body bytes the store announced (Content-Length), so a reader can tell a body
    # that ended early from a whole one; None when the store cannot say.
    length: int | None

    def __init__(
        self, head: ObjectHead, chunks: Iterable[bytes], length: int | None = None
    ) -> None:
        init_field(self, "head", head)
        init_field(self, "chunks", chunks)
        init_field(self, "length", length)

    def read(self) -> bytes:
        return b"".join(self.chunks)


# The reason of a DeleteFailure whose conditional delete found a newer object.
CHANGED_REASON = "the object changed since it was read (a newer write); it was left as it is"


class DeleteFailure(Frozen):
    __slots__ = ("changed", "denied", "hint", "key", "reason", "timed_out", "transient")
    _fields = ("key", "reason", "changed", "transient", "denied", "timed_out", "hint")
    key: str
    reason: str
    # A conditional delete found another object under the key (a newer write): it was left.
    changed: bool
    # This key's own request failed in a way worth retrying (a 500, a reset): RetryingStore
    # retries that key alone, not the whole batch.
    transient: bool
    # The store denied these credentials this object's delete (a bucket policy on its key).
    denied: bool
    # Of the transient: no answer within the deadline (retried once only, as every request).
    timed_out: bool
    # What to do about it, as the error's hint said (the setting that sets the deadline).
    hint: str | None

    def __init__(
        self,
        key: str,
        reason: str,
        changed: bool = False,
        transient: bool = False,
        denied: bool = False,
        timed_out: bool = False,
        hint: str | None = None,
    ) -> None:
        init_field(self, "key", key)
        init_field(self, "reason", reason)
        init_field(self, "changed", changed)
        init_field(self, "transient", transient)
        init_field(self, "denied", denied)
        init_field(self, "timed_out", timed_out)
        init_field(self, "hint", hint)


# ``done(key, removed)`` and ``still_wanted(key)`` of ``ObjectStore.delete``.
DeleteDone = Callable[[str, bool], None]
StillWanted = Callable[[str], bool]


def not_reported(key: str, removed: bool) -> None:
    """A ``DeleteDone`` for a caller that passed none."""


@runtime_checkable
class ObjectStore(Protocol):
    """Keys under ``codec.RESERVED_PREFIX`` (``.s3idx/``) are s3idx's own objects (manifests):
    ``put``, ``open``, ``head`` and ``delete`` take them like any key, but ``list_objects``
    yields them only to a ``prefix`` that starts with the reserved prefix, so every listing of
    documents leaves them out."""

    location: str  # for messages; never holds a secret
    requests: RequestCounter  # every request this store sent (see RequestCounter)

    def check_key(self, key: str) -> None:
        """Raise InvalidKeyError if this store cannot hold the key (prefix length, file names)."""
        ...

    def put(
        self, key: str, body: bytes, metadata: Mapping[str, str], *, if_match: str | None = None
    ) -> PutReceipt:
        """Store the object, replacing any under the key.

        With ``if_match``, only if the key's object still has that ETag: otherwise (another
        ETag, or no object) ObjectChangedError and no change, so a write that replaces an
        object it read never undoes a put or a delete made since (docs/ARCHITECTURE.md,
        "Conditional writes"). Atomic where the store makes it so (``conditional_puts``).
        """
        ...

    def open(self, key: str) -> ObjectBody:
        """Raises ObjectNotFoundError for a missing key."""
        ...

    def head(self, key: str) -> ObjectHead:
        """Raises ObjectNotFoundError for a missing key."""
        ...

    def list_objects(
        self, prefix: str = "", *, start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        """Objects in ascending key order (UTF-8 byte order), streamed.

        Reserved keys (``.s3idx/``) only when ``prefix`` starts with ``.s3idx/``.
        """
        ...

    def delete(
        self,
        keys: Sequence[str],
        *,
        if_match: Mapping[str, str] | None = None,
        done: DeleteDone | None = None,
        still_wanted: StillWanted | None = None,
    ) -> list[DeleteFailure]:
        """Delete objects; a missing key is not a failure (S3 semantics).

        ``done(key, removed)`` is called for each key that did not fail, as soon as it is
        done (from any thread): ``removed`` is True when this call removed an object, False
        when the key had none (another delete took it first). A store that cannot tell (a
        server answering a delete of a missing key as a success) says True. So a caller counts
        each object it removed, once, even when the call is cut short.

        With ``if_match``, each key is deleted only if its object's ETag is still
        ``if_match[key]`` (a key absent from the mapping is deleted unconditionally): an
        object with another ETag, written since, is left and reported as
        ``DeleteFailure(key, reason, changed=True)``. The check and the delete are one atomic
        step where the store can make them so (docs/ARCHITECTURE.md, "Conditional deletes").

        ``still_wanted(key)`` is asked (from any thread, maybe more than once) right before
        each key of ``if_match`` has its delete sent, each attempt: False leaves the key
        unsent, reported as ``done(key, False)``, no failure. A caller whose request may wait
        (a paused process, a queue of requests) so learns that another process finished its
        work meanwhile, and that the ETag may name the same bytes stored again since.
        """
        ...

    def replace_metadata(
        self, key: str, metadata: Mapping[str, str], *, if_match: str
    ) -> PutReceipt:
        """Give the object new metadata, its body untouched and not sent again.

        Only if its ETag is still ``if_match``: otherwise ObjectChangedError and no change (a
        concurrent overwrite wins). ObjectNotFoundError for a missing key. The receipt holds
        the object's ETag afterwards (it may or may not differ from the old one).
        """
        ...

    def close(self) -> None: ...


_ENDPOINT_SHAPE = "an endpoint URL is http(s)://HOST[:PORT]"


_NAMES_A_USER = (
    f"it names a user or password; {_ENDPOINT_SHAPE}: S3 credentials come from the "
    "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or an AWS profile (--aws-profile)"
)


def check_endpoint_url(url: str) -> None:
    """Refuse an S3 endpoint URL that is not ``http(s)://HOST[:PORT]`` (a '/' after it is
    fine), before a client is built. Each transport reads the rest its own way: botocore takes
    ``ftp://x`` or a port beyond 65535 and fails at each request, obstore panics or sends a
    query or fragment along, a path answers "no such bucket", and the http transport sends a
    user and password in its Host header (boto3 and obstore drop them). Here, free of
    botocore, as ``s3_url`` is: the S3 store checks the endpoint it ends up with (also one
    from AWS_ENDPOINT_URL or the AWS profile), ``backends`` the one the settings give."""
    reason = _endpoint_problem(url)
    if reason is None:
        return
    raise UsageError(
        f"invalid S3 endpoint URL {redact_location(url, vendor_text=True)!r}: {reason}",
        hint="give the server's URL, e.g. --endpoint-url http://localhost:9000 (or "
        "S3IDX_ENDPOINT_URL, endpoint_url in the config file, AWS_ENDPOINT_URL)",
    )


def _endpoint_problem(url: str) -> str | None:
    if any(c.isspace() or not c.isprintable() for c in url):
        return "it holds a blank or control character"
    if "@" in url:  # before parsing: a password's '/', '?' or '#' would end the host there
        return _NAMES_A_USER
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Port out of range 0-65535", "Invalid IPv6 URL"
        return str(exc)
    if not parts.scheme or "://" not in url:
        return "it has no scheme: write http:// or https:// before the host"
    if parts.scheme.lower() not in ("http", "https"):
        return f"the scheme is {parts.scheme!r}; S3 is reached over http or https"
    scheme = url.partition("://")[0]  # as written: urlsplit lowercases it, obstore does not
    if scheme not in ("http", "https"):
        return f"the scheme {scheme!r} is not lowercase: write http:// or https://"
    if not parts.hostname:
        return "it names no host"
    if port == 0:
        return "port 0 cannot be connected to"
    if "#" in url:
        return f"it has a fragment ('#'); {_ENDPOINT_SHAPE}"
    if "?" in url:
        return f"it has a query ('?'); {_ENDPOINT_SHAPE}"
    if parts.path not in ("", "/"):
        return (
            f"it has a path after the host; {_ENDPOINT_SHAPE}, and the bucket and prefix go "
            "in --store s3://BUCKET/PREFIX"
        )
    return None


def s3_url(bucket: str, prefix: str, key: str | None) -> str:
    """``s3://BUCKET/PREFIX/KEY`` (the parts given), as messages and store identities say it.
    Here, not beside the S3 error table: naming an S3 store needs no botocore."""
    path = "/".join(part for part in (prefix, key) if part)
    return f"s3://{bucket}/{path}" if path else f"s3://{bucket}"
