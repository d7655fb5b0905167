"""Faults: throttling, a server that dies mid-ingest, backends that cannot be used, secrets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine
from s3idx.errors import ExitStatus, ObjectNotFoundError
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.local import LocalStore
from s3idx.store.s3 import S3Store
from tests.conftest import moto_api
from tests.helpers import Run, json_lines, jsonl, moto_iam_key
from tests.s3proxy import INTERNAL_ERROR, SLOW_DOWN, S3Proxy

ROOT = Path(__file__).resolve().parent.parent
DOCS = [{"fs_id": f"doc-{i:04d}", "v": i, "text": "x" * 200} for i in range(1000)]


FAULTS = {"slow-down": (503, SLOW_DOWN), "internal-error": (500, INTERNAL_ERROR)}


# http: an upload refused on the event loop is sent again on it, counted as a retry.
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("transport", ["boto3", "http"])
def test_ingest_through_ten_percent_slow_down_stores_everything(
    run: Run, s3_endpoint: str, transport: str, fault: str
) -> None:
    proxied = S3Proxy(s3_endpoint, slow_down_rate=0.1, seed=3, fault=FAULTS[fault])
    with proxied as proxy:
        store = ["--store", "s3://bucket/docs", "--endpoint-url", proxy.url]
        store += ["--transport", transport]
        result = run("put", *store, "--create-bucket", "--field", "v", "--json", input=jsonl(*DOCS))

    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert (summary["stored"], summary["rejected"]) == (1000, 0)
    assert proxy.slowed_down > 50
    assert summary["retries"] == proxy.slowed_down
    direct = ["--store", "s3://bucket/docs", "--endpoint-url", s3_endpoint]
    assert run("query", "--count").stdout == "1000\n"
    assert run("sync", *direct, "--check").exit_code == 0
    got = run("get", *direct, "doc-0000", "doc-0999").stdout.splitlines()
    assert [orjson.loads(line) for line in got] == [DOCS[0], DOCS[999]]


@pytest.mark.parametrize("transport", ["boto3", "http"])
def test_s3_server_gone_mid_ingest_is_a_clear_error_and_nothing_points_nowhere(
    run: Run, s3_endpoint: str, transport: str
) -> None:
    proxy = S3Proxy(s3_endpoint).__enter__()
    args = ["--store", "s3://bucket/docs", "--endpoint-url", proxy.url, "--batch-size", "50"]
    args += ["--transport", transport]
    assert run("put", *args, "--create-bucket", input=jsonl(*DOCS[:400])).exit_code == 0
    proxy.stop()  # the server vanishes: the next requests meet a refused connection

    result = run("put", *args, "--json", input=jsonl(*DOCS[400:]))

    assert result.exit_code == ExitStatus.UNAVAILABLE
    assert f"cannot reach S3 at {proxy.url}" in result.stderr
    assert "Connection refused" in result.stderr
    assert orjson.loads(result.stdout)["stored"] == 0
    store = S3Store("bucket", "docs", endpoint_url=s3_endpoint)
    index = SqliteIndex(Path(orjson.loads(run("info", "--json").stdout)["index"]))
    with Engine(store, index) as engine:
        for entry in engine.query({}, fields=["fs_id"]):
            store.head(entry["fs_id"])  # raises if an entry points at a missing object
        assert engine.count({}) == 400


def test_mongodb_unreachable_is_exit_5_without_the_password(run: Run) -> None:
    uri = "mongodb://admin:hunter2@127.0.0.1:1/db?serverSelectionTimeoutMS=300"
    result = run("put", "--index", uri, input=jsonl(DOCS[0]))
    assert result.exit_code == ExitStatus.UNAVAILABLE
    assert "cannot reach MongoDB at 127.0.0.1:1" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def _namespace_with_tmpfs(tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script as root of a new user and mount namespace, a tiny tmpfs at $FS.

    A full disk or a read-only file system cannot be faked honestly with file modes (root
    ignores them); a private mount namespace gives real ones without touching the machine.
    """
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    fs = tmp_path / "fs"
    fs.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3IDX_")}
    env.update(FS=str(fs), PY=sys.executable, PYTHONPATH=str(ROOT), S3IDX_HOME=str(tmp_path / "h"))
    setup = 'mount -t tmpfs -o size=256k tmpfs "$FS" || exit 99\n'
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", setup + script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    return result


DOC_LINES = "".join(orjson.dumps(d).decode() + "\\n" for d in DOCS[:400])


def test_full_disk_under_the_local_store_is_exit_5(tmp_path: Path) -> None:
    script = f"""
printf '{DOC_LINES}' | "$PY" -m s3idx put --store "$FS/store" --index "{tmp_path}/i.db"
echo "status=$?"
"""
    result = _namespace_with_tmpfs(tmp_path, script)
    assert "status=5" in result.stdout, result.stderr
    assert "No space left on device" in result.stderr
    assert "hint: free disk space, then run the command again" in result.stderr
    assert "Traceback" not in result.stderr


def test_full_disk_under_the_sqlite_index_is_exit_5(tmp_path: Path) -> None:
    script = f"""
head -c 200000 /dev/zero > "$FS/filler"
printf '{DOC_LINES}' | "$PY" -m s3idx put --store "{tmp_path}/store" --index "$FS/i.db"
echo "status=$?"
"""
    result = _namespace_with_tmpfs(tmp_path, script)
    assert "status=5" in result.stdout, result.stderr
    assert f"{tmp_path}/fs/i.db" in result.stderr
    assert "Traceback" not in result.stderr


def test_read_only_file_system_under_the_index_is_exit_5(tmp_path: Path) -> None:
    script = f"""
printf '{DOC_LINES}' | "$PY" -m s3idx put --store "{tmp_path}/store" --index "$FS/i.db" -q
mount -o remount,ro "$FS"
printf '{{"fs_id": "late"}}\\n' | "$PY" -m s3idx put --store "{tmp_path}/store" --index "$FS/i.db"
echo "status=$?"
"$PY" -m s3idx query --index "$FS/i.db" --count
"""
    result = _namespace_with_tmpfs(tmp_path, script)
    assert "status=5" in result.stdout, result.stderr
    assert "read-only" in result.stderr.lower()
    assert result.stdout.strip().endswith("400")  # reads still work, nothing half-written
    assert "Traceback" not in result.stderr


def test_a_file_that_is_not_a_database_is_exit_5(run: Run, tmp_path: Path) -> None:
    index = tmp_path / "not.sqlite3"
    index.write_bytes(b"this is not a database" * 100)
    result = run("put", "--index", str(index), input=jsonl(DOCS[0]))
    assert result.exit_code == ExitStatus.UNAVAILABLE
    assert str(index) in result.stderr


def test_a_uri_password_never_appears_in_any_failing_path(run: Run, tmp_path: Path) -> None:
    secret = "pa55w0rd-SECRET"
    uri = f"mongodb://user:{secret}@127.0.0.1:1/db?serverSelectionTimeoutMS=200"
    source = tmp_path / "in.jsonl"
    source.write_bytes(jsonl(DOCS[0]) + b"not json\n")
    attempts = [
        ("put", str(source), "--index", uri),
        ("put", str(source), "--index", uri, "--json"),
        ("put", str(source), "--index", uri, "--dry-run", "--skip-unchanged"),
        ("get", "doc-0000", "--index", uri),
        ("query", "{}", "--index", uri),
        ("query", "{bad", "--index", uri),
        ("query", '{"v": {"$where": 1}}', "--index", uri),
        ("delete", "doc-0000", "--index", uri),
        ("info", "--index", uri, "--json"),
        ("info", "--index", uri),
        ("sync", "--index", uri, "--check"),
        ("rebuild-index", "--index", uri, "--json"),
        ("query", "--index", f"mongodb://user:{secret}@127.0.0.1:1/"),
        ("put", "--index", f"mongodb://user:{secret}@[bad/db", str(source)),
    ]
    for args in attempts:
        result = run(*args, input=b"")
        assert result.exit_code != 0 or args[0] == "info", args
        assert secret not in result.stdout + result.stderr, args


def test_an_aws_secret_never_appears_in_output(
    run: Run, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, moto_auth: None
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    args = ["--store", "s3://bucket/x", "--endpoint-url", s3_endpoint, "--create-bucket"]
    for command in (("put", *args), ("put", *args, "--json"), ("get", "k", *args[:4])):
        result = run(*command, input=jsonl(DOCS[0]))
        assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
        text = result.stdout + result.stderr
        assert "wJalrXUtnFEMI" not in text
        assert "AKIAEXAMPLEKEYID0000" not in text


def test_missing_object_behind_an_entry_is_reported_by_query_full(run: Run, tmp_path: Path) -> None:
    store = tmp_path / "store"
    run("put", "--store", str(store), input=jsonl(DOCS[0], DOCS[1]))
    LocalStore(store).delete(["doc-0001"])
    with pytest.raises(ObjectNotFoundError):
        Engine(LocalStore(store), SqliteIndex(tmp_path / "unused.db")).get("doc-0001")
    result = run("query", "--full", "--store", str(store))
    assert result.exit_code == ExitStatus.PARTIAL
    assert "index entry 'doc-0001' has no object in the store (run s3idx sync)" in result.stderr


def test_an_object_replaced_behind_an_entry_is_reported_by_query_full_not_printed(
    run: Run, tmp_path: Path
) -> None:
    """Another version restored over an object: the entry matched the filter, the object it
    holds need not. Drift (exit 3, named), as a missing object is; the others are printed."""
    other, store = tmp_path / "other", tmp_path / "store"
    changed = {**DOCS[1], "extra": "restored from another copy"}
    assert (
        run(
            "put", "--store", str(other), "--index", str(tmp_path / "o.db"), input=jsonl(changed)
        ).exit_code
        == 0
    )
    run("put", "--store", str(store), input=jsonl(DOCS[0], DOCS[1]))
    (restored,) = [p for p in (other / "objects").iterdir() if p.is_file()]
    restored.replace(store / "objects" / restored.name)
    result = run("query", "--full", "--store", str(store))
    assert result.exit_code == ExitStatus.PARTIAL, result.stderr
    assert json_lines(result.stdout) == [DOCS[0]]
    assert result.stderr == (
        "s3idx: index entry 'doc-0001' describes another version of its object than the store "
        "holds (run s3idx sync)\n"
    )


@pytest.mark.parametrize("transport", ["boto3", "obstore", "http"])
def test_info_and_reads_refuse_credentials_s3_does_not_know(
    run: Run,
    s3_endpoint: str,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    moto_auth: None,
    transport: str,
) -> None:
    """A HEAD of the bucket answers a bare 403 both to a key S3 does not know and to a principal
    not allowed to list: info must not call the store ok on a 403 alone."""
    if transport == "obstore":
        pytest.importorskip("obstore")
    index = ["--index", str(tmp_path / "i.sqlite3")]
    assert (
        run("put", "-q", "--store", str(tmp_path / "s"), *index, input=jsonl(DOCS[0])).exit_code
        == 0
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEYID0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nobodyknowsthissecretkey0000000000000000")
    where = ["--store", f"s3://{s3_bucket}/docs", "--endpoint-url", s3_endpoint]
    where += [*index, "--transport", transport]

    info = run("info", "--json", *where)

    assert info.exit_code == ExitStatus.ACCESS_DENIED, info.stdout + info.stderr
    assert orjson.loads(info.stdout)["store_status"] == "denied"
    assert "nobodyknows" not in info.stdout + info.stderr
    for command in (("query", "--full"), ("sync", "--check"), ("verify",)):
        result = run(*command, *where)
        assert result.exit_code == ExitStatus.ACCESS_DENIED, (command, result.stderr)


def _iam_user(endpoint: str, name: str, actions: list[str]) -> dict[str, str]:
    """A moto IAM user allowed ``actions``; its key in the AWS_* variables' names."""
    key_id, secret = moto_iam_key(endpoint, name, actions)
    return {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}


def test_a_principal_allowed_objects_but_not_the_bucket_still_reads_and_writes(
    run: Run, s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side of a HEAD's 403: without s3:ListBucket, put and get still work."""
    admin = _iam_user(s3_endpoint, "admin", ["*"])
    narrow = _iam_user(s3_endpoint, "narrow", ["s3:GetObject", "s3:PutObject"])
    where = ["--store", f"s3://{s3_bucket}/docs", "--endpoint-url", s3_endpoint]
    where += ["--index", str(tmp_path / "i.sqlite3")]
    moto_api(s3_endpoint, "reset-auth", b"0")
    try:
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        for name, value in narrow.items():
            monkeypatch.setenv(name, value)
        put = run("put", *where, input=jsonl(DOCS[0]))
        assert put.exit_code == 0, put.stderr
        get = run("get", str(DOCS[0]["fs_id"]), *where)
        assert get.exit_code == 0, get.stderr
        assert orjson.loads(get.stdout) == DOCS[0]
        info = run("info", "--json", *where)
        assert (info.exit_code, orjson.loads(info.stdout)["store_status"]) == (0, "ok")
        for name, value in admin.items():
            monkeypatch.setenv(name, value)
        assert run("query", "--count", *where).stdout == "1\n"
    finally:
        moto_api(s3_endpoint, "reset-auth", b"inf")


def _put_summary(
    run: Run, store: list[str], transport: str, docs: int
) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    result = run("put", *store, "--transport", transport, "--json", input=jsonl(*DOCS[:docs]))
    elapsed = time.monotonic() - started
    summary = orjson.loads(result.stdout)
    # Which upload's answer came first varies: the key it names is not compared.
    summary["error"] = re.sub(r"doc-\d{4}", "KEY", summary.get("error", ""))
    return result.exit_code, summary, elapsed


@pytest.mark.parametrize("case", ["missing-bucket", "unknown-key-id"])
def test_a_final_answer_fails_the_http_transport_as_boto3_at_once_without_retries(
    run: Run,
    s3_endpoint: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    if case == "unknown-key-id":
        request.getfixturevalue("moto_auth")  # moto checks key ids while the test runs
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEYID00000")
    store = ["--store", f"s3://no-such-bucket-{case}/docs", "--endpoint-url", s3_endpoint]
    expected_status = {
        "missing-bucket": ExitStatus.NOT_FOUND,
        "unknown-key-id": ExitStatus.ACCESS_DENIED,
    }[case]

    boto3 = _put_summary(run, store, "boto3", 200)
    http = _put_summary(run, store, "http", 200)

    for status, summary, elapsed in (boto3, http):
        assert status == expected_status, summary
        assert summary["exit_status"] == expected_status
        assert (summary["stored"], summary["retries"]) == (0, 0), summary
        assert elapsed < 20, elapsed  # local answers, none waited for: was 16-32 retries
    assert http[1]["error"] == boto3[1]["error"]
    if case == "missing-bucket":
        assert http[1]["error"] == "bucket 'no-such-bucket-missing-bucket' does not exist"
    else:
        # Found by the put's check of its bucket, before any upload (and before the index
        # recorded the store): a HEAD's 403 has no body, so a listing says which 403 it is.
        assert http[1]["error"].startswith(
            "S3 ListObjectsV2 on s3://no-such-bucket-unknown-key-id/docs failed"
        )
        assert "InvalidAccessKeyId" in http[1]["error"]


class _NotS3(BaseHTTPRequestHandler):
    """A web server that is not S3: every request it does not implement answers 501 (as
    ``python -m http.server`` does for PUT and DELETE), a POST 405."""

    def do_POST(self) -> None:
        self.send_error(405)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def not_s3_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotS3)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("transport", ["boto3", "obstore", "http"])
def test_an_endpoint_that_is_not_s3_is_unavailable_not_a_bug(
    run: Run, not_s3_endpoint: str, tmp_path: Path, transport: str
) -> None:
    if transport == "obstore":
        pytest.importorskip("obstore")
    where = ["--store", "s3://bucket/docs", "--endpoint-url", not_s3_endpoint]
    where += ["--index", str(tmp_path / "i.sqlite3"), "--transport", transport]

    for flags in ((), ("--create-bucket",)):
        result = run("put", *where, *flags, "--json", input=jsonl(*DOCS[:3]))

        assert result.exit_code == ExitStatus.UNAVAILABLE, result.stdout + result.stderr
        summary = orjson.loads(result.stdout)
        assert summary["stored"] == 0
        assert "501" in summary["error"]
        assert (
            "hint: check that --endpoint-url names an S3 server: this one does not implement "
            "the request" in result.stderr
        )

    for command in (("info",), ("sync", "--check"), ("rebuild-index",), ("verify",), ("get", "a")):
        result = run(*command, *where)
        assert result.exit_code == ExitStatus.UNAVAILABLE, (command, result.stdout)
        assert "does not implement the request" in result.stderr, command
