"""No credential, token or URI secret is ever printed, not even a piece of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from s3idx.config import SECRET_FRAGMENT
from tests.helpers import Run, jsonl

ACCESS_KEY_ID = "AKIAZQXW3EXAMPLE7KEY"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzqEXAMPLEKEY"
SESSION_TOKEN = (  # a JWT: dots split it into segments shorter than the old 40-character rule
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzM2lkeC10ZXN0IiwiaWF0IjoxfQ.c2lnbmF0dXJlLXNlZ21lbnQtMTIz"
)
MONGO_PASSWORD = "Pa55w0rd-VerySecret"
MONGO_AWS_TOKEN = "IQoJb3JpZ2luX2VjEMongoSessionToken"
CERT_PASSWORD = "CertKeyPassw0rdSecret"
MONGO_URIS = [
    f"mongodb://s3idx:{MONGO_PASSWORD}@127.0.0.1:9/db?serverSelectionTimeoutMS=100"
    f"&tlsCertificateKeyFilePassword={CERT_PASSWORD}",
    f"mongodb://s3idx:{MONGO_PASSWORD}@127.0.0.1:9/db?serverSelectionTimeoutMS=100"
    f"&authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:{MONGO_AWS_TOKEN}",
    f"mongodb://s3idx:{MONGO_PASSWORD}@127.0.0.1:9/db?serverSelectionTimeoutMS=100"
    f"&authMechanismProperties=AWS_SESSION_TOKEN:{MONGO_AWS_TOKEN}",
]
STRAYS = ["", "\r", "\r\n", " "]  # as read from a CRLF file, or pasted with spaces

DOC = jsonl({"fs_id": "a", "v": 1})


def _assert_nothing_shown(output: str, *secrets: str) -> None:
    for secret in secrets:
        for start in range(len(secret) - SECRET_FRAGMENT + 1):
            piece = secret[start : start + SECRET_FRAGMENT]
            assert piece not in output, f"{piece!r} of a secret is shown in:\n{output}"


def _commands(store: list[str], index: list[str]) -> Iterator[tuple[list[str], bytes | None]]:
    for json in ([], ["--json"]):
        yield ["put", "--field", "v", *store, *index, *json], DOC
        yield ["get", "a", *store, *index], None
        yield ["query", "{}", "--full", *store, *index], None
        yield ["delete", "a", *store, *index, *json], None
        yield ["sync", *store, *index, *json], None
        yield ["sync", "--check", *store, *index, *json], None
        yield ["rebuild-index", *store, *index, *json], None
        yield ["info", *store, *index, *json], None


@pytest.mark.parametrize(
    ("transport", "stray"),
    [("boto3", stray) for stray in STRAYS] + [("obstore", ""), ("obstore", "\r")],
    ids=lambda value: repr(value) if value in STRAYS else value,
)
def test_aws_credentials_never_appear(
    run: Run,
    s3_endpoint: str,
    s3_bucket: str,
    moto_auth: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
    stray: str,
    transport: str,
) -> None:
    # moto checks them now: every request fails, and its answers name what it was sent.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID + stray)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY + stray)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN + stray)
    store = ["--store", f"s3://{s3_bucket}/docs", "--endpoint-url", s3_endpoint]
    store += ["--transport", transport]
    index = ["--index", f"{tmp_path}/index.sqlite3"]
    failures = 0
    for args, stdin in _commands(store, index):
        result = run(*args, input=stdin)
        failures += result.exit_code != 0
        _assert_nothing_shown(
            result.stdout + result.stderr, ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN
        )
        if "\r" in stray and result.exit_code != 0 and "put" in args:
            assert "contains a line break" in result.stderr, result.stderr
            assert "cannot reach S3" not in result.stderr
    assert failures >= 10  # the failing paths were taken


@pytest.mark.parametrize("uri", MONGO_URIS, ids=["tls-password", "mongodb-aws", "properties"])
def test_mongodb_uri_secrets_never_appear(run: Run, tmp_path: object, uri: str) -> None:
    store = ["--store", f"{tmp_path}/store"]
    failures = 0
    for args, stdin in _commands(store, ["--index", uri]):
        result = run(*args, input=stdin)
        failures += result.exit_code != 0
        _assert_nothing_shown(
            result.stdout + result.stderr, MONGO_PASSWORD, MONGO_AWS_TOKEN, CERT_PASSWORD
        )
    assert failures >= 10
