"""S3Store beyond the shared protocol: multipart, buckets, credentials, profiles, error table.

Most tests talk HTTP to the session's moto server. Failures moto cannot produce (throttling,
expired tokens, per-key delete errors) go through botocore's Stubber or straight through
``translate_error``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.stub import ANY, Stubber

from s3idx import codec
from s3idx.backends import open_store
from s3idx.config import Settings, redact
from s3idx.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    ExitStatus,
    InvalidKeyError,
    MetadataTooLargeError,
    NotFoundError,
    ObjectAccessDeniedError,
    ObjectChangedError,
    ObjectNotFoundError,
    S3idxError,
    TransientError,
    UsageError,
)
from s3idx.store.base import ObjectStore
from s3idx.store.deadline import Watch
from s3idx.store.s3 import MAX_PARTS, MiB, S3Store
from s3idx.store.s3_errors import translate_error
from tests.s3proxy import S3Proxy

META = {"s3idx-format": "1", "s3idx-entry": '{"fs_id":"a"}'}
S3_TEST_REGION = "us-east-1"  # as the conftest fixtures use
SECRET_KEY_ID = "AKIAIOSFODNN7SECRETID"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY1"


def make_store(endpoint: str, bucket: str, prefix: str = "p", **options: Any) -> S3Store:
    options.setdefault("region", S3_TEST_REGION)
    return S3Store(bucket, prefix, endpoint_url=endpoint, **options)


@pytest.fixture
def s3(s3_endpoint: str, s3_bucket: str) -> Iterator[S3Store]:
    store = make_store(s3_endpoint, s3_bucket)
    yield store
    store.close()


def client_error(code: str, message: str = "msg", status: int = 400, op: str = "PutObject") -> Any:
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, op)  # type: ignore[arg-type]


# --- keys, location, settings ----------------------------------------------------------------


def test_location_names_bucket_and_normalised_prefix() -> None:
    assert S3Store("bkt", "a/b/").location == "s3://bkt/a/b"
    assert S3Store("bkt").location == "s3://bkt"
    assert "testing" not in repr(S3Store("bkt", "a"))


def test_a_mistyped_option_is_refused() -> None:
    with pytest.raises(TypeError, match="endpoint"):
        S3Store("bkt", endpoint="http://h:1")  # type: ignore[call-arg]


def test_check_key_counts_the_prefix_against_1024_bytes() -> None:
    store = S3Store("bkt", "sub/dir")  # "sub/dir/" is 8 bytes

    store.check_key("x" * 1016)
    with pytest.raises(InvalidKeyError, match="1025 bytes"):
        store.check_key("x" * 1017)
    with pytest.raises(InvalidKeyError):
        store.check_key("é" * 509)  # 1018 UTF-8 bytes
    S3Store("bkt").check_key("x" * 1024)


def test_open_store_builds_an_s3_store_from_settings(s3_endpoint: str, tmp_path: Path) -> None:
    settings = Settings(
        store="s3://made-by-settings/pre/fix/",
        index=str(tmp_path / "index.sqlite3"),
        endpoint_url=s3_endpoint,
        region=S3_TEST_REGION,
        create_bucket=True,
        workers=32,
    )

    store = open_store(settings)

    assert isinstance(store, S3Store)
    assert isinstance(store, ObjectStore)
    assert store.location == "s3://made-by-settings/pre/fix"
    # A connection for each request of the larger of the two concurrencies, and two spare.
    pool = max(settings.workers, settings.head_workers) + 2
    assert store.connection.client.meta.config.max_pool_connections == pool == 66
    store.put("k", b"body", META)
    raw = boto3.client("s3", endpoint_url=s3_endpoint).get_object(
        Bucket="made-by-settings", Key="pre/fix/k"
    )
    assert raw["Body"].read() == b"body"


# --- bodies and metadata ---------------------------------------------------------------------


def test_small_body_is_one_put_with_a_plain_etag(s3: S3Store) -> None:
    receipt = s3.put("small", b"x" * 100, META)

    assert "-" not in receipt.etag
    assert receipt.size == 100
    assert not receipt.etag.startswith('"')


def test_multipart_upload_round_trips_with_a_multipart_etag(
    s3_endpoint: str, s3_bucket: str
) -> None:
    store = make_store(
        s3_endpoint, s3_bucket, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB
    )
    data = os.urandom(12 * MiB)

    receipt = store.put("big/one", data, META)

    assert receipt.etag.endswith("-3")  # 5 + 5 + 2 MiB
    assert receipt.size == len(data)
    head = store.head("big/one")
    assert (head.etag, head.size, head.metadata) == (receipt.etag, len(data), META)
    body = store.open("big/one")
    assert body.head.metadata == META
    assert body.read() == data
    assert [(o.key, o.etag) for o in store.list_objects("big/")] == [("big/one", receipt.etag)]


def test_failed_multipart_upload_is_aborted(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(
        s3_endpoint, s3_bucket, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB
    )
    real_upload_part = store.connection.client.upload_part

    def failing_upload_part(**params: Any) -> Any:
        if params["PartNumber"] == 2:
            raise client_error("InternalError", "boom", 500, "UploadPart")
        return real_upload_part(**params)

    monkeypatch.setattr(store.connection.client, "upload_part", failing_upload_part)

    with pytest.raises(TransientError, match="UploadPart"):
        store.put("big", os.urandom(11 * MiB), META)

    uploads = store.connection.client.list_multipart_uploads(Bucket=s3_bucket)
    assert uploads.get("Uploads", []) == []
    assert list(store.list_objects()) == []


def test_part_size_grows_so_no_body_needs_more_than_10000_parts() -> None:
    store = S3Store("bkt", multipart_chunksize=5 * MiB)

    assert store._part_size(12 * MiB) == 5 * MiB
    huge = 5 * 1024 * 1024 * MiB  # 5 TiB, S3's largest object
    assert store._part_size(huge) * MAX_PARTS >= huge


def test_part_size_below_s3_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        S3Store("bkt", multipart_chunksize=MiB)


def test_metadata_names_come_back_lowercase_with_values_intact(s3: S3Store) -> None:
    value = 'MiXeD Case {"a": [1, 2.5, "x y"]} \\u00e9 ~!@#$%^&*()'
    s3.put("k", b"x", {"S3IDX-Mixed-Case": value})

    assert s3.head("k").metadata == {"s3idx-mixed-case": value}
    assert s3.open("k").head.metadata == {"s3idx-mixed-case": value}


def test_plain_boto3_sees_s3idx_metadata_headers_within_2kb(
    s3: S3Store, s3_endpoint: str, s3_bucket: str
) -> None:
    entry = {"fs_id": "doc-1", "formula": "Fe2O3", "name": "Hématite", "n": 3}
    metadata = codec.build_metadata(
        entry, "fs_id", ["formula", "name", "n"], "json+zlib", "ab" * 32
    )
    s3.put("doc-1", b"body", metadata)

    raw = boto3.client("s3", endpoint_url=s3_endpoint).head_object(Bucket=s3_bucket, Key="p/doc-1")

    headers = raw["ResponseMetadata"]["HTTPHeaders"]
    for name, value in metadata.items():
        assert headers[f"x-amz-meta-{name}"] == value
    assert raw["Metadata"] == metadata
    assert codec.metadata_size(raw["Metadata"]) <= codec.MAX_METADATA_BYTES
    assert codec.parse_metadata(raw["Metadata"]).entry == entry


def test_objects_outside_the_prefix_are_not_listed(
    s3: S3Store, s3_endpoint: str, s3_bucket: str
) -> None:
    raw = boto3.client("s3", endpoint_url=s3_endpoint)
    for key in ("p", "p/", "pp/x", "other/p/x"):
        raw.put_object(Bucket=s3_bucket, Key=key, Body=b"")
    s3.put("mine", b"x", META)

    assert [o.key for o in s3.list_objects()] == ["mine"]


def test_list_follows_continuation_tokens(s3: S3Store) -> None:
    page = {"ETag": '"e"', "Size": 1, "Key": ""}
    with Stubber(s3.connection.client) as stub:
        stub.add_response(
            "list_objects_v2",
            {
                "IsTruncated": True,
                "NextContinuationToken": "t1",
                "Contents": [{**page, "Key": "p/a"}],
            },
            {"Bucket": s3.bucket, "Prefix": "p/", "StartAfter": "p/0"},
        )
        stub.add_response(
            "list_objects_v2",
            {"IsTruncated": False, "Contents": [{**page, "Key": "p/b"}]},
            {"Bucket": s3.bucket, "Prefix": "p/", "StartAfter": "p/0", "ContinuationToken": "t1"},
        )
        keys = [(o.key, o.etag) for o in s3.list_objects(start_after="0")]
        stub.assert_no_pending_responses()

    assert keys == [("a", "e"), ("b", "e")]


def test_delete_goes_in_batches_of_1000_and_reports_per_key_errors(s3: S3Store) -> None:
    keys = [f"k{i:04d}" for i in range(1001)]
    with Stubber(s3.connection.client) as stub:
        stub.add_response(
            "delete_objects",
            {"Errors": [{"Key": "p/k0007", "Code": "AccessDenied", "Message": "Access Denied"}]},
            {
                "Bucket": s3.bucket,
                "Delete": {"Objects": [{"Key": f"p/{k}"} for k in keys[:1000]], "Quiet": True},
            },
        )
        stub.add_response(
            "delete_objects",
            {},
            {"Bucket": s3.bucket, "Delete": {"Objects": [{"Key": "p/k1000"}], "Quiet": ANY}},
        )
        failures = s3.delete(keys)
        stub.assert_no_pending_responses()

    assert [(f.key, f.reason) for f in failures] == [("k0007", "AccessDenied: Access Denied")]


def test_delete_of_nothing_makes_no_request(s3: S3Store) -> None:
    with Stubber(s3.connection.client):
        assert s3.delete([]) == []


def test_conditional_delete_is_one_delete_object_with_if_match_per_key(s3: S3Store) -> None:
    calls: list[dict[str, Any]] = []
    lock = threading.Lock()

    # Keys are deleted from several threads: answered by key, not in the order of the calls.
    def delete_object(**params: Any) -> Any:
        with lock:
            calls.append(params)
        if params["Key"] == "p/c":
            raise client_error("PreconditionFailed", "At least one", 412, "DeleteObject")
        return {}

    s3.connection.client.delete_object = delete_object
    failures = s3.delete(["a", "b", "c"], if_match={"a": "e1", "b": "e2", "c": "e3"})

    assert [(f.key, f.changed) for f in failures] == [("c", True)]
    assert s3.conditional_deletes_supported
    assert sorted(calls, key=lambda c: c["Key"]) == [
        {"Bucket": s3.bucket, "Key": f"p/{key}", "IfMatch": f'"{etag}"'}
        for key, etag in (("a", "e1"), ("b", "e2"), ("c", "e3"))
    ]


def test_server_without_conditional_deletes_gets_a_head_first_and_says_so(s3: S3Store) -> None:
    s3.put("same", b"x", META)
    stale = s3.put("newer", b"one", META)
    s3.put("newer", b"two", META)
    real_delete = s3.connection.client.delete_object
    calls: list[dict[str, Any]] = []

    def delete_object(**params: Any) -> Any:  # a server that refuses If-Match on DeleteObject
        calls.append(params)
        if "IfMatch" in params:
            raise client_error("NotImplemented", "not implemented", 501, "DeleteObject")
        return real_delete(**params)

    s3.connection.client.delete_object = delete_object
    etags = {"same": s3.head("same").etag, "newer": stale.etag, "gone": "e"}
    failures = s3.delete(["same", "newer", "gone"], if_match=etags)

    assert [(f.key, f.changed) for f in failures] == [("newer", True)]
    assert not s3.conditional_deletes_supported
    assert sorted(o.key for o in s3.list_objects()) == ["newer"]
    # One conditional request only: after the server refused it, no other is sent.
    assert ["IfMatch" in c for c in calls] == [True, False]


@pytest.mark.parametrize("conditional", [True, False], ids=["if-match", "head-first"])
def test_a_conditional_delete_asks_still_wanted_again_as_its_request_leaves(
    s3: S3Store, conditional: bool
) -> None:
    """``still_wanted`` is asked once more by botocore's before-send, after the request was
    built and signed: a thread paused between the first answer and the send (a stopped
    process) finds out then, and sends nothing."""
    put = s3.put("k", b"x", META)
    s3.conditional_deletes_supported = conditional
    answers: list[bool] = []
    heard: list[tuple[str, bool]] = []

    def still_wanted(key: str) -> bool:
        answers.append(not answers)  # yes the first time, no after that
        return answers[-1]

    sent = s3.requests.value
    failures = s3.delete(
        ["k"],
        if_match={"k": put.etag},
        done=lambda key, removed: heard.append((key, removed)),
        still_wanted=still_wanted,
    )

    assert (failures, heard, answers) == ([], [("k", False)], [True, False])
    assert s3.requests.value - sent == (0 if conditional else 1)  # the HEAD first, no DELETE
    assert s3.head("k").etag == put.etag


# --- buckets ---------------------------------------------------------------------------------


def test_missing_bucket_is_not_found_everywhere_with_a_create_bucket_hint(
    s3_endpoint: str,
) -> None:
    store = make_store(s3_endpoint, "no-such-bucket")
    calls = {
        "put": lambda: store.put("k", b"x", META),
        "head": lambda: store.head("k"),
        "open": lambda: store.open("k"),
        "list": lambda: list(store.list_objects()),
        "delete": lambda: store.delete(["k"]),
    }
    for name, call in calls.items():
        with pytest.raises(NotFoundError) as excinfo:
            call()
        assert not isinstance(excinfo.value, ObjectNotFoundError), name
        assert excinfo.value.message == "bucket 'no-such-bucket' does not exist", name
        assert "--create-bucket" in str(excinfo.value), name


def test_create_bucket_creates_it_on_the_first_put_only(s3_endpoint: str) -> None:
    store = make_store(s3_endpoint, "made-on-put", create_bucket=True)

    with pytest.raises(NotFoundError, match="created by the first put"):
        list(store.list_objects())  # reads never create a bucket
    store.put("k", b"x", META)

    assert [o.key for o in store.list_objects()] == ["k"]


def test_concurrent_first_puts_create_the_bucket_once(s3_endpoint: str) -> None:
    store = make_store(s3_endpoint, "made-by-many", create_bucket=True)
    keys = [f"k{i}" for i in range(16)]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: store.put(k, b"x", META), keys))

    assert sorted(o.key for o in store.list_objects()) == sorted(keys)


def test_bucket_created_outside_us_east_1_gets_its_location_constraint(
    s3_endpoint: str,
) -> None:
    store = make_store(s3_endpoint, "made-in-eu", create_bucket=True, region="eu-west-1")

    store.put("k", b"x", META)

    location = store.connection.client.get_bucket_location(Bucket="made-in-eu")
    assert location["LocationConstraint"] == "eu-west-1"


def test_head_of_missing_key_asks_about_the_bucket_only_once(s3: S3Store) -> None:
    with Stubber(s3.connection.client) as stub:
        stub.add_client_error("head_object", "404", "Not Found", 404)
        stub.add_response("head_bucket", {}, {"Bucket": s3.bucket})
        stub.add_client_error("head_object", "404", "Not Found", 404)
        for _ in range(2):
            with pytest.raises(ObjectNotFoundError):
                s3.head("missing")
        stub.assert_no_pending_responses()


# --- credentials and profiles ----------------------------------------------------------------


def test_missing_credentials_are_access_denied(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    store = make_store(s3_endpoint, s3_bucket)

    with pytest.raises(AccessDeniedError, match="no AWS credentials found for s3://"):
        store.head("k")


def test_unknown_key_id_is_access_denied_without_secrets(
    s3_endpoint: str, s3_bucket: str, moto_auth: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SECRET_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    store = make_store(s3_endpoint, s3_bucket)

    for call in (lambda: store.put("k", b"x", META), lambda: list(store.list_objects())):
        with pytest.raises(AccessDeniedError) as excinfo:
            call()
        text = str(excinfo.value)
        assert "InvalidAccessKeyId" in text
        assert f"s3://{s3_bucket}/p" in text
        assert SECRET_KEY_ID not in text
        assert SECRET_ACCESS_KEY not in text
    with pytest.raises(AccessDeniedError, match="403"):
        store.head("k")  # a HEAD answer carries only the status


def write_aws_files(aws_dir: Path, config: str, credentials: str) -> None:
    (aws_dir / "config").write_text(config)
    (aws_dir / "credentials").write_text(credentials)


PROFILES = """\
[profile base]
region = eu-west-2

[profile child]
source_profile = base
role_arn = arn:aws:iam::123456789012:role/s3idx-test
role_session_name = s3idx-test
region = eu-central-1
"""
CREDENTIALS = f"""\
[base]
aws_access_key_id = {SECRET_KEY_ID}
aws_secret_access_key = {SECRET_ACCESS_KEY}
"""


def test_profile_supplies_region_and_credentials(
    fake_aws_env: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    write_aws_files(fake_aws_env, PROFILES, CREDENTIALS)

    store = make_store(s3_endpoint, s3_bucket, profile="base", region=None)

    assert store.connection.region == "eu-west-2"
    credentials = store.connection.session.get_credentials()
    assert credentials is not None
    # The explicit profile wins over the AWS_ACCESS_KEY_ID=testing of the environment.
    assert credentials.get_frozen_credentials().access_key == SECRET_KEY_ID
    assert credentials.method == "shared-credentials-file"
    store.put("k", b"x", META)
    assert store.head("k").size == 1


def test_explicit_region_beats_the_profile(fake_aws_env: Path) -> None:
    write_aws_files(fake_aws_env, PROFILES, CREDENTIALS)

    assert S3Store("bkt", profile="base", region="ap-south-1").connection.region == "ap-south-1"


def test_source_profile_role_chain_is_followed(
    fake_aws_env: Path, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_aws_files(fake_aws_env, PROFILES, CREDENTIALS)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", s3_endpoint)  # moto answers AssumeRole too

    store = make_store(s3_endpoint, s3_bucket, profile="child", region=None)

    assert store.connection.region == "eu-central-1"
    credentials = store.connection.session.get_credentials()
    assert credentials is not None
    assert credentials.method == "assume-role"
    assumed = credentials.get_frozen_credentials()
    assert assumed.access_key != SECRET_KEY_ID
    assert assumed.token
    store.put("k", b"x", META)
    assert [o.key for o in store.list_objects()] == ["k"]


def test_unknown_profile_is_a_usage_error_naming_the_profiles(fake_aws_env: Path) -> None:
    write_aws_files(fake_aws_env, PROFILES, CREDENTIALS)

    with pytest.raises(UsageError) as excinfo:
        S3Store("bkt", "p", profile="nope")

    text = str(excinfo.value)
    assert "AWS profile 'nope' is not defined; profiles: base, child " in text
    assert "--aws-profile" in text
    assert "s3://bkt/p" in text


# --- unreachable endpoints -------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_refused_connection_is_backend_unavailable_fast() -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = S3Store(
        "bkt", "p", endpoint_url=endpoint, region=S3_TEST_REGION, max_attempts=1, connect_timeout=2
    )

    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as excinfo:
        store.head("k")

    assert time.monotonic() - started < 5
    assert not isinstance(excinfo.value, TransientError)
    text = str(excinfo.value)
    assert endpoint in text
    assert "s3://bkt/p/k" in text
    assert "Connection refused" in text
    assert "--endpoint-url" in text


def test_malformed_endpoint_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="endpoint"):
        S3Store("bkt", endpoint_url="not a url")


# --- the error table -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchBucket", 404, NotFoundError),
        ("NoSuchKey", 404, ObjectNotFoundError),
        ("404", 404, ObjectNotFoundError),
        # Denied for this key (a bucket policy, a KMS key): commands over many go on.
        ("AccessDenied", 403, ObjectAccessDeniedError),
        ("403", 403, ObjectAccessDeniedError),
        ("Forbidden", 403, ObjectAccessDeniedError),
        ("AllAccessDisabled", 403, AccessDeniedError),
        ("InvalidAccessKeyId", 403, AccessDeniedError),
        ("SignatureDoesNotMatch", 403, AccessDeniedError),
        ("ExpiredToken", 400, AccessDeniedError),
        ("MetadataTooLarge", 400, MetadataTooLargeError),
        ("SlowDown", 503, TransientError),
        ("503", 503, TransientError),
        ("500", 500, TransientError),
        ("InternalError", 500, TransientError),
        ("RequestTimeout", 400, TransientError),
        ("InvalidBucketName", 400, UsageError),
        ("SomethingNew", 400, S3idxError),
    ],
)
def test_error_codes_map_to_s3idx_errors(code: str, status: int, expected: type) -> None:
    exc = translate_error(client_error(code, "server says", status), bucket="bkt", key="a/b")

    assert type(exc) is expected
    if expected is ObjectNotFoundError:
        assert str(exc) == "no such object: a/b"
    elif expected is NotFoundError:
        assert exc.message == "bucket 'bkt' does not exist"
    else:
        assert f"{code}: server says" in exc.message
        assert "s3://bkt/a/b" in exc.message


@pytest.mark.parametrize("code", ["AccessDenied", "403"])
def test_access_denied_without_a_key_is_no_objects(code: str) -> None:
    exc = translate_error(client_error(code, status=403, op="ListObjectsV2"), bucket="bkt")

    assert type(exc) is AccessDeniedError
    assert exc.exit_status == ExitStatus.ACCESS_DENIED


def test_not_found_without_a_key_means_the_bucket() -> None:
    exc = translate_error(client_error("404", status=404, op="HeadBucket"), bucket="bkt")

    assert type(exc) is NotFoundError
    assert exc.message == "bucket 'bkt' does not exist"


def test_transient_error_says_how_often_botocore_retried() -> None:
    error = client_error("SlowDown", "Please reduce your request rate.", 503)
    error.response["ResponseMetadata"]["RetryAttempts"] = 4

    exc = translate_error(error, bucket="bkt", key="k")

    assert isinstance(exc, TransientError)
    assert "(after 4 retries)" in exc.message


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("SignatureDoesNotMatch", AccessDeniedError),
        ("ExpiredToken", AccessDeniedError),
        ("SlowDown", TransientError),
        ("MetadataTooLarge", MetadataTooLargeError),
    ],
)
def test_store_calls_translate_stubbed_errors(s3: S3Store, code: str, expected: type) -> None:
    with Stubber(s3.connection.client) as stub:
        stub.add_client_error("put_object", code, "server says", 403)
        with pytest.raises(expected) as excinfo:
            s3.put("k", b"x", META)
    assert "s3://" + s3.bucket + "/p/k" in str(excinfo.value)


def test_stubbed_failures_while_reading_and_listing(s3: S3Store) -> None:
    with Stubber(s3.connection.client) as stub:
        stub.add_client_error("get_object", "AccessDenied", "Access Denied", 403)
        stub.add_client_error("list_objects_v2", "InternalError", "oops", 500)
        stub.add_client_error("delete_objects", "SlowDown", "slow", 503)
        with pytest.raises(AccessDeniedError):
            s3.open("k")
        with pytest.raises(TransientError):
            list(s3.list_objects())
        with pytest.raises(TransientError):
            s3.delete(["k"])


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (NoCredentialsError(), AccessDeniedError),
        (EndpointConnectionError(endpoint_url="http://h:1/b"), BackendUnavailableError),
        (ReadTimeoutError(endpoint_url="http://h:1/b"), TransientError),
        (ConnectionClosedError(endpoint_url="http://h:1/b"), TransientError),
    ],
)
def test_botocore_exceptions_map_to_s3idx_errors(error: Exception, expected: type) -> None:
    exc = translate_error(error, bucket="bkt", key="k", endpoint="http://h:1")

    assert type(exc) is expected
    assert "s3://bkt/k" in exc.message


def test_secrets_never_appear_in_error_text() -> None:
    token = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD" * 3
    vendor = (
        f"The AWS Access Key Id {SECRET_KEY_ID} with secret {SECRET_ACCESS_KEY} and "
        f"token {token}: Credential={SECRET_KEY_ID}/20250101/us-east-1/s3/aws4_request, "
        "Signature=0123456789abcdef0123456789abcdef"
    )
    errors = [
        client_error("InvalidAccessKeyId", vendor, 403),
        client_error("SignatureDoesNotMatch", vendor, 403),
        client_error("WeirdNewCode", vendor, 400),
        CredentialRetrievalError(provider="custom-process", error_msg=vendor),
        EndpointConnectionError(endpoint_url=f"http://user:{SECRET_ACCESS_KEY}@h/"),
    ]
    for error in errors:
        text = str(
            translate_error(
                error, bucket="bkt", key="k", endpoint=f"http://user:{SECRET_ACCESS_KEY}@h/"
            )
        )
        for secret in (SECRET_KEY_ID, SECRET_ACCESS_KEY, token, "0123456789abcdef01"):
            assert secret not in text, (type(error).__name__, text)
        assert "s3://bkt/k" in text


def test_redacting_vendor_text_keeps_ordinary_text() -> None:
    text = "The specified bucket does not exist (bucket my-bucket-2024, key a/b/c.json)"
    assert redact(text, vendor_text=True) == text


def test_redacting_vendor_text_hides_credential_shapes_that_own_text_keeps() -> None:
    vendor = f"key {SECRET_KEY_ID}, Signature=0123456789abcdef, eyJhbGciOi.eyJzdWIi.sig"
    assert redact(vendor, vendor_text=True) == "key ***, Signature=***, ***"
    # s3idx's own text keeps a 40-character run: there it is a document key or a hash.
    digest = "a" * 64
    assert redact(f"sha256 {digest}") == f"sha256 {digest}"


class FakeBody:
    """A response body that fails after its first chunk, as a dropped connection does."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.closed = False

    def iter_chunks(self, chunk_size: int) -> Iterator[bytes]:
        yield b"first"
        if self.error is not None:
            raise self.error
        yield b"second"

    def close(self) -> None:
        self.closed = True


def test_body_interrupted_while_streaming_is_transient_and_closed() -> None:
    store = S3Store("bkt", "p")
    body = FakeBody(ResponseStreamingError(error="Connection broken: IncompleteRead"))

    chunks = store._stream(body, "k", 10, Watch(60, lambda: None))
    assert next(chunks) == b"first"
    with pytest.raises(TransientError, match="s3://bkt/p/k"):
        next(chunks)
    assert body.closed


def test_body_is_closed_when_the_reader_stops_early() -> None:
    body = FakeBody()
    watch = Watch(60, lambda: None)
    chunks = S3Store("bkt")._stream(body, "k", 10, watch)

    assert next(chunks) == b"first"
    chunks.close()

    assert body.closed
    assert watch.cancelled  # its deadline no longer watched


def test_a_store_built_directly_makes_no_retries_of_its_own(
    s3_endpoint: str, s3_bucket: str
) -> None:
    # The engine's RetryingStore retries; botocore's retries inside would multiply the attempts.
    with S3Proxy(s3_endpoint, slow_down_rate=1.0) as proxy:
        store = S3Store(s3_bucket, "p", endpoint_url=proxy.url, region=S3_TEST_REGION)
        with pytest.raises(TransientError) as excinfo:
            store.put("k", b"x", META)
    assert excinfo.value.throttled
    assert proxy.requests["PUT"] == 1


# --- request counts (issue 15) -----------------------------------------------------------------


def test_each_list_page_and_multipart_call_is_a_request(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(
        s3_endpoint, s3_bucket, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB
    )
    before = store.requests.value
    store.put("big", os.urandom(11 * MiB), META)  # create, 3 parts, complete
    assert store.requests.value - before == 5

    for key in ("a", "b", "c"):
        store.put(key, b"x", META)
    real_list = store.connection.client.list_objects_v2
    monkeypatch.setattr(
        store.connection.client, "list_objects_v2", lambda **p: real_list(**p, MaxKeys=2)
    )
    before = store.requests.value
    assert [o.key for o in store.list_objects()] == ["a", "b", "big", "c"]
    assert store.requests.value - before == 2

    before = store.requests.value
    assert store.delete([f"gone{i}" for i in range(1001)]) == []  # two DeleteObjects
    assert store.requests.value - before == 2


# --- conditional puts (--rewrite) -------------------------------------------------------------


def test_a_conditional_multipart_put_is_refused_over_a_changed_object(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(
        s3_endpoint, s3_bucket, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB
    )
    first = store.put("big", b"small first", META)
    conditions: list[str | None] = []
    real_complete = store.connection.client.complete_multipart_upload

    def complete(**params: Any) -> Any:
        conditions.append(params.get("IfMatch"))
        return real_complete(**params)

    monkeypatch.setattr(store.connection.client, "complete_multipart_upload", complete)
    data = os.urandom(6 * MiB)

    receipt = store.put("big", data, META, if_match=first.etag)
    # AWS compares at completion; moto ignores If-Match there, so a HEAD compares first.
    assert conditions == [f'"{first.etag}"']
    assert store.open("big").read() == data
    with pytest.raises(ObjectChangedError):
        store.put("big", os.urandom(6 * MiB), META, if_match=first.etag)
    assert store.head("big").etag == receipt.etag


@pytest.mark.parametrize(
    ("code", "status"), [("PreconditionFailed", 412), ("ConditionalRequestConflict", 409)]
)
def test_a_refused_condition_is_an_object_changed_error(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, code: str, status: int
) -> None:
    store = make_store(s3_endpoint, s3_bucket)
    first = store.put("k", b"one", META)

    def refuse(**params: Any) -> Any:
        raise client_error(code, "another writer", status, "PutObject")

    monkeypatch.setattr(store.connection.client, "put_object", refuse)

    with pytest.raises(ObjectChangedError):
        store.put("k", b"two", META, if_match=first.etag)


def test_a_server_without_conditional_puts_compares_by_a_head_first(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(s3_endpoint, s3_bucket)
    first = store.put("k", b"one", META)
    real_put = store.connection.client.put_object

    def no_if_match(**params: Any) -> Any:
        if "IfMatch" in params:
            raise client_error("NotImplemented", "If-Match is not supported", 501, "PutObject")
        return real_put(**params)

    monkeypatch.setattr(store.connection.client, "put_object", no_if_match)

    second = store.put("k", b"two", META, if_match=first.etag)

    assert store.conditional_puts_supported is False
    assert store.open("k").read() == b"two"
    with pytest.raises(ObjectChangedError):
        store.put("k", b"three", META, if_match=first.etag)  # refused by the HEAD's ETag
    with pytest.raises(ObjectChangedError):
        store.put("gone", b"x", META, if_match=second.etag)  # no object: nothing to replace
    assert store.open("k").read() == b"two"
    assert [o.key for o in store.list_objects()] == ["k"]
