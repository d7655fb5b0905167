"""pymongo's and bson's errors as s3idx errors: what each means for the user, said once.

The MongoDB index translates every error at its boundary through ``translate_error``; the
messages are not redacted here (the index does that, knowing its location's secrets).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bson.errors import BSONError
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    InvalidName,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from s3idx.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    InvalidFilterError,
    S3idxError,
    TransientError,
    UsageError,
)

AUTH_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed
ATLAS_ERROR = 8000  # Atlas proxies answer a bad login with this code and "bad auth ..."
DUPLICATE_KEY = 11000
# Failures of a query that are about the server's state, not about the filter.
SERVER_STATE_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        43,  # CursorNotFound
        50,  # MaxTimeMSExpired
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        175,  # QueryPlanKilled (e.g. the collection was renamed by a rebuild commit)
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        292,  # QueryExceededMemoryLimitNoDiskUseAllowed
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11601,  # Interrupted
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)


def translate_error(
    exc: BaseException, *, action: str, location: str, hosts: str, query: bool = False
) -> S3idxError:
    """The s3idx error for a pymongo/bson error met while doing ``action``.

    ``query`` says the operation evaluated a user's filter, so the server's complaints about it
    are the user's filter being wrong. Messages are not scrubbed here; the caller does that.
    """
    if isinstance(exc, ServerSelectionTimeoutError):
        return BackendUnavailableError(
            f"cannot reach MongoDB at {hosts}: {brief(exc)}",
            hint=f"while {action} {location}; is the server running, and are the host and "
            "port right?",
        )
    if isinstance(exc, AutoReconnect):
        return TransientError(
            f"lost the connection to MongoDB at {hosts} while {action}: {brief(exc)}"
        )
    if isinstance(exc, ConnectionFailure):
        return BackendUnavailableError(
            f"cannot use MongoDB at {hosts} while {action}: {brief(exc)}"
        )
    if isinstance(exc, ConfigurationError | InvalidName):
        return UsageError(f"invalid MongoDB location {location}: {brief(exc)}")
    if isinstance(exc, BulkWriteError):
        return S3idxError(
            f"MongoDB refused {len(write_errors(exc)) or 'some'} writes while {action} "
            f"{location}: {bulk_detail(exc)}"
        )
    if isinstance(exc, OperationFailure):
        return _translate_operation_failure(exc, action, location, hosts, query)
    if query and isinstance(exc, BSONError | OverflowError):
        return InvalidFilterError(f"the query cannot be sent to MongoDB: {exc}")
    return S3idxError(f"MongoDB error while {action} {location}: {brief(exc)}")


def _translate_operation_failure(
    exc: OperationFailure, action: str, location: str, hosts: str, query: bool
) -> S3idxError:
    message = _errmsg(exc)
    if exc.code in AUTH_CODES or (exc.code == ATLAS_ERROR and "auth" in message.lower()):
        return AccessDeniedError(
            f"MongoDB at {hosts} refused access while {action}: {message}",
            hint="check the user name, password and authSource in the URI, and the user's roles",
        )
    if query and exc.code not in SERVER_STATE_CODES:
        return InvalidFilterError(f"invalid query: {message}")
    code = f" (code {exc.code})" if exc.code is not None else ""
    return S3idxError(f"MongoDB error while {action} {location}: {message}{code}")


def _errmsg(exc: OperationFailure) -> str:
    details = exc.details if isinstance(exc.details, Mapping) else {}
    return str(details.get("errmsg") or brief(exc))


_CONFIGURED_TIMEOUTS = re.compile(r"\s*\(configured timeouts:[^)]*\)")


def brief(exc: BaseException) -> str:
    """pymongo's message without what it appends for debugging: the whole server reply
    (", full error: {...}"), the topology dump (", Timeout: ..., Topology Description: ...")
    and the configured timeouts."""
    text = str(exc).split(", full error:", 1)[0].split(", Timeout:", 1)[0]
    return _CONFIGURED_TIMEOUTS.sub("", text).strip() or type(exc).__name__


def write_errors(exc: BulkWriteError) -> list[Mapping[str, Any]]:
    details = exc.details if isinstance(exc.details, Mapping) else {}
    return list(details.get("writeErrors") or [])


def only_duplicate_keys(exc: BulkWriteError) -> bool:
    errors = write_errors(exc)
    return bool(errors) and all(e.get("code") == DUPLICATE_KEY for e in errors)


def bulk_detail(exc: BulkWriteError) -> str:
    """The first write error and the first write-concern error, if any."""
    details = exc.details if isinstance(exc.details, Mapping) else {}
    parts = []
    for name, label in (("writeErrors", "first"), ("writeConcernErrors", "write concern")):
        errors = details.get(name) or []
        if errors:
            parts.append(f"{label}: {errors[0].get('errmsg', '?')} (code {errors[0].get('code')})")
    return "; ".join(parts) or _errmsg(exc)
