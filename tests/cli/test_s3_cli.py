"""The CLI against S3 on moto's server over HTTP (with the SQLite index)."""

from __future__ import annotations

from pathlib import Path

import boto3
import orjson
import pytest

from s3idx import codec
from s3idx.errors import ExitStatus
from s3idx.index.sqlite import SqliteIndex
from tests.helpers import Run, json_lines, jsonl
from tests.s3proxy import S3Proxy

DOCS = [
    {"fs_id": f"mp-{i}", "task_id": f"task-{i % 3}", "energy": -1.5 * i, "elements": ["Fe", "O"]}
    for i in range(12)
]


def _args(endpoint: str, bucket: str = "bucket", prefix: str = "sub") -> list[str]:
    return ["--store", f"s3://{bucket}/{prefix}", "--endpoint-url", endpoint]


def test_put_get_and_metadata_on_s3(run: Run, s3_endpoint: str) -> None:
    args = _args(s3_endpoint)
    put = run("put", *args, "--create-bucket", "--field", "task_id", input=jsonl(*DOCS))
    assert put.exit_code == 0, put.stderr

    got = run("get", *args, *(d["fs_id"] for d in DOCS))
    assert got.exit_code == 0, got.stderr
    assert json_lines(got.stdout) == DOCS

    head = boto3.client("s3", endpoint_url=s3_endpoint).head_object(Bucket="bucket", Key="sub/mp-4")
    metadata = head["Metadata"]
    assert set(metadata) == {
        "s3idx-format",
        "s3idx-codec",
        "s3idx-sha256",
        "s3idx-key",
        "s3idx-fields",
        "s3idx-entry",
    }
    assert codec.metadata_size(metadata) <= 2048
    assert codec.loads(metadata["s3idx-entry"])["task_id"] == "task-1"
    assert metadata["s3idx-codec"] == "json+zlib"

    query = run("query", *args, '{"task_id": "task-1"}', "--full", "--sort", "fs_id")
    expected = sorted((d for d in DOCS if d["task_id"] == "task-1"), key=lambda d: d["fs_id"])
    assert json_lines(query.stdout) == expected


def test_missing_bucket_without_create_bucket(run: Run, s3_endpoint: str) -> None:
    result = run("put", *_args(s3_endpoint, "nobucket"), input=jsonl(DOCS[0]))
    assert result.exit_code == ExitStatus.NOT_FOUND
    assert "bucket 'nobucket' does not exist" in result.stderr
    assert "--create-bucket" in result.stderr
    # Found before the index recorded anything: the default index is still not there.
    query = run("query", "--count")
    assert query.exit_code == ExitStatus.NOT_FOUND, query.stdout
    assert "(nothing was ever put there)" in query.stderr


@pytest.mark.parametrize(
    ("given", "processes"),
    [("", "1"), ("", "2"), ('{"no_key": 1}\nnot json\n', "1"), ('{"no_key": 1}\n', "2")],
    ids=["empty", "empty-processes-2", "all-rejected", "all-rejected-processes-2"],
)
def test_a_put_with_nothing_to_store_still_finds_its_bucket_missing(
    run: Run, s3_endpoint: str, given: str, processes: str
) -> None:
    # A cron job whose export came out empty must still learn that its bucket is gone.
    args = _args(s3_endpoint, "nobucket")
    result = run("put", *args, "--processes", processes, input=given)
    assert result.exit_code == ExitStatus.NOT_FOUND, result.stderr
    assert "bucket 'nobucket' does not exist" in result.stderr
    assert "--create-bucket" in result.stderr


def test_a_put_with_nothing_to_store_and_create_bucket_creates_it(
    run: Run, s3_endpoint: str
) -> None:
    args = _args(s3_endpoint, "made-empty")
    assert run("put", *args, "--create-bucket", input="").exit_code == 0
    listed = run("sync", *args, "--check")
    assert listed.exit_code == 0, listed.stderr


def test_entry_over_2kb_is_rejected_and_the_rest_stored(run: Run, s3_endpoint: str) -> None:
    big = {"fs_id": "big", "task_id": "t" * 2100}
    docs = [DOCS[0], big, DOCS[1]]
    result = run(
        "put", *_args(s3_endpoint), "--create-bucket", "--field", "task_id", input=jsonl(*docs)
    )
    assert result.exit_code == ExitStatus.PARTIAL
    assert "<stdin>:2: index entry of 'big' needs " in result.stderr
    assert "largest fields: task_id (2102 bytes)" in result.stderr
    assert run("query", "--count").stdout == "2\n"


def test_rebuild_of_2000_objects_makes_no_get_and_restores_the_index(
    run: Run, s3_endpoint: str
) -> None:
    documents = [
        {
            "fs_id": f"k{i:05d}",
            "group": i % 10,
            "name": f"doc {i}",
            "when": {"$date": 1700000000000 + i},
        }
        for i in range(2000)
    ]
    args = _args(s3_endpoint)
    fields = ["--field", "group", "--field", "name", "--field", "when"]
    put = run("put", *args, "--create-bucket", *fields, "--workers", "16", input=jsonl(*documents))
    assert put.exit_code == 0, put.stderr
    before = run(
        "query", "--fields", "_s3idx,group,name,when,last_updated", "--sort", "fs_id"
    ).stdout
    (Path(orjson.loads(run("info", "--json").stdout)["index"])).unlink()
    assert run("query", "--count").exit_code == ExitStatus.NOT_FOUND

    with S3Proxy(s3_endpoint) as proxy:
        rebuilt = run(
            "rebuild-index",
            "--store",
            "s3://bucket/sub",
            "--endpoint-url",
            proxy.url,
            "--workers",
            "16",
            "--json",
            "--no-manifests",  # the HEAD path (tests/test_manifests.py has the other)
        )
    assert rebuilt.exit_code == 0, rebuilt.stderr
    summary = orjson.loads(rebuilt.stdout)
    assert (summary["listed"], summary["written"]) == (2000, 2000)
    assert proxy.requests["GET"] == 0  # no object body was read
    # Every object, the first once more for its key field, and the bucket (does it exist?).
    assert proxy.requests["HEAD"] == 2002
    # Three pages (2,000 objects and put's two manifests, which a document listing skips), and
    # the first once more.
    assert proxy.requests["LIST"] == 4
    after = run(
        "query", "--fields", "_s3idx,group,name,when,last_updated", "--sort", "fs_id"
    ).stdout
    assert after == before
    assert run("query", '{"group": 3}', "--count").stdout == "200\n"


def test_sync_on_s3_reports_and_repairs_exactly_twenty(run: Run, s3_endpoint: str) -> None:
    args = _args(s3_endpoint)
    documents = [{"fs_id": f"d{i:03d}", "v": i} for i in range(60)]
    assert (
        run("put", *args, "--create-bucket", "--field", "v", input=jsonl(*documents)).exit_code == 0
    )
    gone_entries = [f"d{i:03d}" for i in range(0, 20, 2)]
    gone_objects = [f"d{i:03d}" for i in range(21, 60, 4)]
    info = orjson.loads(run("info", "--json").stdout)
    index = SqliteIndex(info["index"])
    index.delete(gone_entries)
    index.close()
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.delete_objects(
        Bucket="bucket", Delete={"Objects": [{"Key": f"sub/{k}"} for k in gone_objects]}
    )

    check = run("sync", *args, "--check")
    assert check.exit_code == ExitStatus.DRIFT
    lines = check.stdout.splitlines()
    assert sorted(lines) == sorted(
        [f"bucket-only\t{k}" for k in gone_entries] + [f"index-only\t{k}" for k in gone_objects]
    )

    assert run("sync", *args).exit_code == 0
    assert run("sync", *args, "--check").exit_code == 0
    assert run("query", "--count").stdout == "50\n"


@pytest.fixture
def aws_profiles(fake_aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (fake_aws_env / "config").write_text(
        "[profile team]\nregion = eu-west-3\n"
        "[profile chained]\nsource_profile = team\nrole_arn = arn:aws:iam::123456789012:role/x\n"
    )
    (fake_aws_env / "credentials").write_text(
        "[team]\naws_access_key_id = AKIATEAMTEAMTEAM\naws_secret_access_key = teamsecret\n"
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")


def test_aws_profile_flag_is_honoured(run: Run, s3_endpoint: str, aws_profiles: None) -> None:
    args = [*_args(s3_endpoint, "profiled"), "--create-bucket"]
    without = run("put", *args, input=jsonl(DOCS[0]))
    assert without.exit_code == ExitStatus.ACCESS_DENIED
    assert "no AWS credentials found" in without.stderr

    with_profile = run("put", *args, "--aws-profile", "team", input=jsonl(DOCS[0]))
    assert with_profile.exit_code == 0, with_profile.stderr
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id="k", aws_secret_access_key="s"
    )
    location = client.get_bucket_location(Bucket="profiled")
    assert location["LocationConstraint"] == "eu-west-3"

    unknown = run("put", *args, "--aws-profile", "nobody", input=jsonl(DOCS[1]))
    assert unknown.exit_code == ExitStatus.USAGE  # a name mistyped, not a credential refused
    assert "AWS profile 'nobody' is not defined" in unknown.stderr
    assert "teamsecret" not in unknown.stderr + with_profile.stderr + without.stderr
