"""Retries: backoff with jitter, a bounded number of attempts, concurrency that backs off."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3idx.engine.retry import (
    ConcurrencyLimit,
    RetryCounter,
    RetryingStore,
    RetryPolicy,
    call_with_retries,
)
from s3idx.errors import AccessDeniedError, TransientError
from s3idx.store.base import DeleteFailure, ObjectHead, ObjectInfo
from s3idx.store.local import LocalStore


def _flaky(failures: int, *, throttled: bool = False) -> tuple[list[int], object]:
    calls: list[int] = []

    def func() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise TransientError("503 SlowDown", throttled=throttled)
        return "ok"

    return calls, func


def test_transient_failures_are_retried_and_counted() -> None:
    calls, func = _flaky(3)
    counter = RetryCounter()
    sleeps: list[float] = []

    assert (
        call_with_retries(func, policy=RetryPolicy(), counter=counter, sleep=sleeps.append) == "ok"
    )

    assert len(calls) == 4
    assert counter.count == 3
    assert len(sleeps) == 3


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    policy = RetryPolicy(attempts=10, base=0.1, cap=1.0)
    rng = random.Random(7)
    for retry, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)]:
        delays = [policy.delay(retry, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spreads over the whole range


def test_gives_up_after_the_policy_attempts() -> None:
    calls, func = _flaky(100)
    with pytest.raises(TransientError) as excinfo:
        call_with_retries(func, policy=RetryPolicy(attempts=4), sleep=lambda _: None)
    assert len(calls) == 4
    assert str(excinfo.value) == "503 SlowDown (gave up after 4 attempts)"


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    def denied() -> None:
        calls.append(1)
        raise AccessDeniedError("no")

    with pytest.raises(AccessDeniedError):
        call_with_retries(denied, policy=RetryPolicy(), sleep=lambda _: None)
    assert calls == [1]


def test_throttling_halves_the_concurrency_limit_and_success_regrows_it() -> None:
    limit = ConcurrencyLimit(16)
    _, func = _flaky(2, throttled=True)
    call_with_retries(func, policy=RetryPolicy(), limit=limit, sleep=lambda _: None)
    assert limit.limit == 4  # halved twice, then one success adds 1/4

    for _ in range(40):
        limit.acquire()
        limit.release()
    assert limit.limit == 9  # +1/limit per success: about one more per window of successes


def test_concurrency_limit_bounds_requests_in_flight() -> None:
    limit = ConcurrencyLimit(3)
    active, peak = 0, 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal active, peak
        limit.acquire()
        with lock:
            active += 1
            peak = max(peak, active)
        threading.Event().wait(0.01)
        with lock:
            active -= 1
        limit.release()

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3


class _FlakyListing(LocalStore):
    """Fails once in the middle of a listing, like a dropped connection between pages."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failed = False

    def list_objects(
        self, prefix: str = "", *, start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        for n, info in enumerate(super().list_objects(prefix, start_after=start_after)):
            if n == 3 and not self.failed:
                self.failed = True
                raise TransientError("connection reset")
            yield info


def test_listing_resumes_after_the_last_key_it_yielded(tmp_path: Path) -> None:
    inner = _FlakyListing(tmp_path)
    for i in range(10):
        inner.put(f"k{i}", b"x", {})
    store = RetryingStore(inner, policy=RetryPolicy(base=0.001))

    assert [o.key for o in store.list_objects()] == [f"k{i}" for i in range(10)]
    assert store.retries == 1


class _FailsFirstHead(LocalStore):
    """Its first HEAD reaches the store and then fails, like an answer lost on the way back."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failed = False

    def head(self, key: str) -> ObjectHead:
        head = super().head(key)
        if not self.failed:
            self.failed = True
            raise TransientError("connection reset")
        return head


def test_a_retried_call_counts_each_attempt_as_a_request(tmp_path: Path) -> None:
    inner = _FailsFirstHead(tmp_path)
    inner.put("k", b"x", {})
    store = RetryingStore(inner, policy=RetryPolicy(base=0.001))
    before = store.requests.value

    assert store.head("k").key == "k"

    assert store.requests is inner.requests
    assert store.requests.value - before == 2
    assert store.retries == 1


class _DeleteAnswersLost(LocalStore):
    """Its first delete removes "lost" (and reports it) but answers "lost" as failed in a way
    worth retrying, as a request whose answer was lost on the way back; "whole" goes with a
    first call that fails as a whole after removing it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls = 0

    def delete(self, keys: Any, **options: Any) -> list[DeleteFailure]:
        self.calls += 1
        if self.calls > 1:
            return super().delete(keys, **options)
        super().delete([k for k in keys if k != "lost"], **options)
        super().delete(["lost"])  # its report lost with its answer
        if "whole" in keys:
            raise TransientError("connection reset")
        return [DeleteFailure("lost", "connection reset", transient=True)]


@pytest.mark.parametrize("keys", [["lost", "kept"], ["lost", "whole", "kept"]])
def test_a_retried_delete_reports_a_key_its_lost_attempt_removed_as_removed(
    tmp_path: Path, keys: list[str]
) -> None:
    inner = _DeleteAnswersLost(tmp_path)
    etags = {k: inner.put(k, b"x", {}).etag for k in [*keys, "other"]}
    store = RetryingStore(inner, policy=RetryPolicy(base=0.001))
    heard: list[tuple[str, bool]] = []

    failures = store.delete(
        [*keys, "never"],
        if_match={**etags, "never": "0"},
        done=lambda key, removed: heard.append((key, removed)),
    )

    assert failures == []
    # Each key once; a key an attempt that failed may have removed counts as removed.
    assert sorted(heard) == sorted([*((k, True) for k in keys), ("never", False)])
    assert [o.key for o in inner.list_objects()] == ["other"]
