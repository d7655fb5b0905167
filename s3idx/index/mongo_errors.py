"""pymongo's and bson's errors as s3idx errors: what each means for the user, said once.

The MongoDB index translates every error at its boundary through ``translate_error``; the
messages are not redacted here (the index does that, knowing its location's secrets).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
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

from s3idx.config import hidden_option
from s3idx.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    InvalidFilterError,
    S3idxError,
    TransientError,
    UsageError,
)

AUTH_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed
# The server refused a database or collection name that s3idx's own checks (MongoDB's rules)
# let through: another server's stricter rules (FerretDB takes database names of
# [A-Za-z0-9_-] only).
INVALID_NAMESPACE = 73
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
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11601,  # Interrupted
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
    }
)
# Not about the filter either, but the same query would fail again: not a server state.
MEMORY_LIMIT = 292  # QueryExceededMemoryLimitNoDiskUseAllowed


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
            not_reached=True,
        )
    if isinstance(exc, AutoReconnect):
        return TransientError(
            f"lost the connection to MongoDB at {hosts} while {action} {location}: {brief(exc)}"
        )
    if isinstance(exc, ConnectionFailure):
        return BackendUnavailableError(
            f"cannot use MongoDB at {hosts} while {action} {location}: {brief(exc)}",
            not_reached=True,
        )
    if isinstance(exc, ConfigurationError) and dns_failure(exc):
        return BackendUnavailableError(
            f"cannot look up MongoDB at {hosts}: {brief(exc)}",
            hint=f"while {action} {location}; is DNS working, and is the host name right?",
            not_reached=True,
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
            f"MongoDB at {hosts} refused access while {action} {location}: {message}",
            hint="check the user name, password and authSource in the URI, and the user's roles",
        )
    if exc.code == INVALID_NAMESPACE:
        return UsageError(
            f"MongoDB at {hosts} refused the name of {location}: {message}",
            hint="choose another database name in the URI or another --collection",
        )
    code = f" (code {exc.code})" if exc.code is not None else ""
    if exc.code in SERVER_STATE_CODES:
        # A server shutting down or restarted, a cursor it lost, a time limit: the index cannot
        # be used now, as when the connection is lost (exit 5); running again can succeed.
        return TransientError(f"MongoDB could not finish {action} {location}: {message}{code}")
    if query and exc.code != MEMORY_LIMIT:
        return InvalidFilterError(f"invalid query: {message}")
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


def dns_failure(exc: BaseException) -> bool:
    """pymongo's ConfigurationError for a mongodb+srv:// lookup that DNS could not answer (no
    such name, no answer, no server, timed out): a failure to reach, as an unresolvable host of
    mongodb:// is, not a mistake in the location."""
    try:
        from dns.exception import DNSException
    except ImportError:  # no dnspython: no SRV lookup was made
        return False
    cause = exc.__cause__
    return isinstance(cause, DNSException) or (
        isinstance(exc, ConfigurationError)
        and any(text in str(exc).lower() for text in ("timed out", "resolution lifetime expired"))
    )


# --- URI options: pymongo warns about a bad one and ignores it; s3idx refuses it ------------

OPTIONS_HINT = (
    "fix or remove the option in the URI; the options are listed at "
    "https://www.mongodb.com/docs/manual/reference/connection-string-options/"
)


def check_uri_options(uri: str, location: str, secrets: Sequence[str]) -> None:
    """Raise a UsageError naming the first URI option pymongo would warn about and ignore (an
    unknown option, ``tls=maybe``, ``serverSelectionTimeoutMS=abc``) or refuse.

    pymongo's MongoClient only warns about an invalid option value and goes on without it
    (``tls=maybe`` connects without TLS): a silent fallback s3idx does not make. The options are
    split as pymongo splits them (after the first '?'); no DNS lookup is made.
    """
    query = uri.partition("://")[2].partition("?")[2]
    if not query:
        return
    problem = _options_problem(query)
    if problem is None:
        return
    # Which option: the first that fails alone; none when only their combination does.
    pairs = [p for p in re.split(r"[&;]", query) if p]
    named = next(((p, why) for p in pairs if (why := _options_problem(p)) is not None), None)
    if named is None:
        raise UsageError(f"invalid MongoDB location {location}: {problem}", hint=OPTIONS_HINT)
    name = named[0].partition("=")[0]
    reason = named[1]
    # The value of an option whose value is never shown (config.hidden_option): pymongo's
    # message may quote a piece of it.
    if hidden_option(name) and not reason.startswith("unknown option"):
        reason = "its value is not valid (not shown: it may hold a secret)"
    # pymongo leaves an unknown name unnamed, as it may be a piece of an unescaped password.
    shown = repr(name) if not any(name in secret for secret in secrets) else "(not shown)"
    raise UsageError(
        f"invalid MongoDB location {location}: URI option {shown}: {reason}", hint=OPTIONS_HINT
    )


def _options_problem(query: str) -> str | None:
    """Why pymongo would refuse, or warn about, the options ``query``; None when it takes them."""
    from pymongo.uri_parser import split_options

    # record=True swaps the warning filters for the few microseconds of one parse.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            split_options(query, validate=True, warn=False)
        except (ConfigurationError, ValueError, TypeError, OSError) as exc:
            if isinstance(exc, ConfigurationError) and str(exc).startswith("Unknown option"):
                close = re.search(r"Did you mean one of \(([^)]*)\)", str(exc))
                return f"unknown option; did you mean {close[1]}?" if close else "unknown option"
            return brief(exc)
    return str(caught[0].message) if caught else None
