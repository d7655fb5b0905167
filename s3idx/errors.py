"""Exit statuses and the exception hierarchy.

Every failure a user can cause or meet is an ``S3idxError`` carrying its exit status, so the CLI
maps exceptions to exit codes in one place. Backends translate vendor errors (botocore, pymongo,
sqlite3, OSError) into these at their boundary.
"""

from __future__ import annotations

import errno
import os
from enum import IntEnum


class ExitStatus(IntEnum):
    """Process exit codes; README's table is generated from the same list."""

    OK = 0
    ERROR = 1
    USAGE = 2
    PARTIAL = 3
    NOT_FOUND = 4
    UNAVAILABLE = 5
    ACCESS_DENIED = 6
    DRIFT = 7
    DAMAGED = 8
    HANGUP = 129
    INTERRUPTED = 130
    TERMINATED = 143


EXIT_STATUS_MEANINGS: dict[ExitStatus, str] = {
    ExitStatus.OK: "success",
    ExitStatus.ERROR: (
        "unexpected error: a bug, an unclassified backend failure, an output that could not be "
        "written (a full disk), or a system limit (threads, processes, memory)"
    ),
    ExitStatus.USAGE: "usage error: bad flag, filter, configuration or location",
    ExitStatus.PARTIAL: "partial failure: some records were rejected or some items failed",
    ExitStatus.NOT_FOUND: (
        "not found: a requested key, object, bucket, store or index does not exist"
    ),
    ExitStatus.UNAVAILABLE: "backend unavailable: S3, MongoDB or the SQLite file cannot be used",
    ExitStatus.ACCESS_DENIED: "access denied: credentials missing, wrong or not allowed",
    ExitStatus.DRIFT: "sync --check or verify found drift between index and store",
    ExitStatus.DAMAGED: (
        "damaged objects: a body does not match its recorded hash, codec or index entry"
    ),
    ExitStatus.HANGUP: "hung up: SIGHUP (the terminal or ssh session closed)",
    ExitStatus.INTERRUPTED: "interrupted by Ctrl-C (SIGINT)",
    ExitStatus.TERMINATED: "terminated by SIGTERM",
}


class S3idxError(Exception):
    """Base class: a failure with a message meant for the user and an exit status."""

    exit_status: ExitStatus = ExitStatus.ERROR
    # Whether this failure of a write proves the write changed nothing: the request was
    # refused before it was sent (no credentials, an endpoint that refuses connections) or
    # answered with a refusal (403, 404, 400). False where it may have taken effect: a 5xx,
    # a connection lost or a timeout after sending, anything unknown. ``call_with_retries``
    # sets it False on an error that follows a retried attempt (that one may have landed).
    changed_nothing: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # What an operation had done when this stopped it (e.g. a PutResult), for the summary.
        self.partial_result: object | None = None

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n{self.hint}"
        return self.message


class UsageError(S3idxError):
    """The command line, a filter, a location or the configuration is wrong."""

    exit_status = ExitStatus.USAGE
    changed_nothing = True  # refused before sending, or answered with a refusal (redirects)


class ConfigError(UsageError):
    """The configuration file or an environment setting is wrong."""


class InvalidFilterError(UsageError):
    """A query filter, projection or sort specification is not valid."""


class IndexSettingsError(UsageError):
    """The request disagrees with what the index was created with (e.g. its key field)."""


class RecordError(S3idxError):
    """One input record cannot be stored; the rest of the input goes on."""

    exit_status = ExitStatus.PARTIAL


def reject_reason(exc: S3idxError) -> str:
    """A record's reject on one line (``FILE:LINE: reason``): the message, then the hint."""
    return str(exc).replace("\n", "; ")


class InvalidKeyError(RecordError):
    """A document key cannot be used as an object key."""


class MetadataTooLargeError(RecordError):
    """The index entry does not fit into the 2 KB of object metadata."""


class NotFoundError(S3idxError):
    """A key, object, bucket or directory that was asked for does not exist."""

    exit_status = ExitStatus.NOT_FOUND
    changed_nothing = True  # answered 404 (no such bucket), or refused before sending


class ObjectNotFoundError(NotFoundError):
    """An object key does not exist in the store."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no such object: {shorten_key(key)}")
        self.key = key


class ObjectChangedError(S3idxError):
    """An object was replaced since it was read, so a conditional change was not made."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {quote_key(key)} changed since it was read; it was left as it is")
        self.key = key


class BackendUnavailableError(S3idxError):
    """A backend cannot be reached or used (connection refused, read-only file, disk full).

    ``not_reached`` says which of the two: a server that could not be reached, or did not
    answer (``info``'s status ``unreachable``), rather than a file or a server that was reached
    and cannot be used (``error``)."""

    exit_status = ExitStatus.UNAVAILABLE

    def __init__(self, message: str, *, hint: str | None = None, not_reached: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.not_reached = not_reached


def unreachable(error: BackendUnavailableError) -> BackendUnavailableError:
    """``error``, marked as a server that could not be reached at all (a connection refused,
    a host that does not resolve): no request was sent, so none changed anything."""
    error.changed_nothing = True
    error.not_reached = True
    return error


class TransientError(BackendUnavailableError):
    """A failure that may succeed when retried (throttling, 5xx, connection reset)."""

    changed_nothing = False

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        throttled: bool = False,
        timed_out: bool = False,
        not_reached: bool = True,
    ) -> None:
        # A server that keeps failing (timeouts, lost connections, 5xx, throttling) could not
        # be used from here: unreachable, unless the caller knows better (a locked file).
        super().__init__(message, hint=hint, not_reached=not_reached)
        # Throttling (SlowDown, 503) asks for less concurrency, not only a pause.
        self.throttled = throttled
        # No answer within the deadline: retried once only, so a silent server fails in a
        # bounded time (about two deadlines) instead of one deadline per attempt.
        self.timed_out = timed_out


class DamagedIndexError(BackendUnavailableError):
    """The index holds what s3idx did not write (a row or setting changed by hand, a table
    dropped): it cannot be used as it is. The bucket is the truth, so ``rebuild-index``
    rebuilds it; ``damaged_index`` words the message and says so."""


class DamagedStoreError(BackendUnavailableError):
    """A store whose own layout is damaged (a local store's ``objects/`` missing while its
    marker is there, or a file or a link): it cannot be used as it is, and must never be read
    as an empty store, which would take every index entry for one whose object is gone."""


class IncompleteAnswerError(BackendUnavailableError):
    """An S3 answer about one object without a field every S3 server sends (its ETag, its
    size): that object's failure, not retried, since the same server answers the same."""


class AccessDeniedError(S3idxError):
    """Credentials are missing, invalid or not allowed to do this."""

    exit_status = ExitStatus.ACCESS_DENIED
    changed_nothing = True  # none to sign with, or answered 403: the server refused it


class ObjectAccessDeniedError(AccessDeniedError):
    """The credentials may not do this to one object (a bucket policy on its key, a KMS key
    they may not use): commands that work on many objects name it and go on with the others.
    Wrong, expired or missing credentials are no object's: plain ``AccessDeniedError``."""


class NotAnS3idxObjectError(S3idxError):
    """An object lacks s3idx metadata (written by another tool)."""


class CorruptObjectError(S3idxError):
    """An object's metadata or body cannot be decoded."""


class UndecodableMetadataError(CorruptObjectError):
    """An object's metadata cannot be decoded, or names another key: no entry can come from it.

    ``sync`` and ``rebuild-index`` report such objects apart (``undecodable``), not as drift;
    ``verify`` reports them as damage; ``get`` as objects it cannot read.
    """


# What to do about objects whose metadata cannot be decoded, as every command says it.
UNDECODABLE_ADVICE = (
    "put their documents again from their source, or remove the objects; then run s3idx sync"
)


class DamagedObjectError(CorruptObjectError):
    """A body is not what its metadata recorded: hash, codec, length or document differ."""

    exit_status = ExitStatus.DAMAGED


class MissingDependencyError(UsageError):
    """An optional package this needs is not installed (e.g. msgpack for maggma's objects)."""


class StoreFormatError(UsageError):
    """A directory is not an s3idx store, or was written by a newer format."""


# --- messages shared by several layers -------------------------------------------------------

# '-' given to a process started with its stdin closed (`<&-`): `put -` and `--filter-file -`.
STDIN_CLOSED = "'-' reads stdin, which is closed"
STDIN_CLOSED_HINT = "pipe the input in (cat FILE | s3idx ...), or give a file name instead of '-'"

KEY_SHOWN_CHARS = 60


def quote_key(key: str) -> str:
    """A key as error messages show it: quoted, and shortened with its size when long."""
    if len(key) <= KEY_SHOWN_CHARS:
        return repr(key)
    size = len(key.encode("utf-8", "surrogatepass"))
    return f"{key[:KEY_SHOWN_CHARS]!r}… ({size} bytes)"


def shorten_key(key: str) -> str:
    """A key as messages print it bare (``not found: KEY``): shortened with its size when long."""
    if len(key) <= KEY_SHOWN_CHARS:
        return key
    size = len(key.encode("utf-8", "surrogatepass"))
    return f"{key[:KEY_SHOWN_CHARS]}… ({size} bytes)"


def store_not_found(location: str, detail: str) -> NotFoundError:
    return NotFoundError(
        f"no s3idx store at {location} ({detail})",
        hint="check --store; s3idx put creates a store",
    )


def index_not_found(location: str) -> NotFoundError:
    return NotFoundError(
        f"no s3idx index at {location} (nothing was ever put there)",
        hint="check --index; s3idx put creates an index, s3idx rebuild-index rebuilds one "
        "from the store",
    )


REBUILD_DAMAGED_HINT = (
    "the bucket is the truth: run s3idx rebuild-index (with the same --store and --index) to "
    "rebuild the index from it"
)


def damaged_index(
    location: str, what: str, *, hint: str = REBUILD_DAMAGED_HINT
) -> DamagedIndexError:
    """The index at ``location`` holds ``what``, which s3idx never writes."""
    return DamagedIndexError(f"index {location} is damaged: {what}", hint=hint)


MISSING_FILE_HINT = (
    "check the name and the directories above it (a relative path starts from the current "
    "directory)"
)
DENIED_FILE_HINT = (
    "check the permissions of the file and of the directories above it, "
    "or run s3idx as a user who may read it"
)


def unreadable_file_hint(exc: OSError, *, directory: str) -> str:
    """The hint of every refusal of a file s3idx reads (an input, a --filter-file): by why it
    could not be read; ``directory`` is the one for a directory given instead of a file."""
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return MISSING_FILE_HINT
    if isinstance(exc, IsADirectoryError):
        return directory
    if isinstance(exc, PermissionError):
        return DENIED_FILE_HINT
    return "check that the file can be read, e.g. with: head -c 100 FILE"


def missing_parent(what: str, location: str, parent: str) -> NotFoundError:
    return NotFoundError(
        f"the directory {parent} of {what} {location} does not exist",
        hint=f"check the location, or create the directory first: mkdir -p {parent}",
    )


class OutputError(S3idxError):
    """An output (stdout, ``--output``, ``--rejects``) that fails while written: a full disk, a
    lost device. Not the user's mistake and not a bug: said plainly, with the general status."""

    exit_status = ExitStatus.ERROR

    def __init__(self, output: str, exc: OSError) -> None:
        super().__init__(f"cannot write {output}: {exc.strerror or exc}")
        self.output = output


class SystemLimitError(S3idxError):
    """The system refused what a run needs: a thread, a process, memory. Not a bug and not the
    user's mistake as such: said plainly, with what to lower."""

    exit_status = ExitStatus.ERROR


_LIMIT_HINT = (
    "lower --workers or --processes, or raise the limit (ulimit -u or -v, a container's "
    "pids or memory limit)"
)


def system_limit(exc: BaseException) -> SystemLimitError | None:
    """``exc`` as a SystemLimitError when it says the system refused a thread, a process or
    memory; None for anything else (a bug stays a bug)."""
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return SystemLimitError(
            "cannot start a thread: the system refused it (a limit on threads, processes or "
            "memory)",
            hint=_LIMIT_HINT,
        )
    if isinstance(exc, MemoryError):
        return SystemLimitError("out of memory", hint=_LIMIT_HINT)
    if isinstance(exc, OSError) and exc.errno in (errno.EAGAIN, errno.ENOMEM):
        return SystemLimitError(
            f"the system refused a thread, process or memory: {exc.strerror or exc}",
            hint=_LIMIT_HINT,
        )
    return None


def cannot_write_output(flag: str, path: str, exc: OSError) -> UsageError:
    """An output file (--rejects, --output) that cannot be opened: the user's path is wrong."""
    parent = os.path.dirname(os.path.abspath(path))
    if isinstance(exc, FileNotFoundError) and not os.path.isdir(parent):
        reason = f"the directory {parent} does not exist"
    elif isinstance(exc, IsADirectoryError) or os.path.isdir(path):
        reason = "it is a directory"
    else:
        reason = exc.strerror or str(exc)
    return UsageError(f"cannot write {flag} {path}: {reason}")
