"""Streams in bounded pieces: batches of a stream, and ordered parallel maps with a window."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    pool: ThreadPoolExecutor, func: Callable[[T], R], items: Iterable[T], window: int
) -> Iterator[tuple[T, Future[R]]]:
    """Run ``func`` over ``items`` in ``pool``; yield each item with its finished future, in order.

    At most ``window`` calls run ahead of the consumer. Futures are yielded done, so the caller
    reads ``.result()`` (or ``.exception()``) without waiting on the rest.
    """
    pending: deque[tuple[T, Future[R]]] = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(func, item)))
            if len(pending) >= window:
                item0, future = pending.popleft()
                future.exception()  # wait without raising
                yield item0, future
        while pending:
            item0, future = pending.popleft()
            future.exception()
            yield item0, future
    finally:
        for _, future in pending:
            future.cancel()
