"""S3idxStore.update against maggma's S3Store.update on one S3 endpoint, in one run (not a test).

    python tests/bench/bench_maggma_store.py                      # moto, 2000 documents
    python tests/bench/bench_maggma_store.py --endpoint nginx --docs 20000
    python tests/bench/bench_maggma_store.py --endpoint http://127.0.0.1:9000  # e.g. MinIO

Both stores get the same ~2 KB documents (bench_put.document, keyed by ``task_id``, with the same
searchable fields and a ``last_updated`` datetime) in batches of ``--batch`` (a MapBuilder's
chunk), with the same number of S3 workers; maggma's index is its usual MemoryStore, s3idx's a
SQLite file. Figures: documents/s and client CPU ms per document (user + system time of this
process; the endpoint runs in another). Compare ratios, not figures between runs.
"""

from __future__ import annotations

import argparse
import copy
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_put import AWS_ENV, document, endpoint  # noqa: E402

SEARCHABLE = ["meta", "elements", "energy"]


def documents(count: int) -> list[dict[str, Any]]:
    rng = random.Random(1)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    docs = []
    for n in range(count):
        doc = document(n, rng)
        doc["task_id"] = doc.pop("fs_id")  # unique: maggma's key names the object
        doc["last_updated"] = start + timedelta(seconds=n)
        docs.append(doc)
    return docs


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(update: Callable[[list[dict[str, Any]]], Any], docs: list[dict[str, Any]], batch: int):
    batches = [copy.deepcopy(docs[i : i + batch]) for i in range(0, len(docs), batch)]
    started, cpu_started = time.perf_counter(), cpu()
    for chunk in batches:
        update(chunk)
    return time.perf_counter() - started, cpu() - cpu_started


def maggma_store(url: str, bucket: str, workers: int) -> Any:
    import boto3
    from maggma.stores import MemoryStore, S3Store

    boto3.client("s3", endpoint_url=url).create_bucket(Bucket=bucket)
    return S3Store(
        index=MemoryStore("bench-index", key="task_id"),
        bucket=bucket,
        s3_profile=None,
        endpoint_url=url,
        compress=True,
        s3_workers=workers,
        key="task_id",
        searchable_fields=SEARCHABLE,
    )


def s3idx_store(url: str, bucket: str, workers: int, index: Path, transport: str) -> Any:
    from s3idx.maggma import S3idxStore

    return S3idxStore(
        store=f"s3://{bucket}/docs",
        index=str(index),
        key="task_id",
        searchable_fields=SEARCHABLE,
        endpoint_url=url,
        s3_workers=workers,
        transport=transport,
        create_bucket=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", default="moto", help="moto, nginx, or an S3 service's URL")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1000, help="documents per update call")
    parser.add_argument("--workers", type=int, default=8, help="S3 workers of both stores")
    args = parser.parse_args()
    import os

    os.environ.update(AWS_ENV)
    docs = documents(args.docs)
    transports = ["boto3"]
    try:
        import obstore  # noqa: F401

        transports.append("obstore")
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as work, endpoint(args.endpoint, Path(work)) as url:
        rows: list[tuple[str, float, float]] = []
        theirs = maggma_store(url, "bench-maggma", args.workers)
        theirs.connect()
        wall, used = timed(theirs.update, docs, args.batch)
        theirs.close()
        rows.append(("maggma S3Store.update (compress=True)", wall, used))
        for transport in transports:
            ours = s3idx_store(
                url,
                f"bench-s3idx-{transport}",
                args.workers,
                Path(work) / f"{transport}.db",
                transport,
            )
            with ours:
                wall, used = timed(ours.update, docs, args.batch)
                assert ours.count() == len(docs)
            rows.append((f"S3idxStore.update (zlib, {transport})", wall, used))
    base = rows[0][1]
    print(
        f"{args.docs} documents of ~2 KB, batches of {args.batch}, {args.workers} S3 workers, "
        f"endpoint {args.endpoint}"
    )
    print(f"{'client':44} {'docs/s':>8} {'CPU ms/doc':>11} {'speed vs maggma':>16}")
    for name, wall, used in rows:
        print(
            f"{name:44} {args.docs / wall:8.0f} {used / args.docs * 1000:11.2f} "
            f"{base / wall:15.2f}x"
        )


if __name__ == "__main__":
    main()
