"""What an engine operation reports while it runs: ``Events``, which the CLI overrides.

Apart from the result types (``results.py``, which imports these from here), so that the
command line and a query, which build no result, do not build them (start-up, issue 17).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from s3idx.engine.results import Reject

REPORTED_KEYS_LIMIT = 10_000  # keys kept for --json; counts are always exact


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
        ``interrupted-delete`` (a delete journaled the key and did not finish), or
        ``interrupted-put`` (a put journaled the key's entry and did not write it)."""

    def damaged(self, key: str, reason: str) -> None:
        """verify found an object that is not what its metadata or index entry says."""

    def warned(self, message: str) -> None:
        """Something went wrong that costs no data and does not stop the run (a manifest
        that could not be written); the result's counts say whether it still mattered."""
