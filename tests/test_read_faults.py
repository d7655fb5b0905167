"""Reads that fail for one key after every retry: `get` and `query --full` go on with the others.

A key whose GET keeps failing (a 500 that outlasts the retry policy) is named on stderr with
the reason, its document is not printed, every other document is, in order, and the exit
status is 5; an endpoint that fails every read still stops with one error.
"""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from s3idx import Engine
from s3idx.engine.retry import RetryPolicy
from s3idx.errors import ExitStatus
from s3idx.index.sqlite import SqliteIndex
from s3idx.limits import FAILED_IN_A_ROW
from s3idx.store.s3 import S3Store
from tests.helpers import Run, json_lines, put_on_s3, s3_locations
from tests.s3proxy import ACCESS_DENIED, INTERNAL_ERROR, S3Proxy

DOCS = [{"fs_id": f"k{i:02d}", "v": i} for i in range(30)]
TRANSPORTS = ["boto3", "obstore"]


@pytest.fixture(autouse=True)
def no_retry_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every retry still happens, without its backoff sleep."""
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, retry, rng: 0.0)


@pytest.fixture
def stored(run: Run, s3_endpoint: str, tmp_path: Path) -> Path:
    """DOCS stored directly on moto; returns the SQLite index."""
    return put_on_s3(run, s3_endpoint, tmp_path / "i.sqlite3", DOCS)


def _through(proxy: S3Proxy, index: Path, transport: str) -> list[str]:
    return s3_locations(proxy.url, index, transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_get_goes_on_past_a_key_whose_reads_keep_failing(
    run: Run, s3_endpoint: str, stored: Path, transport: str
) -> None:
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = lambda method, path: method == "GET" and path[-4:] in ("/k02", "/k05")
        keys = [d["fs_id"] for d in DOCS[:8]]
        result = run("get", *_through(proxy, stored, transport), *keys)

    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    wanted = [d for d in DOCS[:8] if d["fs_id"] not in ("k02", "k05")]
    assert json_lines(result.stdout) == wanted
    failed = [line for line in result.stderr.splitlines() if line.startswith("s3idx: cannot read")]
    assert [line.split()[3] for line in failed] == ["k02:", "k05:"], result.stderr
    assert all("gave up after 8 attempts" in line for line in failed), result.stderr
    assert result.stderr.count("hint: ") == 1, result.stderr  # what to do, said once
    assert proxy.failed == 2 * 8  # each failing key was tried the policy's 8 times
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_query_full_goes_on_past_a_key_whose_reads_keep_failing(
    run: Run, s3_endpoint: str, stored: Path, transport: str
) -> None:
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = lambda method, path: method == "GET" and path.endswith("/k03")
        where = _through(proxy, stored, transport)
        result = run("query", '{"v": {"$lt": 6}}', "--full", "--sort", "v", *where)

    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    assert json_lines(result.stdout) == [d for d in DOCS[:6] if d["fs_id"] != "k03"]
    assert "index entry 'k03' cannot be read: " in result.stderr
    assert "gave up after 8 attempts" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_and_an_unavailable_key_are_each_reported(
    run: Run, s3_endpoint: str, stored: Path
) -> None:
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = lambda method, path: method == "GET" and path.endswith("/k01")
        result = run("get", *_through(proxy, stored, "boto3"), "k00", "k01", "nope", "k02")

    # A missing key alone is 4; one that could not be read because the store failed it is 5.
    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    assert json_lines(result.stdout) == [DOCS[0], DOCS[2]]
    assert "not found: nope" in result.stderr
    assert "cannot read k01: " in result.stderr


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_endpoint_failing_every_read_stops_with_one_error(
    run: Run, s3_endpoint: str, stored: Path, transport: str
) -> None:
    keys = [d["fs_id"] for d in DOCS]
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = lambda method, path: method == "GET" and path.rsplit("/", 1)[-1] >= "k01"
        result = run("get", *_through(proxy, stored, transport), *keys)

    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    assert json_lines(result.stdout) == [DOCS[0]]
    errors = [line for line in result.stderr.splitlines() if line.startswith("s3idx: error")]
    assert len(errors) == 1, result.stderr
    assert f"{FAILED_IN_A_ROW} objects in a row could not be read" in errors[0]
    assert "k01" in errors[0]
    assert "cannot read k0" not in result.stderr  # no line per key for the run that stopped it
    # It stopped: far fewer keys were tried than asked for.
    assert proxy.failed < 8 * (len(keys) - 1)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_endpoint_refusing_connections_stops_at_once_with_one_error(
    run: Run, s3_endpoint: str, stored: Path, transport: str
) -> None:
    proxy = S3Proxy(s3_endpoint).__enter__()
    where = _through(proxy, stored, transport)
    proxy.stop()
    result = run("get", *where, *[d["fs_id"] for d in DOCS])
    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("s3idx: error") == 1, result.stderr
    assert "cannot read k" not in result.stderr


def test_the_library_reports_an_unavailable_key_and_goes_on(s3_endpoint: str, stored: Path) -> None:
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = lambda method, path: method == "GET" and path.endswith("/k01")
        store = S3Store("bucket", "docs", endpoint_url=proxy.url, region="us-east-1")
        out = io.BytesIO()
        with Engine(store, SqliteIndex(stored)) as engine:
            fetched = [(key, doc) for key, doc in engine.fetch(["k00", "k01", "k02"])]
            result = engine.write_documents(["k01", "k02"], out)
    assert [key for key, _ in fetched] == ["k00", "k01", "k02"]
    failed = fetched[1][1]
    assert failed is not None and failed.unavailable and "gave up" in (failed.error or "")
    assert fetched[2][1] is not None and fetched[2][1].error is None
    assert result.found == 1
    assert [key for key, _ in result.unavailable] == ["k01"]
    assert result.as_dict()["unavailable"][0][0] == "k01"
    assert json_lines(out.getvalue().decode()) == [DOCS[2]]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_reindex_goes_on_past_an_object_whose_reads_keep_failing(
    run: Run, s3_endpoint: str, stored: Path, transport: str
) -> None:
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = lambda method, path: method == "GET" and path.endswith("/k03")
        where = _through(proxy, stored, transport)
        result = run("reindex", *where, "--field", "fs_id_copy", "--json")

    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    summary = orjson.loads(result.stdout)
    assert [item["key"] for item in summary["failed_keys"]] == ["k03"]
    assert "gave up after 8 attempts" in summary["failed_keys"][0]["reason"]
    assert (summary["updated"], summary["failed"], summary["unavailable"]) == (len(DOCS) - 1, 1, 1)
    assert summary["pending"] == ["fs_id_copy"] and summary["completed"] == []
    assert "k03" in result.stderr


def test_delete_goes_on_past_a_key_whose_delete_keeps_failing(
    run: Run, s3_endpoint: str, stored: Path
) -> None:
    keys = [d["fs_id"] for d in DOCS[:10]]
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = lambda method, path: method == "DELETE" and path.endswith("/k03")
        result = run("delete", *_through(proxy, stored, "boto3"), *keys, "--json")
        deletes = proxy.requests["DELETE"]

    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    summary = orjson.loads(result.stdout)
    assert (summary["deleted"], summary["entries_deleted"]) == (9, 10)
    assert [item["key"] for item in summary["failed"]] == ["k03"]
    assert "gave up after 8 attempts" in summary["failed"][0]["reason"]
    assert summary["unavailable"] == 1
    assert "could not delete k03: " in result.stderr
    assert deletes == 9 + 8  # the failing key alone was retried, not the whole batch
    direct = s3_locations(s3_endpoint, stored)
    # Its entry is gone and its delete journaled: the next delete or sync finishes it.
    assert run("get", *direct, "k03").exit_code == 0
    assert run("sync", *direct, "-q").exit_code == 0
    assert run("get", *direct, "k03").exit_code == ExitStatus.NOT_FOUND


def test_delete_on_a_store_failing_every_delete_stops_with_one_error(
    run: Run, s3_endpoint: str, stored: Path
) -> None:
    keys = [d["fs_id"] for d in DOCS]
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = lambda method, path: method == "DELETE"
        result = run("delete", *_through(proxy, stored, "boto3"), *keys)

    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    assert result.stderr.count("s3idx: error") == 1, result.stderr
    assert "could not delete" not in result.stderr
    assert f"{FAILED_IN_A_ROW} objects in a row could not be deleted" in result.stderr


def _new_index_through(proxy: S3Proxy, tmp_path: Path) -> list[str]:
    """A new index: every object is bucket-only, so sync HEADs each one to adopt it."""
    where = ["--store", "s3://bucket/docs", "--endpoint-url", proxy.url]
    return [*where, "--index", str(tmp_path / "new.sqlite3")]


def test_sync_goes_on_past_an_object_whose_head_keeps_failing(
    run: Run, s3_endpoint: str, stored: Path, tmp_path: Path
) -> None:
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = lambda method, path: method == "HEAD" and path.endswith("/k03")
        where = _new_index_through(proxy, tmp_path)
        sync = run("sync", *where, "--json")

        assert sync.exit_code == ExitStatus.UNAVAILABLE, sync.stderr
        summary = orjson.loads(sync.stdout)
        assert (summary["added"], summary["unavailable"]) == (len(DOCS) - 1, 1), summary
        assert [u["key"] for u in summary["unavailable_keys"]] == ["k03"]
        assert "500" in summary["unavailable_keys"][0]["reason"]
        assert "k03: could not be read: " in sync.stderr, sync.stderr
        assert run("query", *where, "--count").stdout == f"{len(DOCS) - 1}\n"

        proxy.failing = None  # the next sync looks at it again
        again = run("sync", *where, "--json")
    assert again.exit_code == 0, again.stderr
    assert orjson.loads(again.stdout)["added"] == 1


def test_sync_on_a_store_failing_every_head_stops_with_one_error(
    run: Run, s3_endpoint: str, stored: Path, tmp_path: Path
) -> None:
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = lambda method, path: method == "HEAD"
        sync = run("sync", *_new_index_through(proxy, tmp_path))

    assert sync.exit_code == ExitStatus.UNAVAILABLE, sync.stderr
    assert "could not be read:" not in sync.stderr  # no line per key
    assert f"{FAILED_IN_A_ROW} objects in a row could not be read" in sync.stderr, sync.stderr


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_verify_goes_on_past_an_object_whose_reads_keep_failing(
    run: Run, s3_endpoint: str, stored: Path, transport: str
) -> None:
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = lambda method, path: method == "GET" and path[-4:] in ("/k03", "/k17")
        result = run("verify", *_through(proxy, stored, transport), "--json")
        plain = run("verify", *_through(proxy, stored, transport))

    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    summary = orjson.loads(result.stdout)
    assert (summary["checked"], summary["ok"], summary["damaged"]) == (len(DOCS) - 2, 28, 0)
    assert summary["unavailable"] == 2
    assert [item["key"] for item in summary["unavailable_keys"]] == ["k03", "k17"]
    assert "gave up after 8 attempts" in summary["unavailable_keys"][0]["reason"]
    failed = [line for line in result.stderr.splitlines() if "could not be read" in line]
    assert [line.split()[1] for line in failed] == ["k03:", "k17:"], result.stderr
    assert "Traceback" not in result.stderr
    assert plain.exit_code == ExitStatus.UNAVAILABLE, plain.stderr
    assert "checked 28: 28 sound, 0 damaged" in plain.stderr
    assert "; 2 objects could not be read (not checked; run verify again)" in plain.stderr


@pytest.mark.parametrize(
    ("command", "per_object"),
    [
        (["reindex", "--field", "fs_id_copy", "--workers", "2"], "not reindexed"),
        (["verify"], "could not be read: "),
    ],
)
def test_a_scan_on_a_store_failing_every_read_stops_with_one_error(
    run: Run, s3_endpoint: str, stored: Path, command: list[str], per_object: str
) -> None:
    with S3Proxy(s3_endpoint, fault=(500, INTERNAL_ERROR)) as proxy:
        proxy.failing = lambda method, path: method == "GET" and "/.s3idx/" not in path
        result = run(*command, *_through(proxy, stored, "boto3"))

    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("s3idx: error")]
    assert len(errors) == 1, result.stderr
    assert f"{FAILED_IN_A_ROW} objects in a row could not be read" in errors[0]
    assert per_object not in result.stderr  # no line per object for the run that stopped it


# --- objects the credentials may not read or delete ------------------------------------------
# A bucket policy on some keys, or objects encrypted with a KMS key the credentials may not use:
# S3 answers 403 AccessDenied for those objects only. As a failing object, each is named and
# the others go on; the exit status is 6, since running again will not help; ten in a row are
# credentials denied everything, one error.

DENIED = (403, ACCESS_DENIED)
ALL_TRANSPORTS = [*TRANSPORTS, "http"]


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_get_goes_on_past_objects_it_may_not_read(
    run: Run, s3_endpoint: str, stored: Path, transport: str
) -> None:
    with S3Proxy(s3_endpoint, fault=DENIED) as proxy:
        proxy.failing = lambda method, path: method == "GET" and path[-4:] in ("/k02", "/k05")
        result = run("get", *_through(proxy, stored, transport), *[d["fs_id"] for d in DOCS[:8]])

    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    assert json_lines(result.stdout) == [d for d in DOCS[:8] if d["fs_id"] not in ("k02", "k05")]
    failed = [line for line in result.stderr.splitlines() if line.startswith("s3idx: cannot read")]
    assert [line.split()[3] for line in failed] == ["k02:", "k05:"], result.stderr
    assert all("AccessDenied: Access Denied" in line for line in failed), result.stderr
    assert "hint: the credentials work but are not allowed" in result.stderr
    assert result.stderr.count("hint: ") == 1, result.stderr
    assert proxy.failed == 2  # a denial is not retried
    assert "Traceback" not in result.stderr


def test_query_full_goes_on_past_an_object_it_may_not_read(
    run: Run, s3_endpoint: str, stored: Path
) -> None:
    with S3Proxy(s3_endpoint, fault=DENIED) as proxy:
        proxy.failing = lambda method, path: method == "GET" and path.endswith("/k03")
        where = _through(proxy, stored, "boto3")
        result = run("query", '{"v": {"$lt": 6}}', "--full", "--sort", "v", *where)

    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    assert json_lines(result.stdout) == [d for d in DOCS[:6] if d["fs_id"] != "k03"]
    assert "index entry 'k03' cannot be read: " in result.stderr


def test_a_denied_and_an_unavailable_object_exit_6(
    run: Run, s3_endpoint: str, stored: Path
) -> None:
    """Both are named; the denial decides the status, as what running again cannot mend."""
    with S3Proxy(s3_endpoint, fault=DENIED) as proxy:
        faults = {"/k01": DENIED, "/k02": (500, INTERNAL_ERROR)}
        proxy.failing = lambda method, path: method == "GET" and faults.get(path[-4:], False)
        result = run("get", *_through(proxy, stored, "boto3"), "k00", "k01", "k02", "k03")
    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    assert json_lines(result.stdout) == [DOCS[0], DOCS[3]]
    assert "cannot read k01: " in result.stderr and "cannot read k02: " in result.stderr
    assert result.stderr.count("hint: ") == 2, result.stderr  # what to do about each


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_credentials_denied_every_read_stop_with_one_error(
    run: Run, s3_endpoint: str, stored: Path, transport: str
) -> None:
    keys = [d["fs_id"] for d in DOCS]
    with S3Proxy(s3_endpoint, fault=DENIED) as proxy:
        proxy.failing = lambda method, path: method == "GET" and path.rsplit("/", 1)[-1] >= "k01"
        result = run("get", *_through(proxy, stored, transport), *keys, "--workers", "2")

    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    assert json_lines(result.stdout) == [DOCS[0]]
    errors = [line for line in result.stderr.splitlines() if line.startswith("s3idx: error")]
    assert len(errors) == 1, result.stderr
    assert f"{FAILED_IN_A_ROW} objects in a row could not be read (from 'k01' on)" in errors[0]
    assert "AccessDenied" in errors[0]
    assert "hint: the credentials work but are not allowed" in result.stderr
    assert "cannot read k0" not in result.stderr
    assert proxy.failed <= FAILED_IN_A_ROW + 2 * 2  # and those fetched ahead


@pytest.mark.parametrize("transport", ALL_TRANSPORTS)
def test_verify_goes_on_past_objects_it_may_not_read(
    run: Run, s3_endpoint: str, stored: Path, transport: str
) -> None:
    with S3Proxy(s3_endpoint, fault=DENIED) as proxy:
        proxy.failing = lambda method, path: method == "GET" and path[-4:] in ("/k03", "/k17")
        result = run("verify", *_through(proxy, stored, transport), "--json")
        plain = run("verify", *_through(proxy, stored, transport))

    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    summary = orjson.loads(result.stdout)
    assert (summary["checked"], summary["ok"], summary["damaged"]) == (len(DOCS) - 2, 28, 0)
    assert (summary["unavailable"], summary["denied"]) == (2, 2)
    assert [item["key"] for item in summary["unavailable_keys"]] == ["k03", "k17"]
    assert "AccessDenied" in summary["unavailable_keys"][0]["reason"]
    assert plain.exit_code == ExitStatus.ACCESS_DENIED, plain.stderr
    assert "2 objects could not be read (not checked; 2 denied access)" in plain.stderr


def test_reindex_goes_on_past_an_object_it_may_not_read(
    run: Run, s3_endpoint: str, stored: Path
) -> None:
    with S3Proxy(s3_endpoint, fault=DENIED) as proxy:
        proxy.failing = lambda method, path: method == "GET" and path.endswith("/k03")
        result = run("reindex", *_through(proxy, stored, "boto3"), "--field", "x2", "--json")

    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    summary = orjson.loads(result.stdout)
    assert [item["key"] for item in summary["failed_keys"]] == ["k03"]
    assert "AccessDenied" in summary["failed_keys"][0]["reason"]
    assert (summary["updated"], summary["failed"], summary["denied"]) == (len(DOCS) - 1, 1, 1)
    assert summary["pending"] == ["x2"] and summary["completed"] == []


def test_delete_goes_on_past_an_object_it_may_not_delete(
    run: Run, s3_endpoint: str, stored: Path
) -> None:
    keys = [d["fs_id"] for d in DOCS[:10]]
    with S3Proxy(s3_endpoint, fault=DENIED) as proxy:
        proxy.failing = lambda method, path: method == "DELETE" and path.endswith("/k03")
        result = run("delete", *_through(proxy, stored, "boto3"), *keys, "--json")
        deletes = proxy.requests["DELETE"]

    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    summary = orjson.loads(result.stdout)
    assert summary["deleted"] == 9
    assert [item["key"] for item in summary["failed"]] == ["k03"]
    assert "AccessDenied" in summary["failed"][0]["reason"]
    assert summary["denied"] == 1
    assert deletes == 10  # not retried


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sync_goes_on_past_an_object_it_may_not_head(
    run: Run, s3_endpoint: str, stored: Path, tmp_path: Path, transport: str
) -> None:
    with S3Proxy(s3_endpoint, fault=DENIED) as proxy:
        proxy.failing = lambda method, path: method == "HEAD" and path.endswith("/k03")
        if transport == "obstore":
            pytest.importorskip("obstore", reason="not installed (pip install 's3idx[fast]')")
        where = [*_new_index_through(proxy, tmp_path), "--transport", transport]
        sync = run("sync", *where, "--json")

    assert sync.exit_code == ExitStatus.ACCESS_DENIED, sync.stderr
    summary = orjson.loads(sync.stdout)
    assert (summary["added"], summary["unavailable"], summary["denied"]) == (len(DOCS) - 1, 1, 1)
    assert [u["key"] for u in summary["unavailable_keys"]] == ["k03"]
    assert "403" in summary["unavailable_keys"][0]["reason"]


@pytest.mark.parametrize("command", [["verify"], ["reindex", "--field", "x2", "--workers", "2"]])
def test_a_scan_denied_every_read_stops_with_one_error(
    run: Run, s3_endpoint: str, stored: Path, command: list[str]
) -> None:
    with S3Proxy(s3_endpoint, fault=DENIED) as proxy:
        proxy.failing = lambda method, path: method == "GET" and "/.s3idx/" not in path
        result = run(*command, *_through(proxy, stored, "boto3"))

    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("s3idx: error")]
    assert len(errors) == 1, result.stderr
    assert f"{FAILED_IN_A_ROW} objects in a row could not be read" in errors[0]


INVALID_KEY_ID = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidAccessKeyId</Code>'
    b"<Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>"
)


def test_wrong_credentials_still_stop_at_the_first_object(
    run: Run, s3_endpoint: str, stored: Path
) -> None:
    """InvalidAccessKeyId is no object's: nothing per key, one error at once."""
    bad = (403, INVALID_KEY_ID)
    with S3Proxy(s3_endpoint, fault=bad) as proxy:
        proxy.failing = lambda method, path: method == "GET"
        keys = [d["fs_id"] for d in DOCS[:20]]
        result = run("get", *_through(proxy, stored, "boto3"), *keys, "--workers", "2")
        failed = proxy.failed
    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    assert result.stderr.count("s3idx: error") == 1, result.stderr
    assert "cannot read k" not in result.stderr
    assert "InvalidAccessKeyId" in result.stderr
    assert failed <= 1 + 2 * 2  # the first, and those fetched ahead of it: not ten


def test_delete_denied_every_delete_stops_with_one_error(
    run: Run, s3_endpoint: str, stored: Path
) -> None:
    with S3Proxy(s3_endpoint, fault=DENIED) as proxy:
        proxy.failing = lambda method, path: method == "DELETE"
        result = run("delete", *_through(proxy, stored, "boto3"), *[d["fs_id"] for d in DOCS])

    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    assert result.stderr.count("s3idx: error") == 1, result.stderr
    assert "could not delete" not in result.stderr
    assert f"{FAILED_IN_A_ROW} objects in a row could not be deleted" in result.stderr
    assert "access to every object is denied" in result.stderr
    assert "hint: the store does not allow these objects to be deleted: check what the" in (
        result.stderr
    )
