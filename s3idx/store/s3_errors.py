"""botocore's failures as s3idx errors: the error table, its hints and the translation.

Kept apart from the transports, as s3fs keeps ``errors.py``: both S3 transports (boto3 in
``s3.py``, obstore in ``obstore_s3.py``, which rebuilds obstore's answers as botocore's) map S3
codes through this one table, so exit statuses agree. No message carries a credential: vendor
text goes through ``config.redact(..., vendor_text=True)``.
"""

from __future__ import annotations

import datetime
import getpass
import json
import re
import signal
import subprocess
from functools import partial
from typing import Any

import botocore.session
from botocore.compat import compat_shell_split
from botocore.credentials import (
    AssumeRoleProvider,
    ContainerProvider,
    ProcessProvider,
    RefreshableCredentials,
)
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConfigNotFound,
    ConfigParseError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    EndpointResolutionError,
    HTTPClientError,
    IncompleteReadError,
    InvalidChecksumConfigError,
    InvalidConfigError,
    InvalidDefaultsMode,
    InvalidEndpointDiscoveryConfigurationError,
    InvalidRegionError,
    InvalidRetryConfigurationError,
    InvalidS3AddressingStyleError,
    InvalidS3UsEast1RegionalEndpointConfigError,
    InvalidSTSRegionalEndpointsConfigError,
    MetadataRetrievalError,
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
    UnsupportedS3ConfigurationError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from s3idx.config import redact, redact_location, remember_secret
from s3idx.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    IncompleteAnswerError,
    MetadataTooLargeError,
    NotFoundError,
    ObjectAccessDeniedError,
    ObjectNotFoundError,
    S3idxError,
    TransientError,
    UsageError,
    shorten_key,
    unreachable,
)
from s3idx.store.base import s3_url
from s3idx.store.deadline import MIN_RATE

# How long a credential_process may take to print its answer (botocore waits for ever: a cron
# job hung with one stuck on a login). Generous: some open a browser for a single sign-on.
CREDENTIAL_PROCESS_TIMEOUT = 300.0
_CREDENTIALS_HINT = (
    "check the credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, "
    "or the profile chosen with --aws-profile"
)
CREDENTIALS_HINT = _CREDENTIALS_HINT  # obstore_s3's refusals of a refresh say it too
_PERMISSION_HINT = "the credentials work but are not allowed to do this on this bucket"
_EXPIRED_HINT = "the session token has expired: refresh it (e.g. aws sso login) and try again"
_REGION_HINT = "give the bucket's region with --region (or set it in the AWS profile)"
# A redirect: S3's for a bucket of another region, or a web front's (http:// to https://).
_REDIRECT_HINT = (
    f"{_REGION_HINT}; if --endpoint-url names a web front that redirects, give the URL S3 is "
    "served at"
)
_TRANSIENT_HINT = "S3 is busy or failing; run the command again later"
_NOT_S3_HINT = (
    "check that --endpoint-url names an S3 server: this one does not implement the request"
)
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
    # A web server that is not S3 (or lacks this request) at --endpoint-url: a backend that
    # cannot be used, not a bug of s3idx's.
    "NotImplemented": (BackendUnavailableError, _NOT_S3_HINT),
    "501": (BackendUnavailableError, _NOT_S3_HINT),
    "MethodNotAllowed": (BackendUnavailableError, _NOT_S3_HINT),
    "405": (BackendUnavailableError, _NOT_S3_HINT),
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
    "PermanentRedirect": (UsageError, _REDIRECT_HINT),
    "TemporaryRedirect": (UsageError, _REDIRECT_HINT),
    "Redirect": (UsageError, _REDIRECT_HINT),
    "301": (UsageError, _REDIRECT_HINT),
    "302": (UsageError, _REDIRECT_HINT),
    "307": (UsageError, _REDIRECT_HINT),
    "308": (UsageError, _REDIRECT_HINT),
}


class CredentialSourceError(CredentialRetrievalError):  # type: ignore[misc]
    """A credential_process or container credentials endpoint that failed or answered what no
    request can use, said without a word of what it said (``problem`` names keys and JSON
    types, never values). A CredentialRetrievalError, so botocore treats it as its own while
    refreshing."""

    fmt = "{source} {problem}"


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
# Providers whose CredentialRetrievalError quotes what their source said (a process's stderr,
# an endpoint's error body).
_QUOTING = frozenset({"custom-process", "container-role"})
# Settings of the AWS config files (or s3idx's) that botocore refuses before any request:
# the user's to fix, exit 2. Each is raised while the client is built, or (an endpoint that
# resolves to no usable URL) before a request is sent.
_CONFIGURATION_ERRORS = (
    InvalidS3AddressingStyleError,
    InvalidRetryConfigurationError,  # InvalidRetryModeError, InvalidMaxRetryAttemptsError
    InvalidDefaultsMode,
    InvalidChecksumConfigError,
    InvalidSTSRegionalEndpointsConfigError,
    InvalidS3UsEast1RegionalEndpointConfigError,
    InvalidEndpointDiscoveryConfigurationError,
    UnsupportedS3ConfigurationError,
)
_AWS_FILES_HINT = (
    "check ~/.aws/config and ~/.aws/credentials (or the files AWS_CONFIG_FILE and "
    "AWS_SHARED_CREDENTIALS_FILE name): a section is a [name] line, a setting name = value"
)
ENDPOINT_HINT = (
    "give an http:// or https:// URL with a host and a port from 1 to 65535, e.g. "
    "--endpoint-url http://localhost:9000 (or AWS_ENDPOINT_URL, or the profile's endpoint_url)"
)
_CREDENTIAL_PROCESS_HINT = (
    "if the AWS profile uses credential_process, the command must print one JSON object: "
    '{"Version": 1, "AccessKeyId": ..., "SecretAccessKey": ..., "SessionToken": ..., '
    '"Expiration": an ISO 8601 time}'
)
# Connection lost mid-way: worth retrying, unlike an endpoint that cannot be reached at all.
_INTERRUPTED_ERRORS = (
    ReadTimeoutError,
    ConnectionClosedError,
    ResponseStreamingError,
    IncompleteReadError,
)


def missing_field_error(
    endpoint: str | None, where: str, operation: str, field: str
) -> IncompleteAnswerError:
    """An answer without a field every S3 server sends (an ETag, a size, a listed key): not a
    crash, and not retried (the same server gives the same answer)."""
    named = redact_location(endpoint or "the S3 endpoint", vendor_text=True)
    return IncompleteAnswerError(
        f"S3 {operation} for {where} at {named} answered without its {field}, which every S3 "
        "server sends",
        hint="s3idx needs it to tell one version of an object from another: check that the "
        "endpoint is an S3 server, and that no proxy before it drops headers",
    )


def too_slow_error(
    endpoint: str | None, bucket: str, prefix: str, key: str, size: int, seconds: float
) -> TransientError:
    """A body that kept arriving, too slowly to end within its deadline (store/deadline.py):
    a timeout, retried as one."""
    named = redact_location(endpoint or "the S3 endpoint", vendor_text=True)
    where = s3_url(bucket, prefix, shorten_key(key))
    return TransientError(
        f"reading {where} from {named} timed out: its body ({size:,} bytes) was not all "
        f"received within {seconds:.3g} s (the timeout, plus its size at "
        f"{MIN_RATE // 1024} KiB/s)",
        hint=TIMEOUT_HINT,
        timed_out=True,
    )


def remember_credentials(session: Any) -> None:
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


def not_s3(code: str) -> bool:
    """The answer of a server that is not S3, or does not implement S3's requests."""
    return ERROR_TABLE.get(code, (None, None))[1] is _NOT_S3_HINT


def error_code(exc: ClientError) -> str:
    """The S3 error code; else (an answer whose body is no S3 error, such as a web front's
    HTML page) its HTTP status, as botocore gives for a HEAD."""
    code = exc.response.get("Error", {}).get("Code")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(code or status or "")


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
    ``timeouts`` (seconds to connect, to be answered) are named in a timeout's message.
    """
    where = s3_url(bucket, prefix, shorten_key(key) if key else key)
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
    configuration = _configuration_error(exc, where)
    if configuration is not None:
        return configuration
    if isinstance(exc, NoCredentialsError):
        return AccessDeniedError(f"no AWS credentials found for {where}", hint=_CREDENTIALS_HINT)
    if isinstance(exc, CredentialSourceError):
        return AccessDeniedError(
            f"AWS credentials for {s3_url(bucket, prefix, None)} cannot be loaded: "
            f"{redact(str(exc), vendor_text=True)}",
            hint=exc.kwargs.get("hint") or _CREDENTIAL_PROCESS_HINT,
        )
    if isinstance(exc, CredentialRetrievalError) and exc.kwargs.get("provider") in _QUOTING:
        # One check_credential_sources did not reach: botocore's text quotes the source.
        return AccessDeniedError(
            f"AWS credentials for {where} cannot be used: {exc.kwargs['provider']} failed; its "
            "answer is not shown, as it may hold secrets",
            hint=_CREDENTIALS_HINT,
        )
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return AccessDeniedError(
            f"AWS credentials for {where} cannot be used: {redact(str(exc), vendor_text=True)}",
            hint=_CREDENTIALS_HINT,
        )
    named = redact_location(endpoint or "the S3 endpoint", vendor_text=True)
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
        connect, read = (f"{t:g} s" for t in timeouts) if timeouts else ("time", "time")
        waited = (
            f"no connection within {connect}"
            if isinstance(exc, ConnectTimeoutError)
            else f"no answer within {read}"
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
        error = BackendUnavailableError(
            f"cannot reach S3 at {named} for {where}: {_reason(exc)}",
            hint="check --endpoint-url, the network, and that the server is running",
        )
        # No connection was made (refused, unresolvable): nothing was sent. Not so for the
        # other errors here (a TLS or HTTP error may come after the request was sent).
        return unreachable(error) if isinstance(exc, EndpointConnectionError) else error
    return S3idxError(f"S3 request for {where} failed: {redact(str(exc), vendor_text=True)}")


def _configuration_error(exc: BaseException, where: str) -> UsageError | None:
    """A usage error for settings botocore refused before sending anything; else None."""
    text = redact(str(exc), vendor_text=True)
    if isinstance(exc, ConfigParseError):
        # No request was made: the files that say how to make one cannot be read.
        return UsageError(
            f"cannot read the AWS config files for {where}: {text}", hint=_AWS_FILES_HINT
        )
    if isinstance(exc, InvalidRegionError):
        region = exc.kwargs.get("region_name", "?")
        return UsageError(
            f"invalid AWS region {region!r} for {where}",
            hint="give a region name such as us-east-1 with --region, or fix the region of the "
            "AWS profile",
        )
    if isinstance(exc, EndpointResolutionError):
        return UsageError(f"cannot use the S3 endpoint for {where}: {text}", hint=ENDPOINT_HINT)
    if isinstance(exc, _CONFIGURATION_ERRORS):
        return UsageError(f"invalid AWS setting for {where}: {text}", hint=_AWS_FILES_HINT)
    return None


def unloadable_credentials(exc: Exception, *, bucket: str, prefix: str = "") -> AccessDeniedError:
    """Credentials botocore failed to load with an error of Python's rather than its own. A
    credential_process is checked by ``_CheckedProcessProvider`` (``CredentialSourceError``);
    this is left for one ``check_credential_sources`` could not reach (botocore's internals
    changed) and any other provider failing so."""
    reason = "its credential_process names no program" if isinstance(exc, IndexError) else exc
    return AccessDeniedError(
        f"AWS credentials for {s3_url(bucket, prefix, None)} cannot be loaded: "
        f"{redact(str(reason), vendor_text=True)}",
        hint=_CREDENTIAL_PROCESS_HINT,
    )


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
    message = redact(str(error.get("Message") or ""), vendor_text=True) or "no message"
    location = _redirect_location(exc) if hint is _REDIRECT_HINT else None
    if location:
        message += f" (redirected to {redact_location(location, vendor_text=True)})"
    operation = exc.operation_name or "request"
    text = f"S3 {operation} on {where} failed: {code or 'unknown error'}: {message}"
    retries = exc.response.get("ResponseMetadata", {}).get("RetryAttempts")
    if cls is TransientError and retries:
        text += f" (after {retries} retries)"
    if cls is TransientError:
        return TransientError(text, hint=hint, throttled=code in _THROTTLING)
    if key is not None and code in OBJECT_DENIALS:
        return ObjectAccessDeniedError(text, hint=hint)
    return cls(text, hint=hint)


def _redirect_location(exc: ClientError) -> str | None:
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    location = headers.get("location")
    return str(location) if location else None


# Codes S3 answers for one object the credentials may not use (a bucket policy on its key, a
# KMS key they may not use), as for a bucket; wrong credentials have codes of their own.
OBJECT_DENIALS = frozenset({"AccessDenied", "Forbidden", "403"})

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
    # botocore's text names the request URL; only the redacted form is shown.
    return redact(str(exc), vendor_text=True)


def _aws_profiles() -> list[str]:
    """The profiles of the AWS config and credentials files (AWS_CONFIG_FILE and others)."""
    try:
        return sorted(botocore.session.Session().available_profiles)
    except Exception:  # a broken file: the profile error is what the user needs to see
        return []


# --- credential sources: their answers checked where botocore would fail later -------------
#
# botocore checks a credential_process's answer for its Version and two keys only, and a
# container credentials endpoint's not at all: a key missing there (KeyError), a value of
# another JSON type, or an Expiration without a time zone fails later, at the first request's
# signature, as a Python error (AttributeError, TypeError); an answer already expired as a
# RuntimeError. And a process that fails has its stderr quoted in botocore's error, an
# endpoint's error answer its body: text from the credential source, which may hold a secret of
# any shape (a password, a token shorter than the 40 characters of an AWS secret key, the
# authorization token sent) that no redaction can tell from other words. So s3idx checks their
# answers itself, saying what is wrong by key names and JSON types, and never quotes them.

_JSON_TYPES = (
    (bool, "a boolean"),
    (int, "a number"),
    (float, "a number"),
    (str, "a string"),
    (list, "an array"),
    (dict, "an object"),
    (type(None), "null"),
)


def _json_type(value: Any) -> str:
    return next(name for kind, name in _JSON_TYPES if isinstance(value, kind))


class _Refuse:
    """Builds the ``CredentialSourceError`` of one source: ``refuse(problem)``."""

    def __init__(self, provider: str, source: str, verb: str, hint: str) -> None:
        self.provider, self.source, self.verb, self.hint = provider, source, verb, hint

    def __call__(self, problem: str) -> CredentialSourceError:
        return CredentialSourceError(
            provider=self.provider,
            source=self.source,
            problem=problem,
            hint=self.hint,
            error_msg=problem,
        )


class _CheckedProcessProvider(ProcessProvider):  # type: ignore[misc]
    """botocore's ProcessProvider with every answer checked (the first and each refresh)."""

    aws_files: str = "~/.aws/config or ~/.aws/credentials"

    def _retrieve_credentials_using(self, credential_process: str) -> dict[str, Any]:
        profile = self._profile_name
        refuse = _Refuse(
            self.METHOD,
            f"the credential_process of AWS profile {profile!r}",
            "printed",
            f"run the credential_process line of AWS profile {profile!r} (in {self.aws_files}) "
            "by hand to see what it says; it must print one JSON object: "
            + _CREDENTIAL_PROCESS_HINT.split(": ", 1)[1],
        )
        command = compat_shell_split(credential_process)
        if not command:
            raise refuse("names no program")
        program = f"(program {command[0]!r})"
        try:
            # Not s3idx's stdin, a put's documents: a process reading it took them all. Its
            # stderr is never shown; a prompt there was never seen anyway.
            process = self._popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            stdout, _stderr = process.communicate(timeout=CREDENTIAL_PROCESS_TIMEOUT)
        except OSError as exc:
            raise refuse(f"{program} cannot be started: {exc.strerror or exc}") from None
        except subprocess.TimeoutExpired:
            _stop(process)
            raise refuse(
                f"{program} did not answer within {CREDENTIAL_PROCESS_TIMEOUT:g} s: it was stopped"
            ) from None
        if process.returncode != 0:
            raise refuse(
                f"{program} {_ended(process.returncode)}; what it wrote is not shown, "
                "as it may hold secrets"
            )
        if not stdout.strip():
            raise refuse("printed nothing")
        try:
            parsed = json.loads(stdout.decode("utf-8"))
        except UnicodeDecodeError:
            raise refuse("printed no UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise refuse(
                f"printed no JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            ) from None
        _check_answer(
            parsed, refuse, required=(), optional=("SessionToken", "Expiration"), versioned=True
        )
        return {
            "access_key": parsed["AccessKeyId"],
            "secret_key": parsed["SecretAccessKey"],
            "token": parsed.get("SessionToken"),
            "expiry_time": parsed.get("Expiration"),
            "account_id": self._get_account_id(parsed),
        }


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill a credential_process and close its pipes without reading them to their end: a
    program it started may hold them open. (It keeps s3idx's process group and terminal, so
    one that asks for an MFA code on the terminal still can.)"""
    process.kill()
    process.wait()
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


def _ended(returncode: int) -> str:
    if returncode > 0:
        return f"exited with status {returncode}"
    try:
        name = f" ({signal.Signals(-returncode).name})"
    except ValueError:
        name = ""
    return f"was killed by signal {-returncode}{name}"


def _check_answer(
    parsed: Any,
    refuse: _Refuse,
    *,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    versioned: bool = False,
) -> None:
    """Refuse an answer botocore cannot use: keys are named, values never shown. Every answer
    has two non-empty key strings, then ``required`` and ``optional`` strings, an Expiration a
    time with a zone, not passed; a ``versioned`` one (a credential_process's) "Version": 1.
    What botocore could use before is not refused (a Version of 1.0, any AccountId)."""
    verb = refuse.verb
    if not isinstance(parsed, dict):
        raise refuse(f"{verb} a JSON {_json_type(parsed).split()[-1]}, not an object")
    if versioned:
        version = parsed.get("Version")
        if "Version" not in parsed:
            raise refuse(f"{verb} no Version (it must be 1)")
        if version != 1 and type(version) is int:
            raise refuse(f"{verb} Version {version} (it must be 1)")
        if version != 1:
            raise refuse(f"{verb} Version as {_json_type(version)} (it must be 1)")
    for name in ("AccessKeyId", "SecretAccessKey", *required):
        if name not in parsed:
            raise refuse(f"{verb} no {name}")
    # AccountId is not checked: S3 requests never use it (any JSON value worked before).
    for name in ("AccessKeyId", "SecretAccessKey", *required, *optional):
        value = parsed.get(name)
        if name == "Expiration":
            if value is not None:
                _check_expiration(value, refuse)
        elif value is not None and not isinstance(value, str):
            raise refuse(f"{verb} {name} as {_json_type(value)}, not a string")
        elif name in ("AccessKeyId", "SecretAccessKey") and not value:
            raise refuse(f"{verb} an empty {name}")


def _check_expiration(expiration: Any, refuse: _Refuse) -> None:
    verb = refuse.verb
    if not isinstance(expiration, str):
        raise refuse(f"{verb} Expiration as {_json_type(expiration)}, not an ISO 8601 time")
    try:
        # botocore's own parsing of it, so what passes here is what botocore can use.
        when = RefreshableCredentials._expiry_datetime(expiration)
    except (ValueError, OverflowError, TypeError):
        raise refuse(f"{verb} an Expiration that is no ISO 8601 time") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise refuse(f"{verb} an Expiration without a time zone (add Z for UTC)")
    if when <= datetime.datetime.now(datetime.UTC):
        raise refuse(f"{verb} credentials that expired at {when.isoformat()}")


def _checked_container_fetcher(provider: Any) -> None:
    """Check what the container credentials endpoint answers before botocore reads it, and
    never quote an error answer's body."""
    fetcher = provider._fetcher
    retrieve = fetcher.retrieve_full_uri
    environ = getattr(provider, "_environ", {})
    variable = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
    if variable not in environ:
        variable = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
    refuse = _Refuse(
        provider.METHOD,
        f"the container credentials endpoint ({variable})",
        "answered",
        f"check {variable} and the credentials server it names",
    )

    def checked(full_url: str, headers: Any = None) -> Any:
        try:
            parsed = retrieve(full_url, headers=headers)
        except MetadataRetrievalError as exc:
            status = re.search(r"non 200 response (\d+)", str(exc))
            if status is None:
                raise
            raise refuse(
                f"answered HTTP {status[1]}; its answer is not shown, as it may hold secrets"
            ) from None
        _check_answer(parsed, refuse, required=("Token", "Expiration"), optional=())
        return parsed

    fetcher.retrieve_full_uri = checked


# Where a role's MFA code is asked for; never stdin (see _mfa_code_from_terminal).
TERMINAL = "/dev/tty"


def _mfa_code_from_terminal(profile: str, prompt: str) -> str:
    """A role's MFA code (its profile's mfa_serial), asked for on the terminal. botocore's
    getpass reads stdin when there is none (cron): a put's first document taken for the code.
    With no terminal to ask on, the role's credentials are refused instead."""
    try:
        with open(TERMINAL, "rb"):
            pass
    except OSError:
        problem = (
            "needs an MFA code (mfa_serial), and there is no terminal to ask for it on: s3idx "
            "does not read it from stdin"
        )
        raise CredentialSourceError(
            provider="assume-role",
            source=f"AWS profile {profile!r}",
            problem=problem,
            hint="run the command from a terminal, or give it credentials that need no MFA "
            "code (e.g. a session exported by `aws configure export-credentials` into AWS_* "
            "variables)",
            error_msg=problem,
        ) from None
    return getpass.getpass(prompt)


def check_credential_sources(session: Any) -> None:
    """Make the session's credential_process runs (its profile's, and a role's
    source_profile's, whose providers botocore builds when the role is assumed) and its
    container credentials endpoint ones whose answers are checked and whose failures quote
    nothing the source said. Raises what building the session's credential chain raises (a
    profile that does not exist, unreadable files)."""
    resolver = session.get_component("credential_provider")
    aws_files = " or ".join(
        str(session.get_config_variable(name) or default)
        for name, default in (
            ("config_file", "~/.aws/config"),
            ("credentials_file", "~/.aws/credentials"),
        )
    )

    def checked(provider: Any) -> Any:
        if type(provider) is ProcessProvider:
            provider.__class__ = _CheckedProcessProvider
            provider.aws_files = aws_files
        return provider

    for provider in getattr(resolver, "providers", ()):
        checked(provider)
        if type(provider) is AssumeRoleProvider and hasattr(provider, "_prompter"):
            profile = getattr(provider, "_profile_name", None) or "default"
            provider._prompter = partial(_mfa_code_from_terminal, profile)
        if type(provider) is ContainerProvider and hasattr(provider, "_fetcher"):
            _checked_container_fetcher(provider)
        builder: Any = getattr(provider, "_profile_provider_builder", None)
        make = getattr(builder, "_create_process_provider", None)
        if make is not None:
            builder._create_process_provider = lambda name, make=make: checked(make(name))
