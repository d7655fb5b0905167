"""put's uploads on an event loop in the main thread (the http transport), with the interface of
put's worker threads: ``submit``, ``outcomes.take``, ``shutdown``.

The loop only runs while the main thread asks for outcomes (``take``), which it does at every
submit and whenever it waits: requests need no attention between those moments, since each is
sent whole at submit when the socket takes it, and an answer waits in the socket until read.

An upload the loop could not finish is judged as the boto3 transport judges its own: the store
turns the loop's failure into the error boto3 would have raised (``loop_error``), and the
engine's retry policy applies to it here, on the loop, so a silent or failing endpoint costs
what it costs the boto3 transport (retries, backoff, deadlines, exit statuses) and never
blocks the main thread one upload after another:

- a transient error (throttling, 5xx, a lost connection, a timeout) is sent again on the loop
  after a backoff pause, counted as a retry, until the policy gives up; throttling halves the
  requests in flight as the worker threads' shared limit does;
- any other error (a missing bucket, credentials refused, an unreachable endpoint) is final:
  the run fails with it at once, and uploads not sent yet are cancelled;
- after a timeout and until the server answers again, only retries are sent, so a server that
  went silent is found by the uploads already in flight, once, not by each upload in turn;
- what the loop cannot judge (a missing bucket ``--create-bucket`` makes, a signature the
  server refused, which may be the loop's own fault) is sent by the store's ``put`` (boto3),
  as is a body of the multipart threshold or more (``HttpUploader.max_body``).
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

from s3idx.engine.put import Cancelled
from s3idx.engine.retry import ConcurrencyLimit, RetryCounter, RetryPolicy, gave_up
from s3idx.errors import RecordError, S3idxError, TransientError
from s3idx.store.base import PutReceipt
from s3idx.store.http_put import Done, Failed, HttpUploader

# At most this long between looks at the sockets while the main thread is busy submitting.
POLL_SECONDS = 0.002
_RNG = random.Random()  # the backoff's jitter

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class Retrier(Protocol):
    policy: RetryPolicy
    counter: RetryCounter

    def put(self, key: str, body: bytes, metadata: Mapping[str, str]) -> PutReceipt: ...

    def loop_error(self, key: str, failed: Failed) -> S3idxError | None: ...


class _Upload(Generic[Item]):
    __slots__ = ("attempt", "body", "item", "key", "metadata", "started")

    def __init__(self, item: Item, key: str, body: bytes, metadata: Mapping[str, str]) -> None:
        self.item = item
        self.key = key
        self.body = body
        self.metadata = metadata
        self.attempt = 0  # attempts made before the one to come
        self.started = False  # taken up: sent, or waiting to be sent again


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
        self._fresh: deque[_Upload[Item]] = deque()  # submitted, not sent yet
        self._retries: list[tuple[float, int, _Upload[Item]]] = []  # heap: (due, order, upload)
        self._order = itertools.count()
        # Requests on the sockets; fewer while the server throttles. Its own, not the store's
        # shared limit: the main thread holding places it waits for from other threads
        # (reconcile's HEADs) would deadlock.
        self._limit = ConcurrencyLimit(uploader.connections)
        # Uploads taken up and not finished, at most one per connection: one waiting to be
        # sent again keeps its place, as a worker thread sleeping before a retry does.
        self._active = 0
        self._quiet = False  # a request timed out and nothing was answered since
        self._failed = False  # an upload failed for good: the run is stopping
        self.outcomes = self

    def submit(self, item: Item) -> None:
        try:
            key, body, metadata = self._encode(item)
        except BaseException as exc:  # handed on, as a worker thread's failure would be
            self._ready.append(self._finish(item, None, exc))
            return
        upload = _Upload(item, key, body, metadata)
        if self._failed:
            self._ready.append(self._finish(item, None, Cancelled()))
            return
        limit = self._uploader.max_body
        if limit is not None and len(body) >= limit:
            # A multipart upload (one PUT stops at 5 GB): the store's, on this thread. Such
            # bodies are rare. The requests in flight are answered first: while this thread
            # uploads, nobody reads their sockets, and their silence would look like timeouts.
            self._settle_in_flight()
            self._put_through_store(upload)
            return
        self._fresh.append(upload)
        self._send_due()

    def take(self, wait_for: int) -> list[Outcome]:
        """Every outcome there, after driving the loop until there are at least ``wait_for``.

        With ``wait_for`` 0 (the main thread asks in passing, at each submit), the sockets are
        looked at only when an upload waits to be sent or POLL_SECONDS passed: answers are
        then read in batches, one selector call for many.
        """
        if (
            wait_for > len(self._ready)
            or self._fresh
            or self._retries
            or time.monotonic() - self._polled >= POLL_SECONDS
        ):
            self._drive(wait_for)
            self._polled = time.monotonic()
        taken, self._ready = self._ready, []
        return taken

    def shutdown(self) -> None:
        """Finish every upload submitted (their outcomes wait for ``take``), then close."""
        try:
            while self._outstanding():
                self._drive(len(self._ready) + self._outstanding())
        finally:
            self._failed = True  # what close() hands back is not sent again
            self._cancel_unsent()
            for answer in self._uploader.close():
                self._taken(answer)

    # --- the loop ------------------------------------------------------------------------------

    def _outstanding(self) -> int:
        return self._uploader.in_flight + len(self._fresh) + len(self._retries)

    def _drive(self, wait_for: int) -> None:
        """Send what is due and read answers until ``wait_for`` outcomes are ready (0: only
        what is ready now) or nothing more can come."""
        uploader = self._uploader
        while True:
            self._send_due()
            short = wait_for - len(self._ready)
            if short <= 0 or not self._outstanding():
                for answer in uploader.run(0):
                    self._taken(answer)
                return
            pause = self._until_next_retry()
            for answer in uploader.run(min(short, uploader.in_flight), timeout=pause):
                self._taken(answer)

    def _settle_in_flight(self) -> None:
        """Read the answers of every request on the sockets (sending nothing new)."""
        uploader = self._uploader
        while uploader.in_flight:
            for answer in uploader.run(uploader.in_flight):
                self._taken(answer)

    def _until_next_retry(self) -> float | None:
        if not self._retries:
            return None
        return max(0.0, self._retries[0][0] - time.monotonic())

    def _send_due(self) -> None:
        retries, limit = self._retries, self._limit
        if retries:
            now = time.monotonic()
            while retries and retries[0][0] <= now and limit.try_acquire():
                self._start(heapq.heappop(retries)[2])
        if self._quiet and not retries and not self._uploader.in_flight:
            self._quiet = False  # nothing left to hear from: let the others go
        fresh, connections = self._fresh, self._uploader.connections
        while fresh and not self._quiet and self._active < connections and limit.try_acquire():
            upload = fresh.popleft()
            upload.started = True
            self._active += 1
            self._start(upload)

    def _start(self, upload: _Upload[Item]) -> None:
        try:
            self._uploader.start(upload, upload.key, upload.body, upload.metadata)
        except RecordError as exc:  # this document's own fault (metadata too large)
            self._limit.release()
            self._done(upload, None, exc)
        except Exception:  # e.g. credentials that failed to refresh: boto3 says it properly
            self._limit.release()
            self._put_through_store(upload)

    def _taken(self, answer: Done | Failed) -> None:
        upload: _Upload[Item] = answer.tag
        if isinstance(answer, Done):
            self._limit.release()
            self._quiet = False
            self._done(upload, PutReceipt(answer.etag, len(upload.body)), None)
            return
        if answer.status:
            self._quiet = False  # the server speaks
        error = self._store.loop_error(upload.key, answer)
        self._limit.release(throttled=isinstance(error, TransientError) and error.throttled)
        if error is None:
            self._put_through_store(upload)
        elif isinstance(error, TransientError) and not self._failed:
            self._retry(upload, error)
        else:
            self._done(upload, None, error)

    def _retry(self, upload: _Upload[Item], error: TransientError) -> None:
        policy = self._store.policy
        attempts = policy.attempts_for(error)
        if upload.attempt + 1 >= attempts:
            self._done(upload, None, gave_up(error, attempts))
            return
        self._store.counter.add()
        due = time.monotonic() + policy.delay(upload.attempt, _RNG)
        upload.attempt += 1
        heapq.heappush(self._retries, (due, next(self._order), upload))
        if error.timed_out:
            self._quiet = True

    def _put_through_store(self, upload: _Upload[Item]) -> None:
        if self._failed:
            self._done(upload, None, Cancelled())
            return
        try:
            receipt = self._store.put(upload.key, upload.body, upload.metadata)
        except BaseException as exc:  # the main thread decides, as for a worker's failure
            self._done(upload, None, exc)
            return
        self._done(upload, receipt, None)

    def _done(
        self, upload: _Upload[Item], receipt: PutReceipt | None, error: BaseException | None
    ) -> None:
        if upload.started:
            upload.started = False
            self._active -= 1
        if upload.attempt and isinstance(error, S3idxError):
            # An earlier attempt failed in a way that may have taken effect.
            error.changed_nothing = False
        self._ready.append(self._finish(upload.item, receipt, error))
        if error is not None and not isinstance(error, RecordError | Cancelled):
            # The run fails with this error (the pipeline's fatal): what is not sent yet is
            # not sent, and what is in flight is not retried.
            self._failed = True
            self._cancel_unsent()

    def _cancel_unsent(self) -> None:
        unsent = list(self._fresh) + [upload for _, _, upload in sorted(self._retries)]
        self._fresh.clear()
        self._retries.clear()
        for upload in unsent:
            self._ready.append(self._finish(upload.item, None, Cancelled()))
