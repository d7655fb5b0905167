"""Amazon S3 (or an S3-compatible server such as MinIO) as an object store, through boto3.

Object keys are ``PREFIX/KEY`` (just ``KEY`` when the prefix is empty). One boto3 client serves
every worker thread: botocore clients are thread-safe, and sharing one keeps one connection pool
and one credential cache. Credentials and region come from the standard chain of a
``boto3.Session`` (environment, ``~/.aws/config`` profiles including ``source_profile`` and role
chains, ``~/.aws/credentials``, instance roles).

Every botocore failure is translated into an s3idx error here (``translate_error``); nothing
vendor-specific leaves this module, and no message carries a credential.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConfigNotFound,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    InvalidConfigError,
    NoAuthTokenError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    RefreshWithMFAUnsupportedError,
    ResponseStreamingError,
    SSLError,
    SSOError,
    TokenRetrievalError,
    UnknownCredentialError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from s3idx._version import __version__
from s3idx.codec import MAX_KEY_BYTES, check_metadata_size
from s3idx.config import redact, remember_secret
from s3idx.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    InvalidKeyError,
    MetadataTooLargeError,
    NotFoundError,
    ObjectChangedError,
    ObjectNotFoundError,
    S3idxError,
    TransientError,
    UsageError,
    shorten_key,
)
from s3idx.limits import DELETE_BATCH, batched
from s3idx.store.base import (
    CHANGED_REASON,
    DeleteFailure,
    ObjectBody,
    ObjectHead,
    ObjectInfo,
    PutReceipt,
)

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


# --- error table -----------------------------------------------------------------------------

_CREDENTIALS_HINT = (
    "check the credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, "
    "or the profile chosen with --aws-profile"
)
_PERMISSION_HINT = "the credentials work but are not allowed to do this on this bucket"
_EXPIRED_HINT = "the session token has expired: refresh it (e.g. aws sso login) and try again"
_REGION_HINT = "give the bucket's region with --region (or set it in the AWS profile)"
_TRANSIENT_HINT = "S3 is busy or failing; run the command again later"
TIMEOUT_HINT = (
    "check --endpoint-url and that the server is running; a slow server may need a longer "
    "deadline: S3IDX_TIMEOUT=SECONDS (default 60)"
)

# botocore error code -> (s3idx exception, hint), as s3fs maps codes to OSErrors. A HEAD
# response has no body, so its errors arrive as bare HTTP statuses ("404", "403").
# NoSuchBucket and the not-found codes get their own messages in translate_error.
ERROR_TABLE: dict[str, tuple[type[S3idxError], str | None]] = {
    "NoSuchBucket": (NotFoundError, None),
    "NoSuchKey": (ObjectNotFoundError, None),
    "NotFound": (ObjectNotFoundError, None),
    "404": (ObjectNotFoundError, None),
    "AccessDenied": (AccessDeniedError, _PERMISSION_HINT),
    "AllAccessDisabled": (AccessDeniedError, _PERMISSION_HINT),
    "Forbidden": (AccessDeniedError, _PERMISSION_HINT),
    # A HEAD's bare 403 cannot say whether the key id is wrong or only the permission is
    # missing; S3 also answers 403 for a missing key when s3:ListBucket is not allowed.
    "403": (
        AccessDeniedError,
        "the credentials are wrong or not allowed to read this object (S3 also answers 403 "
        "for a missing object when s3:ListBucket is not allowed)",
    ),
    "InvalidAccessKeyId": (AccessDeniedError, _CREDENTIALS_HINT),
    "SignatureDoesNotMatch": (AccessDeniedError, _CREDENTIALS_HINT),
    "InvalidToken": (AccessDeniedError, _CREDENTIALS_HINT),
    "ExpiredToken": (AccessDeniedError, _EXPIRED_HINT),
    "ExpiredTokenException": (AccessDeniedError, _EXPIRED_HINT),
    "TokenRefreshRequired": (AccessDeniedError, _EXPIRED_HINT),
    "RequestTimeTooSkewed": (AccessDeniedError, "this computer's clock is wrong; set it right"),
    "MetadataTooLarge": (
        MetadataTooLargeError,
        "index fewer or smaller fields (--field), or shorten their values",
    ),
    "SlowDown": (TransientError, _TRANSIENT_HINT),
    "Throttling": (TransientError, _TRANSIENT_HINT),
    "ThrottlingException": (TransientError, _TRANSIENT_HINT),
    "RequestThrottled": (TransientError, _TRANSIENT_HINT),
    "TooManyRequests": (TransientError, _TRANSIENT_HINT),
    "ServiceUnavailable": (TransientError, _TRANSIENT_HINT),
    "InternalError": (TransientError, _TRANSIENT_HINT),
    "RequestTimeout": (TransientError, _TRANSIENT_HINT),
    "OperationAborted": (TransientError, "another operation on the bucket conflicted; retry"),
    "500": (TransientError, _TRANSIENT_HINT),
    "502": (TransientError, _TRANSIENT_HINT),
    "503": (TransientError, _TRANSIENT_HINT),
    "504": (TransientError, _TRANSIENT_HINT),
    "InvalidBucketName": (
        UsageError,
        "bucket names are 3-63 characters: lowercase letters, digits, dots and hyphens",
    ),
    "BucketAlreadyExists": (
        UsageError,
        "bucket names are global and this one belongs to another account; choose another",
    ),
    "IllegalLocationConstraintException": (UsageError, _REGION_HINT),
    "AuthorizationHeaderMalformed": (UsageError, _REGION_HINT),
    "PermanentRedirect": (UsageError, _REGION_HINT),
}

_CREDENTIAL_ERRORS = (
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
    ProfileNotFound,
    ConfigNotFound,
    InvalidConfigError,
    TokenRetrievalError,
    SSOError,
    NoAuthTokenError,
    RefreshWithMFAUnsupportedError,
    UnknownCredentialError,
)
# Connection lost mid-way: worth retrying, unlike an endpoint that cannot be reached at all.
_INTERRUPTED_ERRORS = (
    ReadTimeoutError,
    ConnectionClosedError,
    ResponseStreamingError,
    IncompleteReadError,
)

# Vendor text is scrubbed before it goes into a message: access key ids, the pieces of a
# SigV4 Authorization header, and long base64 runs (secret keys, session tokens).
_SECRETS = re.compile(
    r"(?<![A-Za-z0-9])(?:AKIA|ASIA|AIDA|AROA|AIPA|ANPA|ANVA|APKA|ABIA|ACCA|AGPA)[A-Z0-9]{8,}"
    r"|(?<=Credential=)[^,\s]+"
    r"|(?<=Signature=)[0-9A-Fa-f]+"
    r"|(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40,}"
    r"|eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)*"  # a JWT, all of its segments
)


def scrub(text: str) -> str:
    """Text from botocore or the server with anything credential-like replaced by ``***``.

    Beside these patterns, every secret known by value is hidden too (``config.redact``).
    """
    return redact(_SECRETS.sub("***", text))


def remember_credentials(session: boto3.Session) -> None:
    """Make the session's credentials known to ``redact``, so no message can show them."""
    try:
        credentials = session.get_credentials()
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except Exception:  # the credentials cannot even be loaded: nothing of them to hide
        return
    if frozen is not None:
        for value in (frozen.access_key, frozen.secret_key, frozen.token):
            remember_secret(value)


def line_break_error(where: str) -> AccessDeniedError:
    return AccessDeniedError(
        f"the AWS session token (or key) for {where} contains a line break or another "
        "control character, so no request can carry it",
        hint="check ~/.aws/credentials and AWS_SESSION_TOKEN / AWS_ACCESS_KEY_ID / "
        "AWS_SECRET_ACCESS_KEY (a file saved with Windows line ends leaves a stray \\r)",
    )


def _bad_header_value(exc: BaseException) -> bool:
    """http.client refused a header value: a credential holding a line break, in practice."""
    inner = getattr(exc, "kwargs", {}).get("error")
    return isinstance(inner, ValueError) and "Invalid header value" in str(inner)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def translate_error(
    exc: BaseException,
    *,
    bucket: str,
    key: str | None = None,
    prefix: str = "",
    endpoint: str | None = None,
    create_bucket: bool = False,
    timeouts: tuple[float, float] | None = None,
) -> S3idxError:
    """The s3idx error for a botocore failure concerning ``bucket`` (and the document ``key``).

    ``key`` is relative to the store ``prefix``; messages name ``s3://bucket/prefix/key``.
    """
    where = _s3_url(bucket, prefix, shorten_key(key) if key else key)
    if isinstance(exc, ClientError):
        return _client_error(exc, bucket, key, where, create_bucket)
    if isinstance(exc, ProfileNotFound):
        # A name the user typed, not a credential that failed: a usage error.
        profile = exc.kwargs.get("profile", "?")
        known = ", ".join(_aws_profiles()) or "none"
        return UsageError(
            f"AWS profile {profile!r} is not defined; profiles: {known} (looked in the AWS "
            f"config and credentials files) while opening {where}",
            hint="choose one with --aws-profile, or define it in ~/.aws/config",
        )
    if isinstance(exc, NoCredentialsError):
        return AccessDeniedError(f"no AWS credentials found for {where}", hint=_CREDENTIALS_HINT)
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return AccessDeniedError(
            f"AWS credentials for {where} cannot be used: {scrub(str(exc))}",
            hint=_CREDENTIALS_HINT,
        )
    named = scrub(redact(endpoint or "the S3 endpoint"))
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
        connect, read = timeouts or (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)
        waited = (
            f"no connection within {connect:g} s"
            if isinstance(exc, ConnectTimeoutError)
            else f"no answer within {read:g} s"
        )
        return TransientError(
            f"cannot reach S3 at {named} for {where}: timed out ({waited})",
            hint=TIMEOUT_HINT,
            timed_out=True,
        )
    if isinstance(exc, _INTERRUPTED_ERRORS):
        return TransientError(
            f"connection to {named} was interrupted while working on {where}: {_reason(exc)}",
            hint="the network or the server dropped the request; run the command again",
        )
    if isinstance(exc, SSLError):
        return BackendUnavailableError(
            f"TLS with {named} failed for {where}: {_reason(exc)}",
            hint="check the endpoint URL, or point AWS_CA_BUNDLE at the server's CA certificate",
        )
    if isinstance(exc, HTTPClientError) and _bad_header_value(exc):
        return line_break_error(where)
    # Refused, unresolvable, connect timeouts, proxies: ConnectionError, not HTTPClientError.
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return BackendUnavailableError(
            f"cannot reach S3 at {named} for {where}: {_reason(exc)}",
            hint="check --endpoint-url, the network, and that the server is running",
        )
    return S3idxError(f"S3 request for {where} failed: {scrub(str(exc))}")


def _client_error(
    exc: ClientError, bucket: str, key: str | None, where: str, create_bucket: bool
) -> S3idxError:
    code = error_code(exc)
    cls, hint = ERROR_TABLE.get(code, (S3idxError, None))
    if cls is ObjectNotFoundError and key is not None:
        return ObjectNotFoundError(key)
    if code == "NoSuchBucket" or cls is ObjectNotFoundError:
        return NotFoundError(
            f"bucket {bucket!r} does not exist",
            hint="it is created by the first put (--create-bucket)"
            if create_bucket
            else "check the bucket name in --store; to create it: s3idx put --create-bucket",
        )
    error = exc.response.get("Error", {})
    message = scrub(str(error.get("Message") or "")) or "no message"
    operation = exc.operation_name or "request"
    text = f"S3 {operation} on {where} failed: {code or 'unknown error'}: {message}"
    retries = exc.response.get("ResponseMetadata", {}).get("RetryAttempts")
    if cls is TransientError and retries:
        text += f" (after {retries} retries)"
    if cls is TransientError:
        return TransientError(text, hint=hint, throttled=code in _THROTTLING)
    return cls(text, hint=hint)


# Codes that ask the client to send less, not only to wait.
_THROTTLING = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests", "503"}
)


def _reason(exc: BotoCoreError) -> str:
    """The innermost OS-level reason (e.g. 'Connection refused'), else botocore's own text."""
    cause = getattr(exc, "kwargs", {}).get("error")
    seen = 0
    while isinstance(cause, BaseException) and seen < 10:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
        seen += 1
    # botocore's text names the request URL; only the scrubbed form is shown.
    return scrub(redact(str(exc)))


def _aws_profiles() -> list[str]:
    """The profiles of the AWS config and credentials files (AWS_CONFIG_FILE and others)."""
    try:
        return sorted(botocore.session.Session().available_profiles)
    except Exception:  # a broken file: the profile error is what the user needs to see
        return []


def _s3_url(bucket: str, prefix: str, key: str | None) -> str:
    path = "/".join(part for part in (prefix, key) if part)
    return f"s3://{bucket}/{path}" if path else f"s3://{bucket}"


def _strip_etag(etag: str) -> str:
    return etag.strip('"')


# --- the store -------------------------------------------------------------------------------


class S3Store:
    """Objects in an S3 bucket under a prefix; see the module docstring.

    ``profile``, ``region`` and ``endpoint_url`` go to boto3 (None: the standard chain decides).
    With ``create_bucket`` the first put that finds the bucket missing creates it; otherwise a
    missing bucket is a NotFoundError. Bodies of ``multipart_threshold`` bytes or more go up in
    parts of ``multipart_chunksize`` (at least 5 MiB). ``max_attempts`` counts botocore's own
    retries of throttling, 5xx and connection errors (``retry_mode`` "standard" or "adaptive");
    0 (the default) leaves retrying to the engine.
    Building a store makes no request.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        profile: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        create_bucket: bool = False,
        max_pool_connections: int = DEFAULT_POOL_CONNECTIONS,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_mode: str = "standard",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> None:
        if multipart_chunksize < MIN_PART_SIZE:
            raise ValueError(f"multipart_chunksize must be at least {MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._base = f"{self.prefix}/" if self.prefix else ""
        self.location = _s3_url(bucket, self.prefix, None)
        self._create_bucket = create_bucket
        self._multipart_threshold = multipart_threshold
        self._multipart_chunksize = multipart_chunksize
        self._bucket_lock = threading.Lock()
        self._bucket_created = False
        self._bucket_seen = False
        self._timeouts = (connect_timeout, read_timeout)
        config = Config(
            max_pool_connections=max_pool_connections,
            # Checksums only where S3 demands them (DeleteObjects) and no parameter validation:
            # measured 2.7 -> 2.1 ms of client CPU a put (docs/ARCHITECTURE.md, "Measured costs").
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            parameter_validation=False,
            retries={"mode": retry_mode, "max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            user_agent_extra=f"s3idx/{__version__}",
            # S3-compatible servers (MinIO, Ceph, moto) rarely have the wildcard DNS that
            # virtual-hosted addressing needs; AWS itself needs no endpoint_url.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        self._session, self._client = self._connect(profile, region, endpoint_url, config)
        self.endpoint_url: str = self._client.meta.endpoint_url
        # Whether DeleteObject's If-Match is honoured: False once the server answers
        # NotImplemented, or when this botocore cannot send it (it would drop the parameter
        # silently: validation is off). Deletes then compare by a HEAD first (delete()).
        self.conditional_deletes_supported = _sends_if_match(self._client)

    def _connect(
        self, profile: str | None, region: str | None, endpoint_url: str | None, config: Config
    ) -> tuple[boto3.Session, Any]:
        try:
            session = boto3.Session(profile_name=profile, region_name=region)
            client = session.client("s3", endpoint_url=endpoint_url, config=config)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from None
        except ValueError as exc:  # a malformed endpoint URL or region
            raise UsageError(
                f"cannot use S3 endpoint {redact(endpoint_url or 'default')!r} "
                f"with region {region!r}: {scrub(str(exc))}"
            ) from None
        # botocore sends "Expect: 100-continue" with every PUT body; a server that answers
        # with part of "100 Continue" and closes makes it spin forever in _consume_headers
        # (no timeout fires). Bodies here are small and sent whole: the header buys nothing.
        client.meta.events.register_last("before-call.s3", _without_expect_header)
        return session, client

    @property
    def session(self) -> boto3.Session:
        """The boto3 session (e.g. for a faster transport that takes a session's credentials)."""
        return self._session

    @property
    def client(self) -> Any:
        """The shared boto3 S3 client (generated at run time, hence untyped)."""
        return self._client

    @property
    def timeouts(self) -> tuple[float, float]:
        """Seconds to connect, and to wait for an answer, per request."""
        return self._timeouts

    @property
    def region(self) -> str | None:
        region: str | None = self._client.meta.region_name
        return region

    def __repr__(self) -> str:
        return f"S3Store({self.location!r}, endpoint={scrub(redact(self.endpoint_url))!r})"

    # --- keys and errors ---------------------------------------------------------------------

    def _full(self, key: str) -> str:
        return self._base + key

    def check_key(self, key: str) -> None:
        size = len(self._full(key).encode("utf-8", "surrogatepass"))
        if size > MAX_KEY_BYTES:
            raise InvalidKeyError(
                f"key is {size} bytes with the store prefix {self.prefix!r}; S3 allows "
                f"{MAX_KEY_BYTES} bytes (UTF-8)",
                hint="use shorter keys or a shorter prefix",
            )

    def _error(self, exc: BaseException, key: str | None = None) -> S3idxError:
        if hasattr(self, "_session"):
            remember_credentials(self._session)
        endpoint = self._client.meta.endpoint_url if hasattr(self, "_client") else None
        return translate_error(
            exc,
            bucket=self.bucket,
            key=key,
            prefix=self.prefix,
            endpoint=endpoint,
            create_bucket=self._create_bucket,
            timeouts=self._timeouts,
        )

    @contextlib.contextmanager
    def _translated(self, key: str | None = None) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, key) from None

    # For a transport beside this one (obstore_s3), which delegates to this store: the same
    # error translation and the same once-only bucket checks, not copies of them.

    @property
    def creates_bucket(self) -> bool:
        return self._create_bucket

    def translate(self, exc: BaseException, key: str | None = None) -> S3idxError:
        """The s3idx error for a botocore exception (or one built like it)."""
        return self._error(exc, key)

    def translated(self, key: str | None = None) -> contextlib.AbstractContextManager[None]:
        return self._translated(key)

    def create_missing_bucket(self) -> None:
        self._create_missing_bucket()

    def check_bucket_exists(self) -> None:
        self._check_bucket_exists()

    # --- writing -----------------------------------------------------------------------------

    def put(self, key: str, body: bytes, metadata: Mapping[str, str]) -> PutReceipt:
        # S3 enforces 2 KB of metadata, but S3-compatible servers (and moto) may not.
        check_metadata_size(metadata, key)
        full_key, meta = self._full(key), dict(metadata)
        with self._translated(key):
            try:
                return self._upload(full_key, body, meta)
            except ClientError as exc:
                if not (self._create_bucket and error_code(exc) == "NoSuchBucket"):
                    raise
            # Creating only when a write finds the bucket missing costs nothing per put, and
            # reads never create a bucket (a typo stays a "does not exist" error).
            self._create_missing_bucket()
            return self._upload(full_key, body, meta)

    def _upload(self, full_key: str, body: bytes, metadata: dict[str, str]) -> PutReceipt:
        if len(body) >= self._multipart_threshold:
            etag = self._upload_multipart(full_key, body, metadata)
        else:
            response = self._client.put_object(
                Bucket=self.bucket, Key=full_key, Body=body, Metadata=metadata
            )
            etag = response["ETag"]
        self._bucket_seen = True
        return PutReceipt(_strip_etag(etag), len(body))

    def _upload_multipart(self, full_key: str, body: bytes, metadata: dict[str, str]) -> str:
        client, bucket = self._client, self.bucket
        upload = client.create_multipart_upload(Bucket=bucket, Key=full_key, Metadata=metadata)
        upload_id = upload["UploadId"]
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
                parts.append({"PartNumber": number, "ETag": response["ETag"]})
            done = client.complete_multipart_upload(
                Bucket=bucket,
                Key=full_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            # An unfinished upload keeps its parts (and their storage bill) until aborted.
            with contextlib.suppress(ClientError, BotoCoreError):
                client.abort_multipart_upload(Bucket=bucket, Key=full_key, UploadId=upload_id)
            raise
        return str(done["ETag"])

    def _part_size(self, size: int) -> int:
        # S3 allows 10,000 parts: a body too large for the configured part size gets bigger parts.
        return max(self._multipart_chunksize, -(-size // MAX_PARTS))

    def _create_missing_bucket(self) -> None:
        with self._bucket_lock:
            if self._bucket_created:
                return
            params: dict[str, Any] = {"Bucket": self.bucket}
            region = self._client.meta.region_name
            # us-east-1 is the default location and must not be named as a constraint.
            if region and region not in ("us-east-1", "aws-global"):
                params["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                self._client.create_bucket(**params)
            except ClientError as exc:
                # Another thread or process won the race: the bucket is there, and ours.
                if error_code(exc) != "BucketAlreadyOwnedByYou":
                    raise
            self._bucket_created = True

    def delete(
        self, keys: Sequence[str], *, if_match: Mapping[str, str] | None = None
    ) -> list[DeleteFailure]:
        if if_match:
            conditional = [key for key in keys if key in if_match]
            plain = [key for key in keys if key not in if_match]
        else:
            conditional, plain = [], list(keys)
        failures: list[DeleteFailure] = []
        for batch in batched(plain, DELETE_BATCH):
            objects = [{"Key": self._full(key)} for key in batch]
            with self._translated():
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                )
            # S3 reports a missing key as deleted; Errors holds only real failures.
            failures.extend(self._delete_failure(error) for error in response.get("Errors", ()))
        for key in conditional:
            failure = self._delete_if_match(key, (if_match or {})[key])
            if failure is not None:
                failures.append(failure)
        return failures

    def _delete_if_match(self, key: str, etag: str) -> DeleteFailure | None:
        """One DeleteObject with If-Match: the server compares and deletes in one step.

        DeleteObjects takes an ETag per object too, but servers ignore it (moto does), so each
        key costs its own request. A server that answers NotImplemented, or a botocore too old
        to send the header, gets a HEAD and a plain delete instead: an overwrite landing
        between the two is deleted, and ``conditional_deletes_supported`` turns False so
        callers can say so.
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
                return None  # gone already (moto answers so; AWS answers 204)
            if code in ("NotImplemented", "501"):
                self.conditional_deletes_supported = False
                return self._delete_after_head(key, etag)
            raise self._error(exc, key) from None
        except BotoCoreError as exc:
            raise self._error(exc, key) from None
        return None

    def _delete_after_head(self, key: str, etag: str) -> DeleteFailure | None:
        try:
            current = self.head(key)
        except ObjectNotFoundError:
            return None
        if current.etag != etag:
            return DeleteFailure(key, CHANGED_REASON, changed=True)
        with self._translated(key):
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key))
        return None

    def _delete_failure(self, error: Mapping[str, str]) -> DeleteFailure:
        full_key = error.get("Key", "")
        key = full_key[len(self._base) :] if full_key.startswith(self._base) else full_key
        reason = f"{error.get('Code', 'error')}: {scrub(error.get('Message', ''))}"
        return DeleteFailure(key, reason)

    # --- reading -----------------------------------------------------------------------------

    def head(self, key: str) -> ObjectHead:
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if error_code(exc) in ("404", "NotFound", "NoSuchKey"):
                # A HEAD answer has no body, so a missing bucket looks like a missing key.
                self._check_bucket_exists()
            raise self._error(exc, key) from None
        except BotoCoreError as exc:
            raise self._error(exc, key) from None
        self._bucket_seen = True
        return _head(key, response)

    def check_exists(self) -> None:
        """NotFoundError if the bucket is missing (for reading commands; a prefix always exists)."""
        self._check_bucket_exists()

    def _check_bucket_exists(self) -> None:
        """Raise NotFoundError if the bucket is missing; asked at most once per store."""
        if self._bucket_seen:
            return
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
                raise self._error(exc) from None
            # Not allowed to ask (403) or unsure: keep the object's own not-found answer.
        except BotoCoreError as exc:
            raise self._error(exc) from None
        self._bucket_seen = True

    def open(self, key: str) -> ObjectBody:
        with self._translated(key):
            response = self._client.get_object(Bucket=self.bucket, Key=self._full(key))
        self._bucket_seen = True
        head = _head(key, response)
        return ObjectBody(head, self._stream(response["Body"], key), head.size)

    def _stream(self, body: Any, key: str) -> Iterator[bytes]:
        # Chunked, so a large body is never held whole; closed even if the reader stops early.
        try:
            with self._translated(key):
                yield from body.iter_chunks(READ_CHUNK)
        finally:
            body.close()

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._full(prefix)}
        if start_after is not None:
            params["StartAfter"] = self._full(start_after)
        cut = len(self._base)
        while True:
            with self._translated():
                page = self._client.list_objects_v2(**params)
            for item in page.get("Contents", ()):
                key = item["Key"][cut:]
                if key:  # skip a console "folder" marker for the prefix itself
                    yield ObjectInfo(key, _strip_etag(item["ETag"]), item["Size"])
            if not page.get("IsTruncated"):
                return
            params["ContinuationToken"] = page["NextContinuationToken"]

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
        etag = _strip_etag(response.get("CopyObjectResult", {}).get("ETag", if_match))
        return PutReceipt(etag, current.size)  # the body, and so its size, is the one copied

    def close(self) -> None:
        self._client.close()


def _sends_if_match(client: Any) -> bool:
    shape = client.meta.service_model.operation_model("DeleteObject").input_shape
    return "IfMatch" in shape.members


def _without_expect_header(params: dict[str, Any], **kwargs: Any) -> None:
    params.get("headers", {}).pop("Expect", None)


def _head(key: str, response: Mapping[str, Any]) -> ObjectHead:
    """The head of a HeadObject or GetObject response."""
    return ObjectHead(
        key,
        _strip_etag(response["ETag"]),
        response["ContentLength"],
        _lowercase(response.get("Metadata", {})),
        response.get("LastModified"),
    )


def _lowercase(metadata: Mapping[str, str]) -> dict[str, str]:
    # S3 folds names to lowercase already; some S3-compatible servers return them capitalised.
    return {name.lower(): value for name, value in metadata.items()}
