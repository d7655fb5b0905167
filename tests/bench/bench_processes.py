"""``put --processes 1`` against ``--processes N`` on the nginx null endpoint (not a test).

    python tests/bench/bench_processes.py --docs 40000 --rounds 3 --processes 1,2

nginx answers every request 200 with an ETag and stores nothing (see bench_put.py), so the
figures measure s3idx's own cost. The machines are shared: the runs of each setting are
interleaved (1, 2, 1, 2, ...) and the median of each is reported, with the ratio of medians.

nginx runs on the same cores, so it is measured too (its CPU per document): with s3idx's and
nginx's CPU per document, C cores can do at most C / (s3idx + nginx) documents a second, the
ceiling printed beside each setting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_put as bench


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", default="1,2", help="comma-separated settings to compare")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--transport", default="obstore")
    args = parser.parse_args()
    settings = [int(p) for p in args.processes.split(",")]
    env = {**os.environ, **bench.AWS_ENV}
    os.environ.update(bench.AWS_ENV)
    walls: dict[int, list[float]] = {p: [] for p in settings}
    cpus: dict[int, list[float]] = {p: [] for p in settings}
    nginx_cpus: dict[int, list[float]] = {p: [] for p in settings}
    with tempfile.TemporaryDirectory(prefix="s3idx-bench-processes-") as tmp:
        work = Path(tmp)
        source = work / "docs.jsonl"
        bench.write_documents(source, args.docs)
        with bench.nginx_endpoint(work) as url:
            bench.create_buckets(bench.boto3_client(url, args.workers))
            for round_ in range(args.rounds):
                for processes in settings:
                    index = work / f"p{processes}-{round_}.sqlite3"
                    argv = bench.s3idx(
                        "put",
                        str(source),
                        *bench.location_args(url, f"p{processes}", index, args.transport),
                        *(arg for f in bench.FIELDS for arg in ("--field", f)),
                        "--workers",
                        str(args.workers),
                        "--processes",
                        str(processes),
                        "-q",
                    )
                    nginx_before = bench.nginx_cpu_seconds(work)
                    wall, cpu, _, status = bench.measure_process(argv, env)
                    if status != 0:
                        sys.exit(f"--processes {processes} exited {status}")
                    nginx = bench.nginx_cpu_seconds(work) - nginx_before
                    walls[processes].append(wall)
                    cpus[processes].append(cpu)
                    nginx_cpus[processes].append(nginx)
                    print(
                        f"round {round_ + 1} --processes {processes}: "
                        f"{args.docs / wall:,.0f} docs/s, {wall:.2f} s, "
                        f"CPU {1000 * cpu / args.docs:.3f} ms/doc, "
                        f"nginx {1000 * nginx / args.docs:.3f} ms/doc",
                        flush=True,
                    )
    cores = os.cpu_count() or 1
    print(f"\n{args.docs:,} docs, {args.transport}, {args.workers} workers, nginx null endpoint")
    base = statistics.median(walls[settings[0]])
    for processes in settings:
        wall = statistics.median(walls[processes])
        cpu = statistics.median(cpus[processes]) / args.docs
        nginx = statistics.median(nginx_cpus[processes]) / args.docs
        ceiling = cores / (cpu + nginx)
        print(
            f"--processes {processes}: median {args.docs / wall:,.0f} docs/s "
            f"({wall:.2f} s), CPU {1000 * cpu:.3f} ms/doc + nginx {1000 * nginx:.3f}, "
            f"x {base / wall:.2f} of --processes {settings[0]}; "
            f"{cores} cores' ceiling {ceiling:,.0f} docs/s ({args.docs / wall / ceiling:.0%})"
        )


if __name__ == "__main__":
    main()
