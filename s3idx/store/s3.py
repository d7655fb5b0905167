"""Amazon S3 (or an S3-compatible server such as MinIO) as an object store, through boto3.

Object keys are ``PREFIX/KEY`` (just ``KEY`` when the prefix is empty). One ``S3Connection``
holds the bucket, the prefix, and one botocore session and client that serve every worker thread:
botocore clients are thread-safe, and sharing one keeps one connection pool and one credential
cache. Both transports use it (``S3Store`` here; ``ObstoreS3Store`` takes its credentials,
endpoint, region and timeouts from it). Credentials and region come from the standard chain of
a botocore session, the one boto3 uses (environment, ``~/.aws/config`` profiles including
``source_profile`` and role chains, ``~/.aws/credentials``, instance roles).

Every botocore failure is translated into an s3idx error (``s3_errors.translate_error``);
nothing vendor-specific leaves the store, and no message carries a credential.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, TypedDict, Unpack
from urllib.parse import SplitResult, urlsplit

import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    SSLError,
)

from s3idx._version import __version__
from s3idx.codec import (
    MAX_KEY_BYTES,
    check_metadata_size,
    check_prefix,
    is_reserved_key,
    lists_reserved,
)
from s3idx.config import redact, redact_location
from s3idx.errors import (
    BackendUnavailableError,
    InvalidKeyError,
    NotFoundError,
    ObjectAccessDeniedError,
    ObjectChangedError,
    ObjectNotFoundError,
    S3idxError,
    TransientError,
    UsageError,
    shorten_key,
)
from s3idx.limits import DELETE_BATCH, FAILED_IN_A_ROW, batched
from s3idx.store.base import (
    CHANGED_REASON,
    DeleteDone,
    DeleteFailure,
    ObjectBody,
    ObjectHead,
    ObjectInfo,
    PutReceipt,
    RequestCounter,
    StillWanted,
    check_endpoint_url,
    not_reported,
    s3_url,
)
from s3idx.store.deadline import WATCHDOG, Watch, transfer_deadline
from s3idx.store.s3_errors import (
    ENDPOINT_HINT,
    OBJECT_DENIALS,
    check_credential_sources,
    error_code,
    missing_field_error,
    not_s3,
    remember_credentials,
    too_slow_error,
    translate_error,
    unloadable_credentials,
)

if TYPE_CHECKING:
    from s3idx.store.http_put import Failed, HttpUploader
    from s3idx.store.sigv4 import Credentials

MiB = 1 << 20
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_MULTIPART_CHUNKSIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB  # S3 refuses smaller parts, except the last one
MAX_PARTS = 10_000
READ_CHUNK = 1 * MiB
DEFAULT_POOL_CONNECTIONS = 10
# botocore's own retries are off: the engine retries (RetryingStore, with backoff, jitter and
# adaptive concurrency) and counts every retry; a second layer inside botocore would multiply
# the attempts (5 inside 8: up to 40 requests) and hide them.
DEFAULT_MAX_ATTEMPTS = 0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0


def pool_size(workers: int) -> int:
    """HTTP connections for ``workers`` threads, plus two for the main thread's own calls."""
    return max(workers, DEFAULT_POOL_CONNECTIONS) + 2


def _strip_etag(etag: str) -> str:
    return etag.strip('"')


# --- the bucket and the session both transports share ----------------------------------------


# What a conditional put's refusal looks like: another ETag (412), no object any more (404), or
# a conflicting write in flight on the key (409, AWS): each means another writer got there.
_CHANGED_CODES = frozenset(
    {
        "PreconditionFailed",
        "412",
        "NoSuchKey",
        "404",
        "NotFound",
        "ConditionalRequestConflict",
        "409",
    }
)

# Conditional deletes (If-Match) are one DeleteObject per key; this many run at once.
CONDITIONAL_DELETE_THREADS = 16


class _FailingDeletes:
    """Stops a batch of per-key deletes once FAILED_IN_A_ROW have failed in a row in a way
    worth retrying (an endpoint fallen silent, or failing every request): the keys not yet
    sent fail at once with the last one's reason, instead of each waiting out its own
    deadline. RetryingStore retries them as it retries the keys that failed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_a_row = 0
        self._last: DeleteFailure | None = None

    def unsent(self, key: str) -> DeleteFailure | None:
        """The failure of ``key`` if no more deletes are to be sent, else None."""
        with self._lock:
            last = self._last if self._in_a_row >= FAILED_IN_A_ROW else None
        if last is None:
            return None
        return DeleteFailure(
            key,
            f"not sent: {FAILED_IN_A_ROW} deletes in a row failed before it; the last: "
            f"{last.reason}",
            transient=True,
            timed_out=last.timed_out,
            hint=last.hint,
        )

    def record(self, failure: DeleteFailure | None) -> DeleteFailure | None:
        with self._lock:
            if failure is not None and failure.transient:
                self._in_a_row += 1
                self._last = failure
            elif self._in_a_row < FAILED_IN_A_ROW:
                self._in_a_row = 0
        return failure


class _UnderWay:
    """The per-key deletes under way; once closed, none starts, and ``close`` waits for those
    under way to end."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0
        self._closed = False

    def enter(self) -> bool:
        with self._changed:
            if self._closed:
                return False
            self._running += 1
            return True

    def leave(self) -> None:
        with self._changed:
            self._running -= 1
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            while self._running:
                self._changed.wait()


class ConnectionOptions(TypedDict, total=False):
    """How to reach a bucket: the keyword arguments of ``S3Connection`` and of both stores."""

    profile: str | None  # an AWS profile; None: the standard chain decides
    region: str | None  # None: the profile's
    endpoint_url: str | None  # an S3-compatible server; None: AWS
    create_bucket: bool  # the first put that finds the bucket missing creates it
    max_pool_connections: int
    max_attempts: int  # botocore's own retries; 0 (the default) leaves them to the engine
    retry_mode: str  # "standard" or "adaptive", for botocore's own retries
    connect_timeout: float  # seconds, per request
    read_timeout: float  # seconds an answer may take, per request


class _NotWanted(Exception):
    """Raised by the before-send hook to stop a delete its caller no longer wants sent."""


class S3Connection:
    """One bucket under a prefix, one botocore session and client, and what is known of the bucket.

    Built once per store and shared by both transports: the names (``location``, full keys),
    the error translation, and the once-only bucket checks and creation live here, not in
    copies. Building one makes no request.
    """

    def __init__(self, bucket: str, prefix: str = "", **options: Unpack[ConnectionOptions]) -> None:
        unknown = sorted(options.keys() - ConnectionOptions.__optional_keys__)
        if unknown:  # as a signature of named parameters would refuse them
            raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
        self.bucket = bucket
        self.prefix = check_prefix(bucket, prefix)
        self.base = f"{self.prefix}/" if self.prefix else ""
        self.location = s3_url(bucket, self.prefix, None)
        # What an index records as the store it describes: bucket and prefix, not the
        # endpoint (one service may be reached by several URLs).
        self.identity = self.location
        self.create_bucket = options.get("create_bucket", False)
        self.timeouts = (
            options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT),
            options.get("read_timeout", DEFAULT_READ_TIMEOUT),
        )
        endpoint_url = options.get("endpoint_url")
        if endpoint_url is not None:
            check_endpoint_url(endpoint_url)
        self.explicit_endpoint = endpoint_url is not None
        self._bucket_lock = threading.Lock()
        self._bucket_created = False
        self.bucket_seen = False
        # Every HTTP request botocore sends on this connection, and (ObstoreS3Store adds its
        # own) obstore's: one count for the store, whichever transport sent the request.
        self.requests = RequestCounter()
        # Per thread: what a DeleteObject about to be sent asks first (see _still_wanted).
        self.sending = threading.local()
        config = Config(
            max_pool_connections=options.get("max_pool_connections", DEFAULT_POOL_CONNECTIONS),
            # Checksums only where S3 demands them (DeleteObjects) and no parameter validation:
            # measured 2.7 -> 2.1 ms of client CPU a put (docs/ARCHITECTURE.md, "Measured costs").
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            parameter_validation=False,
            retries={
                "mode": options.get("retry_mode", "standard"),
                "max_attempts": options.get("max_attempts", DEFAULT_MAX_ATTEMPTS),
            },
            connect_timeout=self.timeouts[0],
            read_timeout=self.timeouts[1],
            user_agent_extra=f"s3idx/{__version__}",
            # S3-compatible servers (MinIO, Ceph, moto) rarely have the wildcard DNS that
            # virtual-hosted addressing needs; AWS itself needs no endpoint_url.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        self.session: botocore.session.Session | None = None
        self.session, self.client = self._connect(
            options.get("profile"), options.get("region"), endpoint_url, config
        )
        self.endpoint_url: str = self.client.meta.endpoint_url
        # One from AWS_ENDPOINT_URL or the AWS profile's endpoint_url is not checked above.
        check_endpoint_url(self.endpoint_url)

    def _connect(
        self, profile: str | None, region: str | None, endpoint_url: str | None, config: Config
    ) -> tuple[botocore.session.Session, Any]:
        try:
            # botocore's session, as boto3.Session wraps it: importing boto3 would add
            # s3transfer, ~0.14 s of start-up for every S3 command, and nothing used here.
            session = botocore.session.Session(profile=profile)
            self._load_credentials(session)
            client = session.create_client(
                "s3", region_name=region, endpoint_url=endpoint_url, config=config
            )
        except (ClientError, BotoCoreError) as exc:
            raise self.error(exc) from None
        except ValueError as exc:  # a malformed endpoint URL or region
            raise self._unusable_endpoint(exc, region, endpoint_url) from None
        # botocore sends "Expect: 100-continue" with every PUT body; a server that answers
        # with part of "100 Continue" and closes makes it spin forever in _consume_headers
        # (no timeout fires). Bodies here are small and sent whole: the header buys nothing.
        client.meta.events.register_last("before-call.s3", _without_expect_header)
        client.meta.events.register_first("needs-retry.s3", _no_region_lookup)
        # before-send fires once per HTTP request actually sent (each page, each part).
        client.meta.events.register("before-send.s3", self._count_request)
        client.meta.events.register_first("before-send.s3.DeleteObject", self._still_wanted)
        return session, client

    def _load_credentials(self, session: botocore.session.Session) -> None:
        """Load the credentials now (create_client would, and caches them in the session), so
        that a credential_process printing no valid JSON is said to be the credentials' fault
        rather than the endpoint's."""
        try:
            check_credential_sources(session)
            session.get_credentials()
        except (ValueError, TypeError, AttributeError, OSError, IndexError) as exc:
            if isinstance(exc, BotoCoreError):  # botocore's own (e.g. InvalidRegionError)
                raise
            # A credential_process that cannot be started: missing (FileNotFoundError), not
            # executable (PermissionError), or empty (subprocess's IndexError on no program).
            raise unloadable_credentials(exc, bucket=self.bucket, prefix=self.prefix) from None

    def _unusable_endpoint(
        self, exc: ValueError, region: str | None, endpoint_url: str | None
    ) -> UsageError:
        """botocore refused the endpoint or the region: say which, and where it came from."""
        if endpoint_url is None:  # none given: AWS_ENDPOINT_URL's or the profile's
            endpoint = "that AWS_ENDPOINT_URL or the AWS profile's endpoint_url gives"
        else:
            endpoint = repr(redact_location(endpoint_url))
        with_region = "" if region is None else f" with region {region!r}"
        return UsageError(
            f"cannot use the S3 endpoint for {self.location} "
            f"{endpoint}{with_region}: {redact(str(exc), vendor_text=True)}",
            hint=ENDPOINT_HINT,
        )

    def _still_wanted(self, **kwargs: Any) -> None:
        """The caller of a conditional delete asked once more, after botocore built and signed
        the request and just before it leaves (each attempt): a thread paused between its
        first answer and here finds out now (``ObjectStore.delete``'s ``still_wanted``)."""
        check = getattr(self.sending, "still_wanted", None)
        if check is not None and not check():
            raise _NotWanted

    def _count_request(self, **kwargs: Any) -> None:
        self.requests.add()  # returns None: botocore then sends the request itself

    @property
    def region(self) -> str | None:
        region: str | None = self.client.meta.region_name
        return region

    def __repr__(self) -> str:
        endpoint = redact_location(self.endpoint_url, vendor_text=True)
        return f"S3Connection({self.location!r}, endpoint={endpoint!r})"

    # --- keys and errors ---------------------------------------------------------------------

    def full(self, key: str) -> str:
        """The S3 object key of a document key: the prefix added."""
        return self.base + key

    def check_key(self, key: str) -> None:
        size = len(self.full(key).encode("utf-8", "surrogatepass"))
        if size > MAX_KEY_BYTES:
            raise InvalidKeyError(
                f"key is {size} bytes with the store prefix {self.prefix!r}; S3 allows "
                f"{MAX_KEY_BYTES} bytes (UTF-8)",
                hint="use shorter keys or a shorter prefix",
            )

    def error(self, exc: BaseException, key: str | None = None) -> S3idxError:
        """The s3idx error for a botocore exception (or one built like it) about ``key``."""
        if self.session is not None:
            remember_credentials(self.session)
        client = getattr(self, "client", None)
        return translate_error(
            exc,
            bucket=self.bucket,
            key=key,
            prefix=self.prefix,
            endpoint=client.meta.endpoint_url if client is not None else None,
            create_bucket=self.create_bucket,
            timeouts=self.timeouts,
        )

    def too_slow(self, key: str, size: int, seconds: float) -> S3idxError:
        client = getattr(self, "client", None)
        endpoint = client.meta.endpoint_url if client is not None else None
        return too_slow_error(endpoint, self.bucket, self.prefix, key, size, seconds)

    def answered(self, answer: Mapping[str, Any], field: str, operation: str, key: str) -> Any:
        """``answer[field]``; an IncompleteAnswerError naming them when the server left it
        out (some S3-compatible servers, and proxies before them, drop headers)."""
        value = answer.get(field)
        if value is None or value == "":  # obstore's None: a header that was not there
            where = s3_url(self.bucket, self.prefix, shorten_key(key))
            name = _FIELD_NAMES.get(field, field)
            raise missing_field_error(self.endpoint_url, where, operation, name)
        return value

    @contextlib.contextmanager
    def translated(self, key: str | None = None) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise self.error(exc, key) from None

    # --- the bucket --------------------------------------------------------------------------

    def create_missing_bucket(self) -> None:
        """Create the bucket (once per connection); one that another writer made is fine.

        botocore's exceptions are raised as they are: the caller translates them, naming the
        key it was writing.
        """
        with self._bucket_lock:
            if self._bucket_created:
                return
            params: dict[str, Any] = {"Bucket": self.bucket}
            region = self.client.meta.region_name
            # us-east-1 is the default location and must not be named as a constraint.
            if region and region not in ("us-east-1", "aws-global"):
                params["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                self.client.create_bucket(**params)
            except ClientError as exc:
                # Another thread or process won the race: the bucket is there, and ours.
                if error_code(exc) != "BucketAlreadyOwnedByYou":
                    raise
            self._bucket_created = True

    def confirm_writable(self) -> None:
        """For a put that stored nothing: its uploads would have found a missing bucket, so
        find it now (NotFoundError), or, with ``create_bucket``, create it as they would."""
        if self.bucket_seen:
            return
        if not self.create_bucket:
            self.check_bucket_exists()
            return
        with self.translated():
            self.create_missing_bucket()
        self.bucket_seen = True

    def check_writable(self) -> None:
        """``confirm_writable``'s checks, creating nothing (a dry run): the bucket is asked for
        (the endpoint, the credentials); with ``create_bucket`` a missing one is fine, a put
        would create it."""
        if self.create_bucket:
            with contextlib.suppress(NotFoundError):
                self.check_bucket_exists()
        else:
            self.check_bucket_exists()

    def check_bucket_exists(self) -> None:
        """Raise NotFoundError if the bucket is missing; asked at most once per connection."""
        if self.bucket_seen:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = error_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise self.error(exc) from None
            if code in ("403", "Forbidden", "AccessDenied"):
                self._check_forbidden()
            if not_s3(code):
                raise self.error(exc) from None  # nothing else will work either
            # Otherwise unsure: keep the object's own not-found answer.
        except BotoCoreError as exc:
            raise self.error(exc) from None
        self.bucket_seen = True

    def _check_forbidden(self) -> None:
        """A HEAD's 403 has no body: it may be credentials S3 does not know (fail now) or a
        principal allowed objects but not the bucket (go on). A listing's answer says which."""
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.base, MaxKeys=1)
        except ClientError as exc:
            if error_code(exc) != "AccessDenied":
                raise self.error(exc) from None
        except BotoCoreError as exc:
            raise self.error(exc) from None

    def close(self) -> None:
        self.client.close()


# --- the store -------------------------------------------------------------------------------


class S3Store:
    """Objects in an S3 bucket under a prefix, through boto3; see the module docstring.

    The keyword arguments beside the multipart sizes are ``ConnectionOptions``. Bodies of
    ``multipart_threshold`` bytes or more go up in parts of ``multipart_chunksize`` (at least
    5 MiB). With ``create_bucket`` the first put that finds the bucket missing creates it;
    otherwise a missing bucket is a NotFoundError. Building a store makes no request.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
        **options: Unpack[ConnectionOptions],
    ) -> None:
        if multipart_chunksize < MIN_PART_SIZE:
            raise ValueError(f"multipart_chunksize must be at least {MIN_PART_SIZE} bytes")
        connection = S3Connection(bucket, prefix, **options)
        self._init(connection, multipart_threshold, multipart_chunksize)

    @classmethod
    def over(
        cls,
        connection: S3Connection,
        *,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
    ) -> S3Store:
        """A store on a connection made already (the obstore transport shares its own)."""
        store = cls.__new__(cls)
        store._init(connection, multipart_threshold, multipart_chunksize)
        return store

    def _init(self, connection: S3Connection, threshold: int, chunksize: int) -> None:
        self.connection = connection
        self.bucket = connection.bucket
        self.prefix = connection.prefix
        self.location = connection.location
        self.identity = connection.identity
        self.requests = connection.requests
        self._base = connection.base
        self._client = connection.client
        self._multipart_threshold = threshold
        self._multipart_chunksize = chunksize
        # Whether DeleteObject's If-Match is honoured: False once the server answers
        # NotImplemented, or when this botocore cannot send it (it would drop the parameter
        # silently: validation is off). Deletes then compare by a HEAD first (delete()).
        self.conditional_deletes_supported = _sends_if_match(self._client, "DeleteObject")
        # Whether PutObject's If-Match is honoured: False once the server answers
        # NotImplemented, or when this botocore cannot send it. Conditional puts then compare
        # by a HEAD first (_put_if_match).
        self.conditional_puts_supported = _sends_if_match(self._client, "PutObject")

    def __repr__(self) -> str:
        endpoint = redact_location(self.connection.endpoint_url, vendor_text=True)
        return f"S3Store({self.location!r}, endpoint={endpoint!r})"

    def _full(self, key: str) -> str:
        return self._base + key

    def check_key(self, key: str) -> None:
        self.connection.check_key(key)

    def _error(self, exc: BaseException, key: str | None = None) -> S3idxError:
        return self.connection.error(exc, key)

    def _translated(self, key: str | None = None) -> contextlib.AbstractContextManager[None]:
        return self.connection.translated(key)

    # --- writing -----------------------------------------------------------------------------

    def put(
        self, key: str, body: bytes, metadata: Mapping[str, str], *, if_match: str | None = None
    ) -> PutReceipt:
        # S3 enforces 2 KB of metadata, but S3-compatible servers (and moto) may not.
        check_metadata_size(metadata, key)
        full_key, meta = self._full(key), dict(metadata)
        if if_match is not None:
            # The object was read, so its bucket exists: no bucket to create here.
            return self._put_if_match(key, full_key, body, meta, if_match)
        with self._translated(key):
            try:
                return self._upload(full_key, body, meta)
            except ClientError as exc:
                if not (self.connection.create_bucket and error_code(exc) == "NoSuchBucket"):
                    raise
            # Creating only when a write finds the bucket missing costs nothing per put, and
            # reads never create a bucket (a typo stays a "does not exist" error).
            self.connection.create_missing_bucket()
            return self._upload(full_key, body, meta)

    def _put_if_match(
        self, key: str, full_key: str, body: bytes, metadata: dict[str, str], etag: str
    ) -> PutReceipt:
        """PutObject with If-Match: the server compares the ETag and writes in one step.

        A multipart body is compared by a HEAD first, then its completion carries If-Match
        (AWS S3 honours it there; moto does not, so there the moment between is open). A
        server that answers NotImplemented gets a HEAD and a plain put instead, with the same
        open moment, and ``conditional_puts_supported`` turns False so callers can say so.
        """
        if not self.conditional_puts_supported or len(body) >= self._multipart_threshold:
            self._check_unchanged(key, etag)
            if not self.conditional_puts_supported:
                with self._translated(key):
                    return self._upload(full_key, body, metadata)
        try:
            return self._upload(full_key, body, metadata, if_match=etag)
        except ClientError as exc:
            code = error_code(exc)
            if code in _CHANGED_CODES:
                raise ObjectChangedError(key) from None
            if code in ("NotImplemented", "501"):
                self.conditional_puts_supported = False
                return self._put_if_match(key, full_key, body, metadata, etag)
            raise self._error(exc, key) from None
        except BotoCoreError as exc:
            raise self._error(exc, key) from None

    def _check_unchanged(self, key: str, etag: str) -> None:
        try:
            current = self.head(key)
        except ObjectNotFoundError:
            raise ObjectChangedError(key) from None  # deleted since it was read
        if current.etag != etag:
            raise ObjectChangedError(key)

    def _upload(
        self, full_key: str, body: bytes, metadata: dict[str, str], if_match: str | None = None
    ) -> PutReceipt:
        # If-Match, when given, is sent quoted, as the ETag is in S3's own answers.
        condition = {} if if_match is None else {"IfMatch": f'"{if_match}"'}
        if len(body) >= self._multipart_threshold:
            etag = self._upload_multipart(full_key, body, metadata, condition)
        else:
            response = self._client.put_object(
                Bucket=self.bucket, Key=full_key, Body=body, Metadata=metadata, **condition
            )
            etag = self._answered(response, "ETag", "PutObject", full_key)
        self.connection.bucket_seen = True
        return PutReceipt(_strip_etag(etag), len(body))

    def _upload_multipart(
        self,
        full_key: str,
        body: bytes,
        metadata: dict[str, str],
        condition: Mapping[str, str] | None = None,
    ) -> str:
        client, bucket = self._client, self.bucket
        upload = client.create_multipart_upload(Bucket=bucket, Key=full_key, Metadata=metadata)
        upload_id = self._answered(upload, "UploadId", "CreateMultipartUpload", full_key)
        part_size = self._part_size(len(body))
        try:
            parts = []
            for number, start in enumerate(range(0, len(body), part_size), 1):
                response = client.upload_part(
                    Bucket=bucket,
                    Key=full_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body[start : start + part_size],
                )
                etag = self._answered(response, "ETag", "UploadPart", full_key)
                parts.append({"PartNumber": number, "ETag": etag})
            done = client.complete_multipart_upload(
                Bucket=bucket,
                Key=full_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **(condition or {}),
            )
        except BaseException:
            # An unfinished upload keeps its parts (and their storage bill) until aborted.
            with contextlib.suppress(ClientError, BotoCoreError):
                client.abort_multipart_upload(Bucket=bucket, Key=full_key, UploadId=upload_id)
            raise
        return str(self._answered(done, "ETag", "CompleteMultipartUpload", full_key))

    def _answered(self, answer: Mapping[str, Any], field: str, operation: str, full: str) -> Any:
        return self.connection.answered(answer, field, operation, full[len(self._base) :])

    def _part_size(self, size: int) -> int:
        # S3 allows 10,000 parts: a body too large for the configured part size gets bigger parts.
        return max(self._multipart_chunksize, -(-size // MAX_PARTS))

    def delete(
        self,
        keys: Sequence[str],
        *,
        if_match: Mapping[str, str] | None = None,
        done: DeleteDone | None = None,
        still_wanted: StillWanted | None = None,
    ) -> list[DeleteFailure]:
        if if_match:
            conditional = [key for key in keys if key in if_match]
            plain = [key for key in keys if key not in if_match]
        else:
            conditional, plain = [], list(keys)
        report = done if done is not None else not_reported
        failures: list[DeleteFailure] = []
        for batch in batched(plain, DELETE_BATCH):
            objects = [{"Key": self._full(key)} for key in batch]
            with self._translated():
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                )
            # S3 reports a missing key as deleted; Errors holds only real failures.
            refused = [self._delete_failure(error) for error in response.get("Errors", ())]
            failures.extend(refused)
            failed = {f.key for f in refused}
            for key in batch:
                if key not in failed:
                    report(key, True)  # a missing key cannot be told from a deleted one here
        if conditional:
            expected = if_match or {}
            # One request per key: in parallel, so a batch of 1,000 costs about what 1,000 /
            # CONDITIONAL_DELETE_THREADS round trips do, not 1,000 of them end to end.
            threads = min(CONDITIONAL_DELETE_THREADS, len(conditional))
            failing = _FailingDeletes()
            under_way = _UnderWay()

            def one(key: str) -> DeleteFailure | None:
                if not under_way.enter():
                    return None  # the call is ending (an error, a signal): not sent
                try:
                    if still_wanted is not None and not still_wanted(key):
                        report(key, False)
                        return None
                    return failing.unsent(key) or failing.record(
                        self._delete_one(key, expected[key], report, still_wanted)
                    )
                finally:
                    under_way.leave()

            with ThreadPoolExecutor(threads, thread_name_prefix="s3idx-delete") as pool:
                try:
                    outcomes = pool.map(one, conditional)
                    failures.extend(f for f in outcomes if f is not None)
                except BaseException:
                    # Cut short (a signal's KeyboardInterrupt, an error): no delete starts now
                    # (the keys still queued are not sent), and those under way end, and are
                    # reported, before this call does, even one on a thread whose start the
                    # signal interrupted (the pool does not join it).
                    under_way.close()
                    raise
        return failures

    def _delete_one(
        self, key: str, etag: str, done: DeleteDone, still_wanted: StillWanted | None
    ) -> DeleteFailure | None:
        """A key's conditional delete; one that failed in a way worth retrying is that key's
        failure (retried alone by RetryingStore), not the batch's. ``done`` hears of a key
        deleted or found missing as soon as the server answered."""
        try:
            outcome = self._delete_if_match(key, etag, still_wanted)
            if not isinstance(outcome, DeleteFailure):
                done(key, outcome)
                return None
            return outcome
        except TransientError as exc:
            return DeleteFailure(
                key, exc.message, transient=True, timed_out=exc.timed_out, hint=exc.hint
            )
        except ObjectAccessDeniedError as exc:
            return DeleteFailure(key, exc.message, denied=True)

    def _delete_if_match(
        self, key: str, etag: str, still_wanted: StillWanted | None
    ) -> DeleteFailure | bool:
        """``_send_delete_if_match``, ``still_wanted`` asked as its request leaves; a key
        no longer wanted then is as one found gone (False)."""
        sending = self.connection.sending
        sending.still_wanted = None if still_wanted is None else partial(still_wanted, key)
        try:
            return self._send_delete_if_match(key, etag)
        except _NotWanted:
            return False
        finally:
            sending.still_wanted = None

    def _send_delete_if_match(self, key: str, etag: str) -> DeleteFailure | bool:
        """One DeleteObject with If-Match: the server compares and deletes in one step.

        DeleteObjects takes an ETag per object too, but servers ignore it (moto does), so each
        key costs its own request. A server that answers NotImplemented, or a botocore too old
        to send the header, gets a HEAD and a plain delete instead: an overwrite landing
        between the two is deleted, and ``conditional_deletes_supported`` turns False so
        callers can say so.

        Returns the failure, or whether this request removed the object (False: there was
        none; a server answering 204 for a missing key, as AWS does, says True).
        """
        if not self.conditional_deletes_supported:
            return self._delete_after_head(key, etag)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key), IfMatch=f'"{etag}"')
        except ClientError as exc:
            code = error_code(exc)
            if code in ("PreconditionFailed", "412"):
                return DeleteFailure(key, CHANGED_REASON, changed=True)
            if code in ("NoSuchKey", "404", "NotFound"):
                return False  # gone already (moto answers so; AWS answers 204)
            if code in ("NotImplemented", "501"):
                self.conditional_deletes_supported = False
                return self._delete_after_head(key, etag)
            raise self._error(exc, key) from None
        except BotoCoreError as exc:
            raise self._error(exc, key) from None
        return True

    def _delete_after_head(self, key: str, etag: str) -> DeleteFailure | bool:
        try:
            current = self.head(key)
        except ObjectNotFoundError:
            return False
        if current.etag != etag:
            return DeleteFailure(key, CHANGED_REASON, changed=True)
        with self._translated(key):
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key))
        return True

    def _delete_failure(self, error: Mapping[str, str]) -> DeleteFailure:
        full_key = error.get("Key", "")
        key = full_key[len(self._base) :] if full_key.startswith(self._base) else full_key
        message = redact(error.get("Message", ""), vendor_text=True)
        code = error.get("Code", "error")
        return DeleteFailure(key, f"{code}: {message}", denied=code in OBJECT_DENIALS)

    # --- reading -----------------------------------------------------------------------------

    def head(self, key: str) -> ObjectHead:
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if error_code(exc) in ("404", "NotFound", "NoSuchKey"):
                # A HEAD answer has no body, so a missing bucket looks like a missing key.
                self.connection.check_bucket_exists()
            raise self._error(exc, key) from None
        except BotoCoreError as exc:
            raise self._error(exc, key) from None
        self.connection.bucket_seen = True
        return _head(self.connection, key, response, "HeadObject")

    def check_exists(self) -> None:
        """NotFoundError if the bucket is missing (for reading commands; a prefix always exists)."""
        self.connection.check_bucket_exists()

    def confirm_writable(self) -> None:
        """A put that stored nothing still fails on a missing bucket (``S3Connection``)."""
        self.connection.confirm_writable()

    def prepare_writes(self) -> None:
        """A put's first request, before its index records anything: a bucket that is missing
        (or created now, with ``create_bucket``), credentials refused or absent, or an endpoint
        that does not answer fail the put while a new index is still new."""
        self.connection.confirm_writable()

    def check_writes(self) -> None:
        """What ``prepare_writes`` would refuse, without creating the bucket (a dry run)."""
        self.connection.check_writable()

    def open(self, key: str) -> ObjectBody:
        started = time.monotonic()
        with self._translated(key):
            response = self._client.get_object(Bucket=self.bucket, Key=self._full(key))
        self.connection.bucket_seen = True
        body = response["Body"]
        try:
            head = _head(self.connection, key, response, "GetObject")
        except BaseException:
            body.close()  # its connection goes back to the pool
            raise
        # The read timeout times silence only: the whole body has a deadline too (deadline.py),
        # counted from the request.
        seconds = transfer_deadline(self.connection.timeouts[1], head.size)
        watch = WATCHDOG.watch(seconds, partial(_abort, body), since=started)
        return ObjectBody(head, self._stream(body, key, head.size, watch), head.size)

    def _stream(self, body: Any, key: str, size: int, watch: Watch) -> Iterator[bytes]:
        # Chunked, so a large body is never held whole; closed even if the reader stops early.
        try:
            with self._translated(key):
                try:
                    yield from body.iter_chunks(READ_CHUNK)
                except Exception:
                    if not watch.fired:
                        raise
                    too_slow = True  # aborted by its deadline: say so, not "interrupted"
                else:
                    too_slow = False
            if too_slow:
                raise self.connection.too_slow(key, size, watch.seconds)
        finally:
            watch.cancel()
            body.close()

    def list_objects(
        self, prefix: str = "", *, start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._full(prefix)}
        if start_after is not None:
            params["StartAfter"] = self._full(start_after)
        cut = len(self._base)
        hide_reserved = not lists_reserved(prefix)
        previous = params.get("StartAfter")
        while True:
            with self._translated():
                try:
                    page = self._client.list_objects_v2(**params)
                except KeyError as exc:  # botocore's URL-decoding of each listed key
                    raise self._bad_listing(
                        f"an object without its {exc.args[0]}", "lists objects"
                    ) from None
            for item in page.get("Contents", ()):
                full, etag, size = self._listed(item)
                # S3 lists each key once, in ascending order: a key that is not after the one
                # before it is a page repeated or overlapping, which could page for ever.
                if previous is not None and full <= previous:
                    raise self._bad_listing(f"it lists {full[cut:]!r} after {previous[cut:]!r}")
                previous = full
                key = full[cut:]
                if not key:
                    continue  # a console "folder" marker for the prefix itself
                if hide_reserved and is_reserved_key(key):
                    # s3idx's own objects (manifests), a few per thousand documents: paging
                    # past them costs less than a second listing would.
                    continue
                yield ObjectInfo(key, _strip_etag(etag), size, item.get("LastModified"))
            if not page.get("IsTruncated"):
                return
            params["ContinuationToken"] = self._next_token(page, params.get("ContinuationToken"))

    def _next_token(self, page: Mapping[str, Any], sent: str | None) -> str:
        """The token of the next page; a page that gives none, or the one it was asked with
        (empty pages could then follow for ever), is refused."""
        token = page.get("NextContinuationToken")
        if not token:
            raise self._bad_listing("a page says more follow but gives no continuation token")
        if token == sent:
            raise self._bad_listing(
                "a page gives back the continuation token it was asked with, so the listing "
                "would never end"
            )
        return str(token)

    def _listed(self, item: Mapping[str, Any]) -> tuple[str, str, int]:
        """A listed object's key, ETag and size, which every S3 server lists."""
        # botocore's URL-decoding of the keys refuses a listing without one (list_objects).
        for field in ("ETag", "Size"):
            if field not in item:
                name = item["Key"][len(self._base) :]
                raise self._bad_listing(f"no {field} for {name!r}", "lists objects")
        return item["Key"], item["ETag"], item["Size"]

    def _bad_listing(self, what: str, wrong: str = "pages listings") -> BackendUnavailableError:
        return BackendUnavailableError(
            f"S3 ListObjectsV2 on {self.location} answered a listing no S3 server gives: {what}",
            hint=f"the S3 server (or a proxy before it) {wrong} wrongly: check its "
            "version, or report it to its vendor",
        )

    def replace_metadata(
        self, key: str, metadata: Mapping[str, str], *, if_match: str
    ) -> PutReceipt:
        """A server-side copy onto itself with the new metadata: the body is not sent again.

        ``CopySourceIfMatch`` makes S3 refuse (412) when the object was replaced since it was
        read. Some S3-compatible servers ignore that condition (moto does), so the ETag is also
        compared by a HEAD first: there, an overwrite in the moment between the HEAD and the
        copy is not seen. S3 copies objects up to 5 GB in one request.
        """
        check_metadata_size(metadata, key)
        full_key = self._full(key)
        current = self.head(key)
        if current.etag != if_match:
            raise ObjectChangedError(key)
        try:
            response = self._client.copy_object(
                Bucket=self.bucket,
                Key=full_key,
                CopySource={"Bucket": self.bucket, "Key": full_key},
                CopySourceIfMatch=f'"{if_match}"',
                MetadataDirective="REPLACE",
                Metadata=dict(metadata),
            )
        except ClientError as exc:
            if error_code(exc) in ("PreconditionFailed", "412"):
                raise ObjectChangedError(key) from None
            raise self._error(exc, key) from None
        except BotoCoreError as exc:
            raise self._error(exc, key) from None
        # Not the ETag it was asked to match: a copy of a multipart object gets another one.
        copied = response.get("CopyObjectResult") or {}
        etag = _strip_etag(self.connection.answered(copied, "ETag", "CopyObject", key))
        return PutReceipt(etag, current.size)  # the body, and so its size, is the one copied

    def close(self) -> None:
        self.connection.close()


def _sends_if_match(client: Any, operation: str) -> bool:
    shape = client.meta.service_model.operation_model(operation).input_shape
    return "IfMatch" in shape.members


def _no_region_lookup(request_dict: dict[str, Any], response: Any, **kwargs: Any) -> None:
    """Let botocore follow a redirect only where the answer names the bucket's region.

    Its region redirector, given a redirect that does not (a server or proxy that drops
    x-amz-bucket-region, a web front moving http:// to https://), asks the region with a
    HeadBucket, whose own redirect asks again, until RecursionError. Marked as redirected
    already, the request fails with the redirect instead: a usage error that says so.
    """
    if response is None or response[0] is None or response[0].status_code < 300:
        return
    parsed = response[1]
    headers = parsed.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    if "x-amz-bucket-region" in headers or parsed.get("Error", {}).get("Region"):
        return
    redirect = request_dict.get("context", {}).get("s3_redirect")
    if isinstance(redirect, dict):
        redirect["redirected"] = True


def _without_expect_header(params: dict[str, Any], **kwargs: Any) -> None:
    params.get("headers", {}).pop("Expect", None)


# obstore's names of what an answer holds, as S3 names them.
_FIELD_NAMES = {"e_tag": "ETag", "size": "Content-Length", "ContentLength": "Content-Length"}


def _head(
    connection: S3Connection, key: str, response: Mapping[str, Any], operation: str
) -> ObjectHead:
    """The head of a HeadObject or GetObject response."""
    return ObjectHead(
        key,
        _strip_etag(connection.answered(response, "ETag", operation, key)),
        connection.answered(response, "ContentLength", operation, key),
        _lowercase(response.get("Metadata", {})),
        response.get("LastModified"),
    )


def _lowercase(metadata: Mapping[str, str]) -> dict[str, str]:
    # S3 folds names to lowercase already; some S3-compatible servers return them capitalised.
    return {name.lower(): value for name, value in metadata.items()}


# --- the http transport ----------------------------------------------------------------------


class HttpS3Store(S3Store):
    """The boto3 store, whose bulk uploads (put) go through s3idx's own event-loop HTTP client
    (``s3idx.store.http_put``) instead of one botocore call per object on a worker thread.

    Every other request, and every upload the event loop could not finish, goes through boto3:
    one endpoint, one region, one credential chain and one error translation for both.
    """

    def event_loop_uploader(self, connections: int) -> HttpUploader | None:
        """An uploader for this bucket and prefix, or None where it cannot go (a proxy, no
        credentials, unsigned requests): boto3's worker threads then upload."""
        from s3idx.store.http_put import Endpoint, HttpUploader
        from s3idx.store.sigv4 import PutSigner

        connection, client = self.connection, self._client
        target = _put_target(client, self.bucket)
        if target is None:
            return None
        parts, region, service = target
        # The host requests go to (the bucket's own, with virtual-hosted addressing) decides.
        if client.meta.config.proxies or _proxied(parts):
            return None
        session = connection.session
        assert session is not None
        credentials = session.get_credentials()
        if credentials is None:
            return None
        hostname = parts.hostname
        assert hostname is not None  # checked by _put_target
        endpoint = Endpoint(parts.scheme, hostname, parts.port, parts.netloc, parts.path[:-1])
        return HttpUploader(
            endpoint,
            PutSigner(parts.netloc, region, service),
            lambda: _current(credentials),
            key_prefix=self._base,
            connections=connections,
            connect_timeout=connection.timeouts[0],
            read_timeout=connection.timeouts[1],
            ssl_context=_ssl_context(session) if endpoint.tls else None,
            user_agent=f"s3idx/{__version__}",
            on_request=connection.requests.add,
            max_body=self._multipart_threshold,
        )

    def loop_error(self, key: str, failed: Failed) -> S3idxError | None:
        """The error boto3 would have raised for the event loop's failed PUT of ``key`` (so
        retries, messages and exit statuses are the boto3 transport's), or None where the
        loop cannot judge and boto3 should send the upload itself: a missing bucket that
        ``--create-bucket`` makes, an answer that may be the loop's own fault (its signature
        refused, 200 without an ETag)."""
        if failed.status:
            if failed.code in _BOTO3_DECIDES or (
                failed.code == "NoSuchBucket" and self.connection.create_bucket
            ):
                return None
            response = {
                "Error": {"Code": failed.code, "Message": failed.message},
                "ResponseMetadata": {"HTTPStatusCode": failed.status},
            }
            return self._error(ClientError(response, "PutObject"), key)
        return self._error(_no_answer(self.connection.endpoint_url, failed), key)


# Answers to the loop that boto3's own request settles: a signature botocore would make
# differently (the loop's fault, not the credentials'), a success without an ETag.
_BOTO3_DECIDES = frozenset({"SignatureDoesNotMatch", "200"})


def _no_answer(url: str, failed: Failed) -> BotoCoreError:
    """The botocore exception for a PUT that got no answer, as its own request would raise."""
    if failed.code == "Timeout":
        timeout = ReadTimeoutError if failed.connected else ConnectTimeoutError
        return timeout(endpoint_url=url)
    if failed.connected:  # the request was lost (reset, closed, not HTTP): worth retrying
        return ConnectionClosedError(endpoint_url=url)
    if isinstance(failed.error, ssl.SSLError):
        return SSLError(endpoint_url=url, error=failed.error)
    return EndpointConnectionError(endpoint_url=url, error=failed.error or failed.reason)


class _Target(Exception):
    """Carries what botocore was about to sign out of its request pipeline."""


def _put_target(client: Any, bucket: str) -> tuple[SplitResult, str, str] | None:
    """Where botocore sends a PutObject of ``bucket`` and how it signs it: the URL (its path
    ending in the key), the signing region and service; None unless signed with SigV4.

    botocore's own rules decide (virtual-hosted or path addressing, regions, custom
    endpoints): a put_object is started and stopped just before it would be signed.
    """

    def capture(request: Any, signing_name: str, region_name: str, **kwargs: Any) -> None:
        signing = request.context.get("signing", {})
        version = kwargs.get("signature_version")
        raise _Target(
            request.url,
            signing.get("region") or region_name,
            signing.get("signing_name") or signing_name,
            version,
        )

    event = "before-sign.s3.PutObject"
    client.meta.events.register_first(event, capture, unique_id="s3idx-put-target")
    try:
        client.put_object(Bucket=bucket, Key="k", Body=b"")
    except _Target as target:
        url, region, service, version = target.args
    except (ClientError, BotoCoreError):
        return None
    else:  # pragma: no cover - botocore always signs before sending
        return None
    finally:
        client.meta.events.unregister(event, unique_id="s3idx-put-target")
    parts = urlsplit(url)
    if version not in ("s3v4", "v4") or not parts.path.endswith("/k") or not parts.hostname:
        return None
    return parts, region, service


def _proxied(parts: SplitResult) -> bool:
    """Whether botocore would send requests to this URL through a proxy from the environment."""
    from urllib.request import getproxies, proxy_bypass

    return parts.scheme in getproxies() and not proxy_bypass(parts.netloc)


def _current(credentials: Any) -> Credentials:
    from s3idx.store.sigv4 import Credentials

    frozen = credentials.get_frozen_credentials()  # refreshed first when about to expire
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


def _ssl_context(session: botocore.session.Session) -> ssl.SSLContext:
    """Certificates as botocore trusts them: AWS_CA_BUNDLE or a profile's ca_bundle, else its
    default bundle."""
    from botocore.httpsession import get_cert_path

    bundle = session.get_config_variable("ca_bundle")
    return ssl.create_default_context(cafile=bundle or get_cert_path(True))


def _abort(body: Any) -> None:
    """End a body's read now, from another thread: shutting its socket down wakes the read
    blocked on it (closing would not), which then fails."""
    connection = getattr(getattr(body, "_raw_stream", None), "connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        sock.shutdown(socket.SHUT_RDWR)
