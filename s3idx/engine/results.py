"""What engine operations report: events while they run, results when they end."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from s3idx.errors import S3idxError


@dataclass(frozen=True, slots=True)
class Reject:
    """An input record that was not stored."""

    location: str  # FILE:LINE
    reason: str
    raw: bytes


@dataclass(slots=True)
class PutResult:
    read: int = 0
    stored: int = 0
    unchanged: int = 0
    rejected: int = 0
    duplicates: int = 0
    bytes_stored: int = 0
    elapsed: float = 0.0
    dry_run: bool = False
    stopped_early: bool = False  # --max-errors reached
    interrupted: bool = False
    not_indexed: int = 0  # stored objects whose entries could not be written (sync adopts them)
    # Keys whose entry another writer changed during the upload: indexed from the bucket's
    # object instead (engine/reconcile.py); not_indexed counts those it could not settle.
    reconciled: int = 0
    retries: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"command": "put", **asdict(self), "docs_per_second": self.rate}

    @property
    def rate(self) -> float:
        return round(self.stored / self.elapsed, 1) if self.elapsed > 0 else 0.0


@dataclass(slots=True)
class GetResult:
    found: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)  # body not what was recorded

    def as_dict(self) -> dict[str, Any]:
        return {"command": "get", **asdict(self)}


@dataclass(slots=True)
class DeleteResult:
    deleted: int = 0
    entries_deleted: int = 0
    missing: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    dry_run: bool = False
    would_delete: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    # Left alone: rewritten by another writer while being deleted (the newer document stands).
    rewritten: int = 0
    # Deleted by finishing deletes an interrupted earlier run left in the index's journal.
    finished: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = [{"key": k, "reason": r} for k, r in self.failed]
        return {"command": "delete", **data}


class Events:
    """Callbacks an operation makes while it runs; the default does nothing.

    The CLI overrides these to draw progress and report rejects; the engine never prints.
    """

    def rejected(self, reject: Reject) -> None:
        """An input record was not stored."""

    def progress(
        self,
        done: int,
        total: int | None,
        detail: dict[str, int],
        *,
        input_fraction: float | None = None,
    ) -> None:
        """Work advanced: ``done`` of ``total`` units of what the operation counts.

        put, get and delete count documents, rebuild-index and sync objects; ``total`` is None
        when unknown. ``detail`` holds secondary counts (stored, rejected, ...). put also gives
        ``input_fraction``: its estimate of the share of the input read and finished, when the
        input's size is known.
        """

    def skipped(self, key: str, reason: str) -> None:
        """An object gave no index entry (not an s3idx object, or undecodable metadata)."""

    def drift(self, kind: str, key: str) -> None:
        """sync found a difference: ``bucket-only``, ``index-only``, ``changed``, or
        ``interrupted-delete`` (a delete journaled the key and did not finish)."""

    def damaged(self, key: str, reason: str) -> None:
        """verify found an object that is not what its metadata or index entry says."""


@contextlib.contextmanager
def reported_on_failure(result: Any, started: float) -> Iterator[None]:
    """An S3idxError leaving the block carries ``result``, its elapsed time set, so the summary
    still says what the operation had done (``cli._summary_on_failure``)."""
    try:
        yield
    except S3idxError as exc:
        result.elapsed = time.monotonic() - started
        exc.partial_result = result
        raise
