"""HEAD-bound ``rebuild-index``: objects/s against an endpoint whose HEADs take 20 ms.

Starts ``slow_head_server.py`` (``--objects`` synthetic s3idx objects, 20 ms a HEAD, 50 ms a
listing page) and runs ``s3idx rebuild-index`` into a fresh SQLite index for each transport
(boto3, obstore) at ``--workers 16`` and at the default for HEAD-bound work
(``DEFAULT_HEAD_WORKERS``), interleaved, ``--rounds`` times; prints the median objects/s
(as the summary reports it: listed objects over the run's time) and client CPU ms per
object (user + system of the s3idx process).

``--baseline-src DIR`` also runs the same commands on another checkout's ``s3idx`` package
(e.g. ``git archive <commit> s3idx | tar -x -C DIR``), to compare before and after.

    python tests/bench/bench_heads.py --objects 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(objects/s, CPU ms per object, objects) of one rebuild-index."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # cwd: `python -m s3idx` finds s3idx in the working directory first; not the baseline's.
    result = subprocess.run(
        argv, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stderr}")
    summary = json.loads(result.stdout)
    listed, elapsed = summary["listed"], summary["elapsed"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return listed / elapsed, 1000 * cpu / max(listed, 1), listed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--head-delay", type=float, default=0.020)
    parser.add_argument("--list-delay", type=float, default=0.050)
    parser.add_argument("--workers", type=int, nargs="+", default=[16, 0], help="0: the default")
    parser.add_argument("--transports", nargs="+", default=["boto3", "obstore"])
    parser.add_argument("--baseline-src", type=Path, help="another checkout's source directory")
    args = parser.parse_args()
    server = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "slow_head_server.py"),
            f"--objects={args.objects}",
            f"--head-delay={args.head_delay}",
            f"--list-delay={args.list_delay}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        for name in ("S3IDX_WORKERS", "S3IDX_HEAD_WORKERS", "S3IDX_CONFIG", "AWS_PROFILE"):
            env.pop(name, None)
        sources = {"this": None}
        if args.baseline_src:
            sources["baseline"] = args.baseline_src.resolve()
        runs: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for round_ in range(args.rounds):
                for source, src in sources.items():
                    run_env = dict(env)
                    if src is not None:
                        run_env["PYTHONPATH"] = str(src)
                    for transport in args.transports:
                        for workers in args.workers:
                            index = Path(tmp, f"{source}-{transport}-{workers}-{round_}.sqlite3")
                            argv = [
                                sys.executable,
                                "-m",
                                "s3idx",
                                "rebuild-index",
                                "--json",
                                "--quiet",
                                "--store",
                                "s3://bench/docs",
                                "--endpoint-url",
                                url,
                                "--transport",
                                transport,
                                "--index",
                                str(index),
                            ]
                            if workers:
                                argv += ["--workers", str(workers)]
                            rate, cpu, listed = _run(argv, run_env)
                            assert listed == args.objects, listed
                            runs.setdefault((source, transport, workers), []).append((rate, cpu))
    finally:
        server.terminate()
        server.wait()
    print(
        f"rebuild-index of {args.objects} objects, HEAD {args.head_delay * 1000:g} ms, "
        f"list page {args.list_delay * 1000:g} ms, {args.rounds} rounds, {os.cpu_count()} CPUs"
    )
    print(f"{'source':9} {'transport':9} {'workers':>8} {'objects/s':>10} {'CPU ms/obj':>11}")
    for (source, transport, workers), samples in runs.items():
        rate = statistics.median(r for r, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        shown = str(workers) if workers else "default"
        print(f"{source:9} {transport:9} {shown:>8} {rate:10.0f} {cpu:11.2f}")
    print(f"({time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
