"""S3 through obstore (Rust ``object_store``): the fast transport, ``--transport obstore``.

A botocore request costs about 2 ms of client CPU, most of it Python holding the GIL; obstore's
costs about 0.15 ms and releases the GIL while the request is under way (docs/ARCHITECTURE.md,
"Measured costs"). So the requests of the hot paths, ``put`` (ingest), ``open`` (get, query
--full) and ``head`` (rebuild-index, sync), go through obstore. The rest (listing, deletes,
bucket creation, multipart uploads of 64 MiB and more) is delegated to the boto3 ``S3Store``:
they are few requests each, and delegating keeps one implementation of their paging, batching
and quirks.

Both transports share one ``S3Connection`` (bucket, prefix, boto3 session and client, endpoint,
region, timeouts): credentials come from its session (``Boto3CredentialProvider``), so
profiles, ``--aws-profile``, role chains and SSO work exactly as with the boto3 transport, and
so do ``--endpoint-url`` and ``--region``. obstore makes no retries of its own: the engine's
``RetryingStore`` retries, as for every backend.

obstore's failures are translated into the same s3idx errors as botocore's: the S3 error code
and HTTP status of a failed request are read from obstore's message and looked up in the S3
error table (``s3_errors``), so exit statuses agree between the transports.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, Unpack
from urllib.parse import urlsplit

import obstore
from botocore.exceptions import ClientError, NoCredentialsError
from obstore.auth.boto3 import Boto3CredentialProvider
from obstore.store import S3Store as _ObstoreS3

from s3idx.codec import check_metadata_size
from s3idx.config import redact, redact_location
from s3idx.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    ObjectNotFoundError,
    S3idxError,
    TransientError,
    shorten_key,
    unreachable,
)
from s3idx.store.base import (
    DeleteDone,
    DeleteFailure,
    ObjectBody,
    ObjectHead,
    ObjectInfo,
    PutReceipt,
    StillWanted,
)
from s3idx.store.s3 import (
    DEFAULT_MULTIPART_THRESHOLD,
    READ_CHUNK,
    ConnectionOptions,
    S3Connection,
    S3Store,
)
from s3idx.store.s3_errors import (
    CREDENTIALS_HINT,
    TIMEOUT_HINT,
    line_break_error,
    missing_field_error,
    remember_credentials,
)

# obstore returns these HTTP attributes beside the user metadata; they are not metadata.
_STANDARD_ATTRIBUTES = frozenset(
    {
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-type",
        "cache-control",
        "storage-class",
    }
)

_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]+)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
_REDIRECT = re.compile(r"Received redirect without LOCATION", re.I)
_PERMANENT_REDIRECT = (
    "status code: 301, <Code>PermanentRedirect</Code><Message>the server redirects the request "
    "without saying where (a bucket of another region)</Message>"
)
# Connection failures that mean "nothing answers there" rather than "the answer was lost".
_BAD_HEADER = re.compile(r"InvalidHeaderValue|invalid header value|failed to parse header", re.I)
# object_store's words for an answer without a header it needs (an ETag, a size).
_MISSING_HEADER = re.compile(r"(?P<name>[A-Za-z][A-Za-z-]*) Header missing from response")
_TIMED_OUT = re.compile(r"kind: Timeout|TimedOut|operation timed out", re.I)
# A Python exception of the credential provider (botocore's session, refreshing): obstore's
# words, then the exception's class name and message.
_CREDENTIAL_PROVIDER = re.compile(r"External AWS credential provider: (?:(\w+): )?(.*)")
_UNREACHABLE = re.compile(r"ConnectionRefused|tcp connect error|dns error|Connect,", re.I)


class _Runtime:
    """Whether obstore can send requests in this process.

    obstore runs its requests on one runtime per process (Rust threads, started with the first
    client), which a fork does not copy: in a child forked after that, every obstore request,
    a new client's included, waits for ever. Such a child sends what would go through obstore
    through the boto3 ``S3Store`` instead (a child forked before obstore was used keeps it).
    """

    def __init__(self) -> None:
        self.started = False
        self.lost = False
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.lost = self.lost or self.started


RUNTIME = _Runtime()


class ObstoreS3Store:
    """An S3 object store whose ``put``, ``open`` and ``head`` requests go through obstore.

    Takes the arguments of ``S3Store``: ``ConnectionOptions`` and ``multipart_threshold``.
    Its ``S3Connection`` is shared with the boto3 ``S3Store`` it delegates to. Building the
    store makes no request; credentials are resolved at the first obstore request.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        **options: Unpack[ConnectionOptions],
    ) -> None:
        self.connection = S3Connection(bucket, prefix, **options)
        self._boto = S3Store.over(self.connection, multipart_threshold=multipart_threshold)
        self.bucket = self.connection.bucket
        self.prefix = self.connection.prefix
        self.location = self.connection.location
        self.identity = self.connection.identity
        # The connection's: requests this store sends through obstore and those its boto3
        # delegate sends land in one count.
        self.requests = self.connection.requests
        self._base = self.connection.base
        self._multipart_threshold = multipart_threshold
        self._lock = threading.Lock()
        self._store: _ObstoreS3 | None = None

    def check_exists(self) -> None:
        self.connection.check_bucket_exists()

    def confirm_writable(self) -> None:
        self.connection.confirm_writable()

    def prepare_writes(self) -> None:  # as S3Store's
        self.connection.confirm_writable()

    def check_writes(self) -> None:  # as S3Store's
        self.connection.check_writable()

    def __repr__(self) -> str:
        endpoint = redact_location(self.connection.endpoint_url, vendor_text=True)
        return f"ObstoreS3Store({self.location!r}, endpoint={endpoint!r})"

    # --- the obstore client ------------------------------------------------------------------

    def _client(self) -> _ObstoreS3:
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    RUNTIME.started = True
                    self._store = self._connect()
                store = self._store
        return store

    def _connect(self) -> _ObstoreS3:
        session = self.connection.session
        try:
            credentials = Boto3CredentialProvider(session)
        except ValueError:  # the session found no credentials at all
            raise self.connection.error(NoCredentialsError()) from None
        except Exception as exc:  # botocore's credential errors: the same translation
            raise self.connection.error(exc) from None
        if _has_control_character(session):
            # object_store panics on such a header value instead of returning an error.
            raise line_break_error(self.location)
        endpoint = self.connection.endpoint_url
        connect, read = self.connection.timeouts
        options: dict[str, Any] = {
            "connect_timeout": timedelta(seconds=connect),
            "timeout": timedelta(seconds=read),
            "allow_http": endpoint.startswith("http://"),
        }
        config: dict[str, Any] = {
            "region": self.connection.region or "us-east-1",
            # One retry policy for every backend: the engine's (RetryingStore).
            "retry_config": {"max_retries": 0},
            "client_options": options,
            "credential_provider": credentials,
        }
        if self.connection.explicit_endpoint or not _is_aws(endpoint):
            # As with boto3: S3-compatible servers get path-style requests.
            config["endpoint"] = endpoint
            config["virtual_hosted_style_request"] = False
        return _ObstoreS3(self.bucket, **config)

    def _full(self, key: str) -> str:
        return self._base + key

    def _error(self, exc: BaseException, key: str | None, operation: str) -> S3idxError:
        return translate_obstore_error(exc, self.connection, key, operation)

    # --- the protocol ------------------------------------------------------------------------

    def check_key(self, key: str) -> None:
        self.connection.check_key(key)

    def put(
        self, key: str, body: bytes, metadata: Mapping[str, str], *, if_match: str | None = None
    ) -> PutReceipt:
        if if_match is not None or len(body) >= self._multipart_threshold or RUNTIME.lost:
            # Multipart and conditional puts (rewrites): rare, and boto3 does them, with one
            # translation of If-Match's refusals (S3Store._put_if_match).
            return self._boto.put(key, body, metadata, if_match=if_match)
        check_metadata_size(metadata, key)
        try:
            result = self._put(key, body, metadata)
        except S3idxError as exc:
            if not (self.connection.create_bucket and _is_missing_bucket(exc)):
                raise
            with self.connection.translated(key):
                self.connection.create_missing_bucket()
            result = self._put(key, body, metadata)
        etag = self.connection.answered(result, "e_tag", "PutObject", key)
        return PutReceipt(_strip_etag(etag), len(body))

    def _put(self, key: str, body: bytes, metadata: Mapping[str, str]) -> Any:
        self.requests.add()
        try:
            return obstore.put(
                self._client(),
                self._full(key),
                body,
                # put's metadata is already a dict of str: no copy of it per request.
                attributes=metadata if isinstance(metadata, dict) else dict(metadata),
                use_multipart=False,
            )
        except S3idxError:
            raise
        except Exception as exc:
            raise self._error(exc, key, "PutObject") from None

    def head(self, key: str) -> ObjectHead:
        if RUNTIME.lost:
            return self._boto.head(key)
        self.requests.add()
        try:
            result = obstore.get(self._client(), self._full(key), options={"head": True})
        except S3idxError:
            raise
        except Exception as exc:
            if _unaddressable(exc):
                return self._boto.head(key)
            raise self._head_error(exc, key) from None
        return _object_head(self.connection, key, result, "HeadObject")

    def _head_error(self, exc: BaseException, key: str) -> S3idxError:
        error = self._error(exc, key, "HeadObject")
        if isinstance(error, ObjectNotFoundError):
            # A HEAD answer has no body, so a missing bucket looks like a missing key.
            self.connection.check_bucket_exists()
        return error

    def open(self, key: str) -> ObjectBody:
        if RUNTIME.lost:
            return self._boto.open(key)
        self.requests.add()
        try:
            result = obstore.get(self._client(), self._full(key))
        except S3idxError:
            raise
        except Exception as exc:
            if _unaddressable(exc):
                return self._boto.open(key)
            raise self._error(exc, key, "GetObject") from None
        head = _object_head(self.connection, key, result, "GetObject")
        return ObjectBody(head, self._stream(result, key), head.size)

    def _stream(self, result: Any, key: str) -> Iterator[bytes]:
        try:
            for chunk in result.stream(min_chunk_size=READ_CHUNK):
                yield bytes(chunk)
        except S3idxError:
            raise
        except Exception as exc:
            raise self._error(exc, key, "GetObject") from None

    def list_objects(
        self, prefix: str = "", *, start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        return self._boto.list_objects(prefix, start_after=start_after)

    def delete(
        self,
        keys: Sequence[str],
        *,
        if_match: Mapping[str, str] | None = None,
        done: DeleteDone | None = None,
        still_wanted: StillWanted | None = None,
    ) -> list[DeleteFailure]:
        # object_store's delete takes no If-Match: boto3's DeleteObject sends it.
        return self._boto.delete(keys, if_match=if_match, done=done, still_wanted=still_wanted)

    @property
    def conditional_deletes_supported(self) -> bool:
        return self._boto.conditional_deletes_supported

    @property
    def conditional_puts_supported(self) -> bool:
        return self._boto.conditional_puts_supported

    def replace_metadata(
        self, key: str, metadata: Mapping[str, str], *, if_match: str
    ) -> PutReceipt:
        # obstore (object_store) has no copy that replaces metadata: boto3's CopyObject does it
        # server-side, so the body is still not sent again.
        return self._boto.replace_metadata(key, metadata, if_match=if_match)

    def close(self) -> None:
        self._store = None
        self._boto.close()


def _object_head(connection: S3Connection, key: str, result: Any, operation: str) -> ObjectHead:
    meta = result.meta
    metadata = {
        name.lower(): value
        for name, value in result.attributes.items()
        if name.lower() not in _STANDARD_ATTRIBUTES
    }
    return ObjectHead(
        key,
        _strip_etag(connection.answered(meta, "e_tag", operation, key)),
        int(meta["size"]),
        metadata,
        meta.get("last_modified"),
    )


def _unaddressable(exc: BaseException) -> bool:
    """obstore's paths refuse some keys S3 holds: a '.', '..' or empty segment, a control
    character. s3idx writes no such key, but another tool's object under the prefix may have
    one; boto3 reaches it, so it is read (and reported) as with the boto3 transport."""
    return isinstance(exc, ValueError) and str(exc).startswith("Could not parse path")


def _strip_etag(etag: str) -> str:
    return etag.strip('"')


def _has_control_character(session: Any) -> bool:
    try:
        credentials = session.get_credentials()
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except Exception:  # cannot be loaded: the request itself reports that
        return False
    values = (frozen.access_key, frozen.secret_key, frozen.token) if frozen else ()
    return any(ord(c) < 0x20 or ord(c) == 0x7F for value in values if value for c in value)


def _credential_provider_error(found: re.Match[str], location: str) -> AccessDeniedError:
    """botocore failed to refresh the credentials obstore asked it for: what botocore's own
    exception would have been on the boto3 transport (exit 6, not retried), its text shown only
    where it cannot quote a credential source (``s3_errors.CredentialSourceError`` never does;
    botocore's quote a process's stderr or an endpoint's answer)."""
    name, message = found.group(1) or "", found.group(2)
    quoting = "custom-process" in message or "container-role" in message
    if name == "CredentialSourceError" or not quoting:
        reason = redact(message, vendor_text=True)
    else:
        reason = "the credential provider failed; its answer is not shown, as it may hold secrets"
    return AccessDeniedError(
        f"AWS credentials for {location} cannot be loaded: {reason}", hint=CREDENTIALS_HINT
    )


def _is_aws(endpoint: str) -> bool:
    host = urlsplit(endpoint).hostname or ""
    return host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


def _is_missing_bucket(error: S3idxError) -> bool:
    return getattr(error, "s3_code", None) == "NoSuchBucket"


def translate_obstore_error(
    exc: BaseException, connection: S3Connection, key: str | None, operation: str
) -> S3idxError:
    """The s3idx error for an obstore failure: the same as botocore's for the same answer.

    An HTTP answer is rebuilt as the botocore ``ClientError`` it would have been (code from
    the XML body, else the bare status as botocore gives for HEAD) and translated by the
    connection (``s3_errors``), so the error table lives in one place. No answer at all:
    unreachable (exit 5) when the connection could not be made, else transient (the request
    was lost mid-way).
    """
    remember_credentials(connection.session)
    text = str(exc)
    status = _STATUS.search(text)
    if status is None and _REDIRECT.search(text):
        # obstore's own words for a 301 without a Location (S3's PermanentRedirect): rebuilt
        # as the answer it was, for the same usage error as botocore's.
        text, status = _PERMANENT_REDIRECT, _STATUS.search(_PERMANENT_REDIRECT)
    if status is not None:
        code_match = _CODE.search(text)
        code = code_match.group(1) if code_match else status.group(1)
        message = _MESSAGE.search(text)
        response = {
            "Error": {"Code": code, "Message": message.group(1) if message else ""},
            "ResponseMetadata": {"HTTPStatusCode": int(status.group(1))},
        }
        error = connection.error(ClientError(response, operation), key)
        # The S3 code rides on the error for _is_missing_bucket; no s3idx error declares it.
        error.s3_code = code  # type: ignore[attr-defined]
        return error
    where = connection.location + (f"/{shorten_key(key)}" if key else "")
    named = redact_location(connection.endpoint_url, vendor_text=True)
    reason = redact(text.split("\n", 1)[0], vendor_text=True)
    provider = _CREDENTIAL_PROVIDER.search(text)
    if provider is not None:
        return _credential_provider_error(provider, connection.location)
    if _UNREACHABLE.search(text):
        return unreachable(
            BackendUnavailableError(
                f"cannot reach S3 at {named} for {where}: {reason}",
                hint="check --endpoint-url, the network, and that the server is running",
            )
        )
    if _BAD_HEADER.search(text):
        return line_break_error(where)
    missing = _MISSING_HEADER.search(text)
    if missing is not None:  # not retried: the same server gives the same answer
        return missing_field_error(connection.endpoint_url, where, operation, missing["name"])
    if _TIMED_OUT.search(text):
        return TransientError(
            f"cannot reach S3 at {named} for {where}: timed out (no answer within "
            f"{connection.timeouts[1]:g} s)",
            hint=TIMEOUT_HINT,
            timed_out=True,
        )
    if isinstance(exc, obstore.exceptions.BaseError) or "error sending request" in text:
        return TransientError(
            f"connection to {named} was interrupted while working on {where}: {reason}",
            hint="the network or the server dropped the request; run the command again",
        )
    return S3idxError(f"S3 request for {where} failed: {reason}")
