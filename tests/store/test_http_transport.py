"""The http transport: put's uploads signed and sent by s3idx's own event loop (store/http_put.py).

What is checked here, through the public interface where there is one: the signatures are
botocore's own (byte for byte), a server that verifies signatures accepts every upload (none
falls back to boto3), uploads the loop cannot finish are sent again through boto3 and counted
as retries, the objects read back as boto3's do, and the loop stands aside where botocore would
use a proxy. The uploader's behaviour against misbehaving servers is in test_http_uploader.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import select
import shutil
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotocoreCredentials

from s3idx.errors import ExitStatus
from s3idx.store import s3 as s3_module
from s3idx.store.s3 import HttpS3Store
from s3idx.store.sigv4 import Credentials, PutSigner
from tests.conftest import moto_api
from tests.helpers import Run, jsonl, moto_iam_key

DOCS = [{"fs_id": f"doc {i:03d}/é", "v": i, "meta": {"tag": f"t{i % 3}"}} for i in range(120)]


# --- signatures ------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzE//token=="])
@pytest.mark.parametrize(
    ("host", "region", "path"),
    [
        ("s3.eu-west-1.amazonaws.com", "eu-west-1", "/bucket/pre/a%20b/%C3%A9~x"),
        ("bucket.s3.amazonaws.com", "us-east-1", "/k"),
        ("127.0.0.1:9000", "us-east-1", "/bkt/p/doc%20000/%2B%26%3D"),
    ],
)
def test_signatures_are_botocore_s(token: str | None, host: str, region: str, path: str) -> None:
    body = b'x\x9c{"a": 1}'
    metadata = {
        "s3idx-codec": "json+zlib",
        "s3idx-entry": '{"k": "two  spaces", "x": " padded "}',
        "s3idx-key": "a b/é",
        "Mixed-Case": "v",
    }
    request = AWSRequest(
        "PUT",
        f"https://{host}{path}",
        data=body,
        headers={f"x-amz-meta-{name}": value for name, value in metadata.items()},
    )
    S3SigV4Auth(BotocoreCredentials("AKID", "SECRET/+", token), "s3", region).add_auth(request)
    amz_date = request.headers["X-Amz-Date"]

    signer = PutSigner(host, region)
    mine = dict(
        signer.headers(
            path,
            hashlib.sha256(body).hexdigest(),
            metadata,
            Credentials("AKID", "SECRET/+", token),
            amz_date,
        )
    )

    assert mine["Authorization"] == request.headers["Authorization"]
    assert mine["x-amz-content-sha256"] == request.headers["X-Amz-Content-SHA256"]
    if token:
        assert mine["x-amz-security-token"] == token


def test_a_new_day_or_secret_derives_a_new_signing_key() -> None:
    signer = PutSigner("h", "us-east-1")
    sha = hashlib.sha256(b"").hexdigest()
    sign = lambda secret, date: dict(  # noqa: E731
        signer.headers("/k", sha, {}, Credentials("AKID", secret), date)
    )["Authorization"]
    first = sign("s1", "20261202T235959Z")
    assert sign("s1", "20261203T000000Z") != first.replace("20261202", "20261203")
    assert sign("s2", "20261202T235959Z") != first
    assert sign("s1", "20261202T235959Z") == first


# --- against a server that checks signatures -------------------------------------------------


@pytest.fixture
def iam_user(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """moto checking every request's signature, and an IAM user allowed all of S3 and STS."""
    import boto3

    # The next three requests (the user, its policy, its key) are let through unchecked.
    moto_api(s3_endpoint, "reset-auth", b"3")
    try:
        user = f"writer-{uuid.uuid4().hex[:8]}"
        key_id, secret = moto_iam_key(s3_endpoint, user, ["s3:*", "sts:*"])
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        # Made before the put: uploads finding no bucket would go through boto3, which makes it.
        boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        ).create_bucket(Bucket="signed")
        yield {"id": key_id, "secret": secret}
    finally:
        moto_api(s3_endpoint, "reset-auth", b"inf")


def _put(run: Run, s3_endpoint: str, *extra: str) -> dict[str, int]:
    args = ["--store", "s3://signed/docs", "--endpoint-url", s3_endpoint, "--transport", "http"]
    result = run("put", *args, "--field", "v", "--json", *extra, input=jsonl(*DOCS))
    assert result.exit_code == 0, result.stderr
    summary: dict[str, int] = orjson.loads(result.stdout)
    return summary


def _read_back(run: Run, s3_endpoint: str) -> None:
    """Every document reads back whole, through boto3, and verify finds nothing amiss."""
    direct = ["--store", "s3://signed/docs", "--endpoint-url", s3_endpoint]
    got = run("get", *direct, *(d["fs_id"] for d in DOCS))
    assert got.exit_code == 0, got.stderr
    assert [orjson.loads(line) for line in got.stdout.splitlines()] == DOCS
    verify = run("verify", *direct)
    assert verify.exit_code == 0, verify.stdout + verify.stderr


def _count_boto3_uploads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The document keys boto3 uploads (the run is in this process; not the manifests)."""
    sent: list[str] = []
    upload = s3_module.S3Store._upload

    def counted(store: HttpS3Store, full_key: str, *args: Any) -> Any:
        if "/.s3idx/" not in full_key:
            sent.append(full_key)
        return upload(store, full_key, *args)

    monkeypatch.setattr(s3_module.S3Store, "_upload", counted)
    return sent


def test_a_server_checking_signatures_accepts_every_upload(
    run: Run, s3_endpoint: str, iam_user: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    through_boto3 = _count_boto3_uploads(monkeypatch)
    summary = _put(run, s3_endpoint)

    assert (summary["stored"], summary["rejected"]) == (len(DOCS), 0)
    assert summary["retries"] == 0
    assert through_boto3 == []  # not one upload had to go through boto3 instead
    _read_back(run, s3_endpoint)


def test_uploads_refused_on_the_loop_are_sent_again_through_boto3(
    run: Run, s3_endpoint: str, iam_user: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loop signs with a wrong secret: the server refuses each of its uploads (this also
    # shows the test above would fail if the signatures were wrong). A refused signature may
    # be the loop's own fault: boto3 sends the upload, and only its answer counts (a first
    # attempt of boto3's, not a retry: the same count as the boto3 transport's).
    wrong = Credentials(iam_user["id"], "not-the-secret")
    monkeypatch.setattr(s3_module, "_current", lambda credentials: wrong)
    through_boto3 = _count_boto3_uploads(monkeypatch)

    summary = _put(run, s3_endpoint)

    assert (summary["stored"], summary["rejected"]) == (len(DOCS), 0)
    assert summary["retries"] == 0
    assert len(through_boto3) == len(DOCS)
    _read_back(run, s3_endpoint)


# --- where the loop stands aside -------------------------------------------------------------


def test_an_environment_proxy_leaves_uploads_to_boto3(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    store = HttpS3Store("bkt", "p", endpoint_url=s3_endpoint)
    assert store.event_loop_uploader(4) is not None

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    assert store.event_loop_uploader(4) is None
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert store.event_loop_uploader(4) is not None


def test_aws_addressing_and_region_are_botocore_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """No endpoint URL: a virtual-hosted URL in the bucket's region, signed for that region."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    store = HttpS3Store("my-bucket", "pre", region="eu-west-1")
    uploader = store.event_loop_uploader(4)
    assert uploader is not None
    endpoint = uploader._endpoint
    assert (endpoint.tls, endpoint.hostname, endpoint.port, endpoint.base_path) == (
        True,
        "my-bucket.s3.eu-west-1.amazonaws.com",
        443,
        "/",
    )
    assert (uploader._signer.region, uploader._signer.service) == ("eu-west-1", "s3")
    assert store.requests.value == 0  # finding out sent nothing

    # The bucket's own host decides whether a proxy applies, as for botocore's requests.
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert store.event_loop_uploader(4) is None
    monkeypatch.setenv("NO_PROXY", "my-bucket.s3.eu-west-1.amazonaws.com")
    assert store.event_loop_uploader(4) is not None
    monkeypatch.setenv("NO_PROXY", "other-bucket.s3.eu-west-1.amazonaws.com")
    assert store.event_loop_uploader(4) is None


def test_objects_read_the_same_whichever_transport_wrote_them(
    run: Run, s3_endpoint: str, tmp_path: Path
) -> None:
    for transport in ("boto3", "http"):
        args = ["--store", f"s3://same/{transport}", "--endpoint-url", s3_endpoint]
        args += ["--index", str(tmp_path / f"{transport}.sqlite3"), "--transport", transport]
        put = run("put", *args, "--create-bucket", "-q", "--field", "v", input=jsonl(*DOCS))
        assert put.exit_code == 0, put.stderr

    store = {t: HttpS3Store("same", t, endpoint_url=s3_endpoint) for t in ("boto3", "http")}
    for doc in DOCS[:10]:
        heads = {t: s.head(doc["fs_id"]) for t, s in store.items()}
        assert heads["http"].etag == heads["boto3"].etag  # the same bytes (an MD5 ETag)
        assert heads["http"].metadata.keys() == heads["boto3"].metadata.keys()
        same = ("s3idx-codec", "s3idx-fields", "s3idx-format", "s3idx-key", "s3idx-sha256")
        for name in same:
            assert heads["http"].metadata[name] == heads["boto3"].metadata[name], name
        entry = orjson.loads(heads["http"].metadata["s3idx-entry"])
        assert (entry["fs_id"], entry["v"]) == (doc["fs_id"], doc["v"])


def test_credentials_the_loop_cannot_read_leave_each_upload_to_boto3(
    run: Run, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refresh_failed(credentials: object) -> Credentials:
        raise RuntimeError("the credential refresh failed")

    monkeypatch.setattr(s3_module, "_current", refresh_failed)
    args = ["--store", "s3://creds/docs", "--endpoint-url", s3_endpoint, "--transport", "http"]
    result = run("put", *args, "--create-bucket", "--field", "v", "--json", input=jsonl(*DOCS))

    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    # Each upload sent once, by boto3: not a retry.
    assert (summary["stored"], summary["retries"]) == (len(DOCS), 0)
    got = run("get", "--store", "s3://creds/docs", "--endpoint-url", s3_endpoint, DOCS[7]["fs_id"])
    assert orjson.loads(got.stdout) == DOCS[7]


# --- over TLS, end to end ----------------------------------------------------------------------


@pytest.fixture
def tls_endpoint(s3_endpoint: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """moto behind a TLS terminator with a self-signed certificate: (https URL, the cert)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    upstream = urlsplit(s3_endpoint)
    listener = socket.create_server(("127.0.0.1", 0))

    def relay(client: socket.socket) -> None:
        # One thread per connection, the handshake in it (one at a time would hold every
        # other client up), and an SSL socket is not read and written from two threads.
        try:
            secure = context.wrap_socket(client, server_side=True)
        except OSError:  # a client that does not trust the certificate
            client.close()
            return
        backend = socket.create_connection((upstream.hostname, upstream.port))
        try:
            while True:
                ready = [secure] if secure.pending() else None
                if ready is None:
                    ready, _, _ = select.select([secure, backend], [], [], 30)
                if not ready:
                    return
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (backend if source is secure else secure).sendall(data)
        except OSError:
            return
        finally:
            for sock in (secure, backend):
                with contextlib.suppress(OSError):
                    sock.close()

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=relay, args=(client,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"https://localhost:{listener.getsockname()[1]}", cert
    finally:
        listener.close()


def test_uploads_over_tls_trust_the_ca_bundle_botocore_trusts(
    run: Run, tls_endpoint: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, s3_endpoint: str
) -> None:
    url, cert = tls_endpoint
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
    args = ["--store", "s3://secure/docs", "--endpoint-url", url, "--transport", "http"]
    result = run("put", *args, "--create-bucket", "--field", "v", "--json", input=jsonl(*DOCS))

    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    # Only the first uploads, which found no bucket yet, went through boto3.
    assert summary["stored"] == len(DOCS)
    assert summary["retries"] <= 2 * 8, summary
    direct = ["--store", "s3://secure/docs", "--endpoint-url", s3_endpoint]
    got = run("get", *direct, DOCS[-1]["fs_id"])
    assert orjson.loads(got.stdout) == DOCS[-1]

    again = run("put", *args, "--field", "v", "--json", input=jsonl(*DOCS))
    assert orjson.loads(again.stdout)["retries"] == 0  # every upload on the loop, over TLS


def test_a_certificate_nobody_trusts_fails_the_put_clearly(
    run: Run, tls_endpoint: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = tls_endpoint
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    args = ["--store", "s3://secure/docs", "--endpoint-url", url, "--transport", "http"]
    result = run("put", *args, "--create-bucket", "--field", "v", input=jsonl(*DOCS[:3]))

    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    assert "certificate" in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr


def test_bodies_at_the_multipart_threshold_go_up_in_parts(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    """README: objects of the multipart threshold or more are multipart uploads (up to S3's
    5 TB, where one PUT stops at 5 GB); the loop sends single PUTs only, so it leaves those
    to boto3, and the smaller ones of the same run stay on the loop."""
    import base64
    import os

    from s3idx import Engine
    from s3idx.index.sqlite import SqliteIndex

    part = 5 << 20
    store = HttpS3Store(
        s3_bucket, "p", endpoint_url=s3_endpoint, multipart_threshold=part, multipart_chunksize=part
    )
    big = {"fs_id": "big", "blob": base64.b64encode(os.urandom(9 << 20)).decode()}
    with Engine(store, SqliteIndex(tmp_path / "i.sqlite3")) as engine:
        # Between smaller ones: those on the sockets are answered first, none timed out.
        result = engine.put_documents([*DOCS[:5], big, *DOCS[5:10]])
        assert (result.stored, result.retries) == (11, 0)
        assert engine.get("big") == big
        heads = {key: store.head(key) for key in ("big", DOCS[0]["fs_id"])}
    assert heads["big"].size >= part
    assert heads["big"].etag.strip('"').endswith("-2")  # two parts of 5 MiB and the rest
    assert "-" not in heads[DOCS[0]["fs_id"]].etag
