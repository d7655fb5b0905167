"""S3 answers a well-behaved server never gives: redirects, listings that do not progress.

Each is a clear error with its exit status on every transport, never a traceback, a
RecursionError or a listing paged for ever.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.helpers import Run, jsonl

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
