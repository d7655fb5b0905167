"""Performance sanity for SqliteIndex: fill N entries, then time lookups (not a test).

    python tests/bench/bench_sqlite_index.py [--entries 1000000] [--path FILE]

Targets at 1M entries: a lookup by key under 5 ms, by an indexed field under 20 ms (median).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from s3idx.index.sqlite import SqliteIndex

KEY = "fs_id"
FIELDS = ["n", "task", "tags", "meta.kind", "last_updated"]
BATCH = 1000
START = datetime(2024, 1, 1, tzinfo=UTC)


def entries(count: int) -> Iterator[list[dict[str, Any]]]:
    rng = random.Random(1)
    batch = []
    for n in range(count):
        batch.append(
            {
                KEY: f"doc-{n:08d}",
                "n": n,
                "task": f"task-{n % 10_000}",
                "tags": [f"t{rng.randrange(50)}" for _ in range(3)],
                "meta": {"kind": rng.choice(["a", "b", "c", "d"]), "score": rng.random()},
                "last_updated": START + timedelta(seconds=n),
                "_s3idx": {"etag": f"{n:032x}", "size": 2000, "sha256": None, "codec": "json+zlib"},
            }
        )
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def median_ms(action: Callable[[int], Any], rounds: int) -> float:
    timings = []
    for i in range(rounds):
        started = time.perf_counter()
        action(i)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--path", type=Path)
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()
    path = args.path or Path(tempfile.mkdtemp()) / "bench.sqlite3"
    count = args.entries

    index = SqliteIndex(path)
    if index.settings() is None or index.count() != count:
        index.configure(KEY, FIELDS)
        started = time.perf_counter()
        for batch in entries(count):
            index.upsert(batch)
        elapsed = time.perf_counter() - started
        print(f"filled {count:,} entries in {elapsed:.1f} s ({count / elapsed:,.0f} entries/s)")
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    print(f"file: {path} ({size / 2**20:,.0f} MiB with WAL)")

    rng = random.Random(2)
    picks = [rng.randrange(count) for _ in range(args.rounds)]

    def by_key(i: int) -> None:
        assert len(list(index.find({KEY: f"doc-{picks[i]:08d}"}))) == 1

    def by_unique_field(i: int) -> None:
        assert len(list(index.find({"n": picks[i]}))) == 1

    def by_field_100_hits(i: int) -> None:
        assert len(list(index.find({"task": f"task-{picks[i] % 10_000}"}))) == count // 10_000

    def by_array_element_limit(i: int) -> None:
        assert len(list(index.find({"tags": f"t{picks[i] % 50}"}, limit=20))) == 20

    def by_range_count(i: int) -> None:
        low = picks[i]
        index.count({"n": {"$gte": low, "$lt": low + 1000}})

    def bookkeeping_100(i: int) -> None:
        index.bookkeeping([f"doc-{(picks[i] + k) % count:08d}" for k in range(100)])

    print(f"median of {args.rounds} lookups:")
    for label, action in [
        ("find by key", by_key),
        ("find by indexed field (1 hit)", by_unique_field),
        ("find by indexed field (100 hits)", by_field_100_hits),
        ("find by array element, limit 20", by_array_element_limit),
        ("count of an indexed range (1000)", by_range_count),
        ("bookkeeping of 100 keys", bookkeeping_100),
    ]:
        print(f"  {label:34} {median_ms(action, args.rounds):8.3f} ms")
    index.close()


if __name__ == "__main__":
    main()
