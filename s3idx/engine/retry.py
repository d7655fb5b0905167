"""Retries with exponential backoff and full jitter, and concurrency that backs off when throttled.

Backends raise ``TransientError`` for failures worth retrying (throttling, 5xx, connection resets,
timeouts); everything else fails at once. One policy for every backend and every command, so the
summary can count retries and the limits are the same everywhere.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Generic, TypeVar

from s3idx.config import DEFAULT_WORKERS
from s3idx.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    IncompleteAnswerError,
    ObjectAccessDeniedError,
    S3idxError,
    TransientError,
    quote_key,
)
from s3idx.frozen import Frozen, init_field
from s3idx.limits import FAILED_IN_A_ROW
from s3idx.store.base import (
    DeleteDone,
    DeleteFailure,
    ObjectBody,
    ObjectHead,
    ObjectInfo,
    ObjectStore,
    PutReceipt,
    StillWanted,
)

if TYPE_CHECKING:
    from s3idx.errors import S3idxError
    from s3idx.store.http_put import Failed, HttpUploader

T = TypeVar("T")


class RetryPolicy(Frozen):
    """``attempts`` tries in all; sleeps are uniform in [0, min(cap, base * 2**n)]."""

    __slots__ = ("attempts", "base", "cap", "timeout_attempts")
    _fields = ("attempts", "base", "cap", "timeout_attempts")
    attempts: int
    base: float
    cap: float
    timeout_attempts: int  # of a request that got no answer within its deadline

    def __init__(
        self, attempts: int = 8, base: float = 0.1, cap: float = 20.0, timeout_attempts: int = 2
    ) -> None:
        init_field(self, "attempts", attempts)
        init_field(self, "base", base)
        init_field(self, "cap", cap)
        init_field(self, "timeout_attempts", timeout_attempts)

    def attempts_for(self, error: TransientError) -> int:
        return min(self.attempts, self.timeout_attempts) if error.timed_out else self.attempts

    def delay(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap, self.base * (2**retry)))


class RetryCounter:
    """Retries made so far, shared by worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def add(self) -> None:
        with self._lock:
            self.count += 1


class ConcurrencyLimit:
    """At most ``limit`` requests at once; halved on throttling, regrown by one per success run.

    Additive increase, multiplicative decrease (as TCP does): a throttled service sees the load
    drop at once, and the limit climbs back while requests succeed.

    Every request passes here twice, so the common case is kept cheap (put's CPU per document
    is measured in tens of µs): while nothing was throttled (the limit is at its maximum) and
    nobody waits, an acquire or a release is one uncontended lock and a counter, with no
    wake-up and no arithmetic on the limit.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._limit = float(maximum)
        self._active = 0
        self._waiting = 0
        self._cond = threading.Condition(threading.Lock())

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    def acquire(self) -> None:
        with self._cond:
            if self._active < self.maximum and self._limit >= self.maximum:
                self._active += 1  # the fast path: not throttled, a place free
                return
            self._waiting += 1
            try:
                while self._active >= self.limit:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._active += 1

    def try_acquire(self) -> bool:
        """A place if one is free now, without waiting (for an event loop, which cannot)."""
        with self._cond:
            if self._active >= self.limit:
                return False
            self._active += 1
            return True

    def release(self, *, throttled: bool = False) -> None:
        with self._cond:
            self._active -= 1
            if throttled:
                self._limit = max(1.0, self._limit / 2)
            elif self._limit < self.maximum:
                self._limit = min(float(self.maximum), self._limit + 1.0 / self._limit)
            if self._waiting:
                # Only a waiter needs waking, and at most one place has opened.
                self._cond.notify()


# One generator for the jitter: seeding one per call costs more than the call it protects.
_RNG = random.Random()


def call_with_retries(
    func: Callable[[], T],
    *,
    policy: RetryPolicy,
    counter: RetryCounter | None = None,
    limit: ConcurrencyLimit | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Call ``func``; on TransientError sleep with jitter and try again, up to the policy."""
    rng = rng or _RNG
    for retry in range(policy.attempts):
        if limit is not None:
            limit.acquire()
        throttled = False
        try:
            return func()
        except TransientError as exc:
            throttled = exc.throttled
            attempts = policy.attempts_for(exc)
            if retry + 1 >= attempts:
                raise gave_up(exc, attempts) from None
        except S3idxError as exc:
            if retry:
                # An earlier attempt failed in a way that may have taken effect.
                exc.changed_nothing = False
            raise
        finally:
            if limit is not None:
                limit.release(throttled=throttled)
        if counter is not None:
            counter.add()
        sleep(policy.delay(retry, rng))
    raise AssertionError("unreachable")  # pragma: no cover


def _gave_up_deleting(failure: DeleteFailure, attempts: int) -> DeleteFailure:
    return DeleteFailure(
        failure.key,
        f"{failure.reason} (gave up after {attempts} attempts)",
        transient=True,
        timed_out=failure.timed_out,
        hint=failure.hint,
    )


def gave_up(exc: TransientError, attempts: int) -> TransientError:
    """The error reported for a request that failed ``attempts`` times in all."""
    return TransientError(
        f"{exc.message} (gave up after {attempts} attempts)",
        hint=exc.hint,
        timed_out=exc.timed_out,
    )


# What fails one object alone, so that a command working on many (get, query --full, verify,
# reindex, sync, delete) names it and goes on with the others: requests the store kept failing
# after every retry, a denial of this object only (a bucket policy on its key, a KMS key), and
# an answer about it without its ETag or size.
OBJECT_FAILURES = (TransientError, ObjectAccessDeniedError, IncompleteAnswerError)
ObjectFailure = TransientError | ObjectAccessDeniedError | IncompleteAnswerError


class FailedInARow(Generic[T]):
    """Items of objects that failed alone (``OBJECT_FAILURES``), held while they come one after
    another: a run that ends (an object that worked) is handed back to report one by one; one
    that reaches ``limit`` is the store failing every request, or access denied to every
    object, raised as one error instead."""

    def __init__(self, doing: str, limit: int = FAILED_IN_A_ROW) -> None:
        self._doing = doing  # "read": "N objects in a row could not be read"
        self._limit = limit
        self._first: str | None = None
        self._held: list[T] = []
        self._all_denied = True

    def add(self, key: str, item: T, error: S3idxError) -> None:
        if self._first is None:
            self._first = key
        self._held.append(item)
        self._all_denied = self._all_denied and isinstance(error, AccessDeniedError)
        if len(self._held) < self._limit:
            return
        stopped = (
            f"{len(self._held)} objects in a row could not be {self._doing} (from "
            f"{quote_key(self._first)} on), so the "
        )
        if self._all_denied:
            raise AccessDeniedError(
                f"{stopped}access to every object is denied; stopped. The last: {error.message}",
                hint=error.hint,
            ) from None
        raise BackendUnavailableError(
            f"{stopped}store is failing every request; stopped. The last: {error.message}",
            hint=error.hint or "check the store and the network; run the command again later",
        ) from None

    def release(self) -> list[T]:
        held, self._held, self._first, self._all_denied = self._held, [], None, True
        return held


class RetryingStore:
    """An ObjectStore whose calls are retried under one policy and one concurrency limit."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        policy: RetryPolicy | None = None,
        max_concurrency: int = DEFAULT_WORKERS,
    ) -> None:
        self.inner = store
        self.location = store.location
        # What an index records as the store it describes (stores of s3idx's own say); None:
        # a store that does not say, whose index is bound to none.
        self.identity: str | None = getattr(store, "identity", None)
        # The inner store's own count: each attempt of a retried call is a request sent.
        self.requests = store.requests
        self.policy = policy or RetryPolicy()
        self.counter = RetryCounter()
        self.limit = ConcurrencyLimit(max_concurrency)

    @property
    def retries(self) -> int:
        return self.counter.count

    def _call(self, func: Callable[[], T]) -> T:
        return call_with_retries(func, policy=self.policy, counter=self.counter, limit=self.limit)

    def check_key(self, key: str) -> None:
        self.inner.check_key(key)

    def check_exists(self) -> None:
        """The inner store's check that it exists (a local directory, an S3 bucket), retried."""
        check = getattr(self.inner, "check_exists", None)
        if check is not None:
            self._call(check)

    def confirm_writable(self) -> None:
        """The inner store's check, after a put that stored nothing, that its uploads would
        have found where to go (an S3 bucket: not missing), retried."""
        confirm = getattr(self.inner, "confirm_writable", None)
        if confirm is not None:
            self._call(confirm)

    def prepare_writes(self) -> None:
        """The inner store's preparation for a put, retried: a local store creates its
        directory, S3 checks (or with --create-bucket creates) its bucket."""
        prepare = getattr(self.inner, "prepare_writes", None)
        if prepare is not None:
            self._call(prepare)

    def check_writes(self) -> None:
        """The inner store's checks of ``prepare_writes``, creating nothing (a dry run),
        retried."""
        check = getattr(self.inner, "check_writes", None)
        if check is not None:
            self._call(check)

    def put(
        self, key: str, body: bytes, metadata: Mapping[str, str], *, if_match: str | None = None
    ) -> PutReceipt:
        # A conditional put retried after its first attempt landed (its answer lost) is
        # refused, the ETag being its own now: ObjectChangedError, and the caller reads the key
        # again (engine/collector.py), finding its own write.
        if if_match is None:
            return self._call(lambda: self.inner.put(key, body, metadata))
        return self._call(lambda: self.inner.put(key, body, metadata, if_match=if_match))

    @property
    def conditional_puts_supported(self) -> bool:
        """False when the store compares an ETag and writes in two steps (see S3Store)."""
        return bool(getattr(self.inner, "conditional_puts_supported", True))

    def stored_size(self, body: bytes, metadata: Mapping[str, str]) -> int:
        """What a put of this (encoded) body takes in the store, as its receipt would say: the
        body, and whatever the inner store keeps beside it in the object (a LocalStore header)."""
        size = getattr(self.inner, "stored_size", None)
        return len(body) if size is None else int(size(body, metadata))

    def event_loop_uploader(self, connections: int) -> HttpUploader | None:
        """The inner store's uploader of many objects from one thread, if it has one."""
        make = getattr(self.inner, "event_loop_uploader", None)
        return None if make is None else make(connections)

    def loop_error(self, key: str, failed: Failed) -> S3idxError | None:
        """The inner store's judgement of an event-loop upload that failed: the error its own
        put would have raised, or None when a ``put`` should send it instead."""
        return self.inner.loop_error(key, failed)  # type: ignore[attr-defined,no-any-return]

    def head(self, key: str) -> ObjectHead:
        return self._call(lambda: self.inner.head(key))

    def open(self, key: str) -> ObjectBody:
        return self._call(lambda: self.inner.open(key))

    def read(self, key: str, consume: Callable[[ObjectBody], T]) -> T:
        """``consume(body)`` of one object, retried as a whole: a body whose reading fails
        restarts from its first byte, so a consumer never sees half of one."""

        def attempt() -> T:
            body = self.inner.open(key)
            try:
                return consume(body)
            finally:
                close = getattr(body.chunks, "close", None)
                if close is not None:
                    close()

        return self._call(attempt)

    def delete(
        self,
        keys: Sequence[str],
        *,
        if_match: Mapping[str, str] | None = None,
        done: DeleteDone | None = None,
        still_wanted: StillWanted | None = None,
    ) -> list[DeleteFailure]:
        # Safe to retry: a conditional delete that did land finds the key missing next time
        # (not a failure), and one that did not still compares the ETag.
        # A key whose own request failed transiently (``transient``) is retried alone, so one
        # failing key neither resends the others' deletes nor hides what became of them; when
        # its attempts run out (``timeout_attempts`` for one that got no answer, as for every
        # request) it is a failure like any other, its reason saying so.
        failures: list[DeleteFailure] = []
        pending = list(keys)
        tried: dict[str, int] = {}

        # Each key reported once: missing on a retry, after an attempt that failed (the key's
        # own, or the whole call's) may have removed it with its answer lost, it is reported
        # as removed by this call, never as nobody's.
        uncertain: set[str] = set()
        heard: set[str] = set()
        lock = threading.Lock()

        def reported(key: str, removed: bool) -> None:
            with lock:
                if key in heard:
                    return
                heard.add(key)
                removed = removed or key in tried or key in uncertain
            if done is not None:
                done(key, removed)

        def attempt(keys: list[str]) -> list[DeleteFailure]:
            try:
                return self.inner.delete(
                    keys, if_match=if_match, done=reported, still_wanted=still_wanted
                )
            except BaseException:
                with lock:
                    uncertain.update(keys)
                raise

        for retry in range(self.policy.attempts):
            outcome = self._call(partial(attempt, pending))
            failures.extend(f for f in outcome if not f.transient)
            again: list[str] = []
            for failure in (f for f in outcome if f.transient):
                tried[failure.key] = tried.get(failure.key, 0) + 1
                allowed = (
                    self.policy.timeout_attempts if failure.timed_out else self.policy.attempts
                )
                if tried[failure.key] < min(allowed, self.policy.attempts):
                    again.append(failure.key)
                else:
                    failures.append(_gave_up_deleting(failure, tried[failure.key]))
            if not again:
                break
            self.counter.add()
            time.sleep(self.policy.delay(retry, _RNG))
            pending = again
        return failures

    @property
    def conditional_deletes_supported(self) -> bool:
        """False when the store compares an ETag and deletes in two steps (see S3Store)."""
        return bool(getattr(self.inner, "conditional_deletes_supported", True))

    def replace_metadata(
        self, key: str, metadata: Mapping[str, str], *, if_match: str
    ) -> PutReceipt:
        # Safe to retry: a first attempt that did land changed the ETag or left it equal,
        # and either way the retry finds the metadata it wanted or refuses a changed object.
        return self._call(lambda: self.inner.replace_metadata(key, metadata, if_match=if_match))

    def list_objects(
        self, prefix: str = "", *, start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        """Listing retried page by page: a failure resumes after the last key yielded."""
        last = start_after
        attempt = 0
        rng = random.Random()
        while True:
            try:
                for info in self.inner.list_objects(prefix, start_after=last):
                    last = info.key
                    attempt = 0
                    yield info
                return
            except TransientError as exc:
                attempt += 1
                attempts = self.policy.attempts_for(exc)
                if attempt >= attempts:
                    raise gave_up(exc, attempts) from None
                self.counter.add()
                time.sleep(self.policy.delay(attempt - 1, rng))

    def close(self) -> None:
        self.inner.close()
