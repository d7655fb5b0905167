"""rebuild-index from manifests vs HEADing every object vs maggma's rebuild (not a test).

    python tests/bench/bench_rebuild.py --docs 20000 --maggma-docs 300
    python tests/bench/bench_rebuild.py --rss 1000000     # local store: peak RSS, 1M objects

On moto (a subprocess): ``s3idx put`` of DOCS documents (one manifest per 1,000), then
``rebuild-index`` three ways: from put's manifests, again from the compacted manifests the first
run left, and with ``--no-manifests`` (a HEAD per object); then maggma's
``rebuild_index_from_s3_data`` over MAGGMA_DOCS objects maggma wrote (it GETs and re-PUTs each,
so it runs on fewer). Requests: s3idx's own count (``requests`` in ``--json``); maggma's counted
by tests/s3proxy.py in front of moto. Client CPU is user + system time of the client process.

``--rss N``: N documents put into a local store, then the peak RSS of ``rebuild-index`` from
put's manifests and from the compacted ones (and of ``--no-manifests`` with ``--rss-heads``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_put import (  # noqa: E402
    AWS_ENV,
    BUCKET,
    boto3_client,
    create_buckets,
    maggma_store,
    measure_here,
    moto_endpoint,
    s3idx,
    write_documents,
)


def run_json(argv: Sequence[str], env: dict[str, str], work: Path) -> dict[str, Any]:
    """Run one s3idx command with --json; its document plus wall s, CPU s, peak RSS MB."""
    out = work / "out.json"
    started = time.perf_counter()
    with out.open("wb") as fh:
        process = subprocess.Popen([*argv, "--json"], env=env, cwd=ROOT, stdout=fh)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 3):
        raise SystemExit(f"{' '.join(argv)}: exit {code}")
    data: dict[str, Any] = orjson.loads(out.read_bytes())
    data["_wall"], data["_cpu"] = wall, usage.ru_utime + usage.ru_stime
    data["_rss_mb"] = usage.ru_maxrss / 1024
    return data


def row(name: str, count: int, wall: float, cpu: float, requests: int | str, note: str = "") -> str:
    return (
        f"| {name} | {count:,} | {count / wall:,.0f} | {requests:,} | "
        f"{1000 * cpu / count:.2f} | {note} |"
        if isinstance(requests, int)
        else f"| {name} | {count:,} | {count / wall:,.0f} | {requests} | "
        f"{1000 * cpu / count:.2f} | {note} |"
    )


def bench_moto(docs: int, maggma_docs: int, workers: int, work: Path, env: dict[str, str]) -> None:
    with moto_endpoint() as url:
        create_buckets(boto3_client(url, workers))
        source = work / "docs.jsonl"
        write_documents(source, docs)
        where = ["--store", f"s3://{BUCKET}/m", "--endpoint-url", url]
        put = run_json(
            s3idx(
                "put",
                str(source),
                *where,
                "--index",
                str(work / "put.sqlite3"),
                "--field",
                "task_id",
                "-q",
            ),
            env,
            work,
        )
        print(f"put: {put['stored']} stored in {put['_wall']:.1f} s")
        rows = [
            "| rebuild | objects | objects/s | requests | client CPU ms/object | note |",
            "|---|---|---|---|---|---|",
        ]
        for name, extra in (
            ("s3idx rebuild-index (put's manifests)", []),
            ("s3idx rebuild-index (compacted manifests)", []),
            ("s3idx rebuild-index --no-manifests", ["--no-manifests"]),
        ):
            index = work / f"rebuild-{time.monotonic_ns()}.sqlite3"
            argv = s3idx(
                "rebuild-index",
                *where,
                "--index",
                str(index),
                "--workers",
                str(workers),
                "-q",
                *extra,
            )
            data = run_json(argv, env, work)
            note = (
                f"{data['from_manifests']:,} from {data['manifests_read']} manifests, "
                f"{data['heads']:,} HEADs"
            )
            rows.append(
                row(name, data["listed"], data["_wall"], data["_cpu"], data["requests"], note)
            )
            print(rows[-1], flush=True)
        if maggma_docs:
            rows.append(bench_maggma(url, maggma_docs, workers))
        print("\n".join(rows))


def bench_maggma(url: str, count: int, workers: int) -> str:
    from tests.s3proxy import S3Proxy

    store = maggma_store(url, workers)
    store.connect()
    store.update(
        [{"fs_id": f"m-{i:06d}", "task_id": f"mp-{i}", "x": "y" * 1500} for i in range(count)]
    )
    store.close()
    with S3Proxy(url) as proxy:
        store = maggma_store(proxy.url, workers)
        store.connect()
        wall, cpu = measure_here(store.rebuild_index_from_s3_data)
        store.close()
    return row(
        "maggma rebuild_index_from_s3_data",
        count,
        wall,
        cpu,
        sum(proxy.requests.values()),
        "GET + re-PUT of each object (via a counting proxy)",
    )


def bench_rss(count: int, heads: bool, work: Path, env: dict[str, str]) -> None:
    source = work / "rss.jsonl"
    write_documents(source, count)
    store = work / "rss-store"
    where = ["--store", str(store)]
    started = time.perf_counter()
    put = run_json(
        s3idx(
            "put",
            str(source),
            *where,
            "--index",
            str(work / "rss-put.sqlite3"),
            "--field",
            "task_id",
            "-q",
        ),
        env,
        work,
    )
    source.unlink()
    print(
        f"put: {put['stored']:,} stored in {time.perf_counter() - started:.0f} s, "
        f"peak RSS {put['_rss_mb']:.0f} MB",
        flush=True,
    )
    runs = [("(first run)", []), ("(second run: compacted manifests)", [])]
    if heads:
        runs.append(("--no-manifests", ["--no-manifests"]))
    for name, extra in runs:
        index = work / f"rss-{time.monotonic_ns()}.sqlite3"
        data = run_json(
            s3idx("rebuild-index", *where, "--index", str(index), "-q", *extra), env, work
        )
        print(
            f"rebuild-index {name}: {data['listed']:,} objects in {data['_wall']:.0f} s "
            f"({data['listed'] / data['_wall']:,.0f}/s), {data['from_manifests']:,} from "
            f"{data['manifests_read']} manifests, {data['heads']:,} HEADs, peak RSS "
            f"{data['_rss_mb']:.0f} MB, CPU {1000 * data['_cpu'] / data['listed']:.3f} ms/object",
            flush=True,
        )
        index.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--maggma-docs", type=int, default=300)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rss", type=int, default=0, help="objects for the RSS run (local)")
    parser.add_argument("--rss-heads", action="store_true", help="also --no-manifests (slow)")
    parser.add_argument("--work", help="work directory (default: a temporary one)")
    args = parser.parse_args()
    os.environ.update(AWS_ENV)  # for the in-process boto3 and maggma clients too
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        env["S3IDX_HOME"] = str(work / "home")
        if args.rss:
            bench_rss(args.rss, args.rss_heads, work, env)
        else:
            bench_moto(args.docs, args.maggma_docs, args.workers, work, env)


if __name__ == "__main__":
    main()
