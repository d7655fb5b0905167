"""S3 answers a well-behaved server never gives: redirects, listings that do not progress.

Each is a clear error with its exit status on every transport, never a traceback, a
RecursionError or a listing paged for ever.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.helpers import Run, jsonl, subprocess_env
from tests.s3proxy import S3Proxy

DOCS = [{"fs_id": f"doc-{i}", "v": i} for i in range(3)]
TRANSPORTS = ["boto3", "obstore", "http"]
READING = (("get", "doc-0"), ("sync", "--check"), ("rebuild-index",), ("verify",))

PERMANENT_REDIRECT = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PermanentRedirect</Code>'
    b"<Message>The bucket you are attempting to access must be addressed using the specified "
    b"endpoint. Please send all future requests to this endpoint.</Message>"
    b"<Bucket>bucket</Bucket><Endpoint>bucket.s3.eu-west-1.amazonaws.com</Endpoint></Error>"
)


class _Redirecting(BaseHTTPRequestHandler):
    """Answers every request with the server's ``answer``: a redirect."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, headers, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

    def log_message(self, *args: Any) -> None:
        pass


REDIRECTS = {
    # S3's answer for a bucket of another region, as a server or proxy that does not add the
    # x-amz-bucket-region header gives it: botocore looked the region up by a HeadBucket, which
    # was redirected too, and so on until RecursionError.
    "permanent-redirect": (301, {"Content-Type": "application/xml"}, PERMANENT_REDIRECT),
    # A web front that moves http:// to https:// (nginx, a load balancer).
    "moved-to-https": (
        301,
        {"Location": "https://s3.example.invalid/", "Content-Type": "text/html"},
        b"<html><body>301 Moved Permanently</body></html>",
    ),
    "temporary-redirect": (
        307,
        {"Location": "https://s3.example.invalid/", "Content-Type": "text/html"},
        b"",
    ),
}


@pytest.fixture(params=list(REDIRECTS))
def redirecting_endpoint(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    server.daemon_threads = True
    server.answer = REDIRECTS[request.param]  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield request.param, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


REDIRECT_HINT = (
    "hint: give the bucket's region with --region (or set it in the AWS profile); if "
    "--endpoint-url names a web front that redirects, give the URL S3 is served at"
)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_redirect_is_a_usage_error_naming_region_and_endpoint_on_every_command(
    run: Run, redirecting_endpoint: tuple[str, str], tmp_path: Path, transport: str
) -> None:
    if transport == "obstore":
        pytest.importorskip("obstore")
    redirect, endpoint = redirecting_endpoint
    where = ["--store", "s3://bucket/docs", "--endpoint-url", endpoint]
    where += ["--index", str(tmp_path / "i.sqlite3"), "--transport", transport]

    put = run("put", *where, "--json", input=jsonl(*DOCS))

    assert put.exit_code == ExitStatus.USAGE, put.stdout + put.stderr
    summary = orjson.loads(put.stdout)
    assert (summary["stored"], summary["retries"]) == (0, 0), summary
    assert summary["error"].startswith("S3 PutObject on s3://bucket/docs/doc-"), summary
    assert REDIRECT_HINT in put.stderr
    assert "Recursion" not in put.stderr

    for command in READING:
        result = run(*command, *where)
        assert "Recursion" not in result.stderr and "recursion" not in result.stderr, command
        if transport == "obstore" and command[0] == "get" and redirect != "permanent-redirect":
            # obstore follows a GET's Location itself (it has no setting not to), and reports
            # only that the host it was sent to cannot be reached.
            assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
            continue
        assert result.exit_code == ExitStatus.USAGE, (command, result.stdout, result.stderr)
        assert REDIRECT_HINT in result.stderr, command


# --- listings that do not progress ---------------------------------------------------------------


def _page(keys: list[str], token: str | None, *, truncated: bool) -> bytes:
    """A ListObjectsV2 answer for ``keys`` under the prefix ``docs/``."""
    contents = "".join(
        f"<Contents><Key>docs/{key}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>"
        f'<ETag>"0123456789abcdef0123456789abcdef"</ETag><Size>10</Size></Contents>'
        for key in keys
    )
    next_token = f"<NextContinuationToken>{token}</NextContinuationToken>" if token else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult '
        'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bucket</Name>'
        f"<Prefix>docs/</Prefix><KeyCount>{len(keys)}</KeyCount><MaxKeys>1000</MaxKeys>"
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{next_token}{contents}"
        "</ListBucketResult>"
    ).encode()


# (keys, token, truncated) of the first page, and of the page asked with the token "t1".
LISTINGS = {
    "truncated-without-token": ((["doc-0"], None, True), None),
    "the-same-page-again": ((["doc-0", "doc-1"], "t1", True), (["doc-0", "doc-1"], "t1", True)),
    "empty-pages-with-the-same-token": (([], "t1", True), ([], "t1", True)),
    "a-key-on-two-pages": ((["doc-0", "doc-1"], "t1", True), (["doc-1", "doc-2"], None, False)),
    "keys-out-of-order": ((["doc-1", "doc-0"], None, False), None),
}
LISTING_ERRORS = {
    "truncated-without-token": "a page says more follow but gives no continuation token",
    "the-same-page-again": "it lists 'doc-0' after 'doc-1'",
    "empty-pages-with-the-same-token": "a page gives back the continuation token it was "
    "asked with, so the listing would never end",
    "a-key-on-two-pages": "it lists 'doc-1' after 'doc-1'",
    "keys-out-of-order": "it lists 'doc-0' after 'doc-1'",
}


def _listing(case: str) -> Callable[[str], bytes | None]:
    first, next_page = LISTINGS[case]

    def answer(path: str) -> bytes | None:
        if "prefix=docs%2F&" not in path + "&":
            return None  # s3idx's own objects (manifests): the server's listing
        keys, token, truncated = next_page if "continuation-token=t1" in path else first
        return _page(keys, token, truncated=truncated)

    return answer


@pytest.mark.parametrize("case", list(LISTINGS))
def test_a_listing_that_does_not_progress_is_unavailable_not_a_loop_or_a_bug(
    run: Run, s3_endpoint: str, tmp_path: Path, case: str
) -> None:
    index = ["--index", str(tmp_path / "i.sqlite3")]
    direct = ["--store", "s3://bucket/docs", "--endpoint-url", s3_endpoint, *index]
    assert run("put", *direct, "--create-bucket", input=jsonl(*DOCS)).exit_code == 0
    env = subprocess_env(tmp_path / "home")
    env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

    with S3Proxy(s3_endpoint) as proxy:
        proxy.listing = _listing(case)
        where = ["--store", "s3://bucket/docs", "--endpoint-url", proxy.url, *index]
        for command in (("sync", "--check"), ("sync",), ("rebuild-index",), ("verify",)):
            # A process of its own, with a deadline: a listing paged for ever must fail the test.
            result = subprocess.run(
                [sys.executable, "-m", "s3idx", *command, *where],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == ExitStatus.UNAVAILABLE, (command, result.stderr)
            assert (
                f"s3idx: error: S3 ListObjectsV2 on s3://bucket/docs answered a listing no S3 "
                f"server gives: {LISTING_ERRORS[case]}\n" in result.stderr
            ), (command, result.stderr)
            assert (
                "hint: the S3 server (or a proxy before it) pages listings wrongly: check "
                "its version, or report it to its vendor" in result.stderr
            ), result.stderr

    # The failed rebuild-index and sync left the index as it was.
    assert run("sync", *direct, "--check").exit_code == 0
