"""put's uploads on an event loop in the main thread (the http transport), with the interface of
put's worker threads: ``submit``, ``outcomes.take``, ``shutdown``.

The loop only runs while the main thread asks for outcomes (``take``), which it does at every
submit and whenever it waits: requests need no attention between those moments, since each is
sent whole at submit when the socket takes it, and an answer waits in the socket until read.

An upload the loop could not finish (an error answer, a lost connection, a timeout) is sent
again through the store's ``put_again`` (boto3, with the engine's retries and error
translation): the loop handles only what succeeds, so every failure reads the same as on the
boto3 transport.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

from s3idx.errors import RecordError
from s3idx.store.base import PutReceipt
from s3idx.store.http_put import Done, Failed, HttpUploader

# At most this long between looks at the sockets while the main thread is busy submitting.
POLL_SECONDS = 0.002

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class Retrier(Protocol):
    def put_again(self, key: str, body: bytes, metadata: Mapping[str, str]) -> PutReceipt: ...


class LoopUploads(Generic[Item, Outcome]):
    """Uploads ``encode(item)`` of each item submitted; ``finish`` turns what happened into
    the outcome ``outcomes.take`` returns (it is called with a receipt or an error)."""

    def __init__(
        self,
        uploader: HttpUploader,
        store: Retrier,
        encode: Callable[[Item], tuple[str, bytes, Mapping[str, str]]],
        finish: Callable[[Item, PutReceipt | None, BaseException | None], Outcome],
    ) -> None:
        self._uploader = uploader
        self._store = store
        self._encode = encode
        self._finish = finish
        self._ready: list[Outcome] = []
        self._polled = 0.0
        self.outcomes = self

    def submit(self, item: Item) -> None:
        try:
            key, body, metadata = self._encode(item)
        except BaseException as exc:  # handed on, as a worker thread's failure would be
            self._ready.append(self._finish(item, None, exc))
            return
        try:
            self._uploader.start((item, key, body, metadata), key, body, metadata)
        except RecordError as exc:  # this document's own fault (metadata too large)
            self._ready.append(self._finish(item, None, exc))
        except Exception:  # e.g. credentials that failed to refresh: boto3 says it properly
            self._put_again(item, key, body, metadata)

    def take(self, wait_for: int) -> list[Outcome]:
        """Every outcome there, after driving the loop until there are at least ``wait_for``.

        With ``wait_for`` 0 (the main thread asks in passing, at each submit), the sockets are
        looked at only when a PUT waits for a connection or POLL_SECONDS passed: answers are
        then read in batches, one selector call for many.
        """
        need = max(0, wait_for - len(self._ready))
        uploader = self._uploader
        if need or uploader.queued or time.monotonic() - self._polled >= POLL_SECONDS:
            for answer in uploader.run(need):
                self._taken(answer)
            self._polled = time.monotonic()
        taken, self._ready = self._ready, []
        return taken

    def _taken(self, answer: Done | Failed) -> None:
        item, key, body, metadata = answer.tag
        if isinstance(answer, Done):
            self._ready.append(self._finish(item, PutReceipt(answer.etag, len(body)), None))
        else:
            self._put_again(item, key, body, metadata)

    def _put_again(self, item: Item, key: str, body: bytes, metadata: Mapping[str, str]) -> None:
        try:
            receipt = self._store.put_again(key, body, metadata)
        except BaseException as exc:  # the main thread decides, as for a worker's failure
            self._ready.append(self._finish(item, None, exc))
            return
        self._ready.append(self._finish(item, receipt, None))

    def shutdown(self) -> None:
        """Finish every upload started (their outcomes wait for ``take``), then close."""
        try:
            while self._uploader.in_flight:
                for answer in self._uploader.run(self._uploader.in_flight):
                    self._taken(answer)
        finally:
            for answer in self._uploader.close():
                self._taken(answer)
