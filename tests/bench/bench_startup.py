"""Start-up time of the ``s3idx`` command beside ``python -c pass``, as ratios.

Runs ``python -c pass``, ``s3idx --version`` and ``s3idx query '{}' --limit 1`` (a local store
and a SQLite index holding one document) interleaved, ``--runs`` rounds, and prints the median
wall time of each and its ratio to ``python -c pass`` measured in the same rounds. The targets
(issue 17): ``--version`` within 3x, the query within 5x. Two reference rows show the floor
under them: importing Typer alone, and Typer with orjson and sqlite3.

    python tests/bench/bench_startup.py --runs 30
    python tests/bench/bench_startup.py --importtime   # the 15 slowest imports of the query

Run it with the interpreter of a regular install (``pip install .``, what users get) as well as
an editable one: an editable install's import hook slows ``python -c pass`` itself, so the same
times make smaller ratios there. ``--baseline-script OTHER_VENV/bin/s3idx`` compares another
regular install in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"s3idx --version": 3.0, "s3idx query '{}' --limit 1": 5.0}


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # cwd: `python -m s3idx` finds s3idx in the working directory first; not the baseline's.
    subprocess.run(
        argv,
        env=env,
        cwd=env["S3IDX_HOME"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--importtime", action="store_true", help="show the slowest imports")
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument(
        "--baseline-src",
        help="also run another checkout's s3idx package (a directory holding s3idx/, e.g. "
        "from `git archive COMMIT s3idx | tar -x -C DIR`) through python -m s3idx",
    )
    baseline.add_argument(
        "--baseline-script",
        help="also run another install's s3idx console script, e.g. a regular install "
        "(`pip install .`) of another commit in its own venv: VENV/bin/s3idx",
    )
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "S3IDX_HOME": home}
        env.pop("S3IDX_STORE", None)
        # An installed package runs from .pyc files; without them every run compiles s3idx.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("S3IDX_INDEX", None)
        docs = Path(home, "docs.jsonl")
        docs.write_text('{"fs_id": "a", "x": 1}\n')
        # The console script, as a user runs it (its wrapper imports `re` too); else -m.
        script = Path(python).with_name("s3idx")
        s3idx = [str(script)] if script.exists() else [python, "-m", "s3idx"]
        subprocess.run([*s3idx, "put", "-q", str(docs)], env=env, check=True)
        commands = {
            "python -c pass": [python, "-c", "pass"],
            # What any Typer command pays before its own code, and with the libraries a query on
            # the embedded default needs: the floor the two s3idx rows stand on.
            "import typer": [python, "-c", "import typer"],
            "import typer,orjson,sqlite3": [python, "-c", "import typer, orjson, sqlite3"],
            "s3idx --version": [*s3idx, "--version"],
            "s3idx query '{}' --limit 1": [*s3idx, "query", "{}", "--limit", "1"],
        }
        envs = {name: env for name in commands}
        if args.baseline_src:
            before = [python, "-m", "s3idx"]
            commands["before: --version"] = [*before, "--version"]
            commands["before: query"] = [*before, "query", "{}", "--limit", "1"]
            for name in ("before: --version", "before: query"):
                envs[name] = {**env, "PYTHONPATH": str(Path(args.baseline_src).resolve())}
        if args.baseline_script:
            before = [str(Path(args.baseline_script).resolve())]
            commands["before: --version"] = [*before, "--version"]
            commands["before: query"] = [*before, "query", "{}", "--limit", "1"]
            envs["before: --version"] = envs["before: query"] = env
        if args.importtime:
            result = subprocess.run(
                [python, "-X", "importtime", "-m", "s3idx", "query", "{}", "--limit", "1"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            rows = [line.split("|") for line in result.stderr.splitlines() if "|" in line][1:]
            rows.sort(key=lambda row: -int(row[1]))
            for _own, cumulative, name in rows[:15]:
                print(f"{int(cumulative) / 1000:8.1f} ms cumulative {name.rstrip()}")
            print()
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for name, argv in commands.items():  # warm the page cache and .pyc files
            _timed(argv, envs[name])
        for _ in range(args.runs):
            for name, argv in commands.items():
                times[name].append(_timed(argv, envs[name]))
    # On a shared machine wall time includes waiting for a CPU; CPU time does not.
    base = statistics.median(wall for wall, _ in times["python -c pass"])
    base_cpu = statistics.median(cpu for _, cpu in times["python -c pass"])
    print(f"{'command':28} {'wall ms':>8} {'ratio':>7} {'CPU ms':>8} {'ratio':>7} {'target':>7}")
    for name, samples in times.items():
        wall = statistics.median(w for w, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            verdict = f"{target:5.1f}x {'ok' if wall / base <= target else 'MISSED'}"
        print(
            f"{name:28} {wall * 1000:8.1f} {wall / base:6.2f}x {cpu * 1000:8.1f} "
            f"{cpu / base_cpu:6.2f}x {verdict}"
        )
    python_version = sys.version.split()[0]
    print(f"({args.runs} interleaved rounds, {os.cpu_count()} CPUs, python {python_version})")


if __name__ == "__main__":
    main()
