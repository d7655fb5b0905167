"""HttpUploader (s3idx/store/http_put.py) against small fake HTTP servers written here.

The uploader's contract, which every test pins in its own case: each PUT started comes back
exactly once, as Done (only for a 200 answer with an ETag) or as Failed (anything else: the
engine sends those again through boto3); nothing hangs; server misbehaviour never raises.

A fake server is a listening socket on 127.0.0.1 and one thread per accepted connection, which
reads whole requests (headers, then Content-Length bytes), records them, and sends what the
test's ``respond`` function returns for each. moto is not used: these are answers moto never
gives (throttling, garbage, connections closed at the wrong moment, no answer at all).
"""

from __future__ import annotations

import datetime
import hashlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from s3idx.errors import MetadataTooLargeError
from s3idx.store.http_put import Done, Endpoint, Failed, HttpUploader
from s3idx.store.sigv4 import Credentials, PutSigner

BASE_PATH = "/bucket/"


# --- fake servers ------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    connection: int  # which accepted TCP connection it came on (0, 1, ...)


@dataclass
class Reply:
    parts: Sequence[bytes] = ()  # sent one after the other, PAUSE apart
    close: bool = False  # close the connection once sent
    silent: bool = False  # never answer (hold the connection until the client goes)
    reset: bool = False  # with close: close with a TCP reset instead of a FIN


PAUSE = 0.03


def answer(
    status: int = 200,
    etag: str | None = '"etag"',
    body: bytes = b"",
    headers: Sequence[str] = (),
    *,
    length: bool = True,
) -> bytes:
    """An HTTP/1.1 answer with ``Content-Length`` (unless ``length`` is False)."""
    reason = {200: "OK", 403: "Forbidden", 503: "Slow Down"}.get(status, "Whatever")
    lines = [f"HTTP/1.1 {status} {reason}", "Server: fake"]
    if etag is not None:
        lines.append(f"ETag: {etag}")
    if length:
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def s3_error(code: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>whatever</Message><RequestId>R1</RequestId></Error>"
    ).encode()


def ok(request: Request, number: int) -> Reply:
    return Reply([answer(etag=f'"etag-{number}"')])


Respond = Callable[[Request, int], Reply]


class FakeServer:
    """Answers each request with ``respond(request, number)``; ``number`` counts requests
    received by the server, from 0, over all its connections."""

    def __init__(
        self,
        respond: Respond,
        *,
        tls: ssl.SSLContext | None = None,
        mute: bool = False,
        early: bool = False,
        address: str = "127.0.0.1",
    ) -> None:
        self._respond = respond
        self._tls = tls
        self._mute = mute  # accept connections but never read from them
        self._early = early  # answer once the headers are in, without reading the body
        self._listener = socket.create_server((address, 0))
        self._listener.settimeout(0.02)
        self.port: int = self._listener.getsockname()[1]
        self.requests: list[Request] = []
        self.connections = 0
        self.closed = threading.Event()  # set each time the server closes a connection itself
        self.errors: list[BaseException] = []  # what went wrong in the server's own code
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def stop(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                number = self.connections
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(sock, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        conn: Any = sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock.settimeout(2)
                try:
                    conn = self._tls.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError):
                    return  # a client that does not trust us: its business
            conn.settimeout(0.02)
            if self._mute:
                self._stop.wait()
                return
            buf = bytearray()
            while True:
                request = self._read_request(conn, buf, number)
                if request is None:
                    return
                with self._lock:
                    index = len(self.requests)
                    self.requests.append(request)
                reply = self._respond(request, index)
                if reply.silent:
                    while self._recv(conn):  # until the client closes (or the test ends)
                        pass
                    return
                for i, part in enumerate(reply.parts):
                    if i:
                        time.sleep(PAUSE)
                    conn.sendall(part)
                if reply.close:
                    if reply.reset:
                        # conn: the TLS socket took over the plain one's descriptor.
                        conn.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                        )
                    conn.close()
                    self.closed.set()
                    return
        except (ConnectionError, ssl.SSLError):
            pass  # the client went away
        except BaseException as exc:  # reported by the teardown
            self.errors.append(exc)
        finally:
            conn.close()

    def _recv(self, conn: Any) -> bytes:
        """The next bytes; b"" when the client closed or the server stops."""
        while not self._stop.is_set():
            try:
                return bytes(conn.recv(65536))
            except TimeoutError:
                continue
            except ssl.SSLWantReadError:
                continue
        return b""

    def _read_request(self, conn: Any, buf: bytearray, number: int) -> Request | None:
        while b"\r\n\r\n" not in buf:
            data = self._recv(conn)
            if not data:
                return None
            buf += data
        end = buf.index(b"\r\n\r\n")
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        del buf[: end + 4]
        method, path, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"header {name} sent twice"
            headers[name.lower()] = value.strip()
        length = 0 if self._early else int(headers.get("content-length", "0"))
        while len(buf) < length:
            data = self._recv(conn)
            if not data:
                return None
            buf += data
        body = bytes(buf[:length])
        del buf[:length]
        return Request(method, path, headers, body, number)


@dataclass
class Servers:
    started: list[FakeServer] = field(default_factory=list)

    def __call__(self, respond: Respond = ok, **kwargs: Any) -> FakeServer:
        server = FakeServer(respond, **kwargs)
        self.started.append(server)
        return server


@pytest.fixture
def servers() -> Iterator[Servers]:
    started = Servers()
    yield started
    for server in started.started:
        server.stop()
    for server in started.started:
        assert not server.errors, server.errors


@pytest.fixture
def uploaders() -> Iterator[Callable[..., HttpUploader]]:
    made: list[HttpUploader] = []

    def make(
        port: int,
        *,
        hostname: str = "127.0.0.1",
        scheme: str = "http",
        connections: int = 4,
        connect_timeout: float = 2.0,
        read_timeout: float = 2.0,
        key_prefix: str = "",
        ssl_context: ssl.SSLContext | None = None,
        token: str | None = None,
    ) -> HttpUploader:
        host_header = f"{hostname}:{port}"
        uploader = HttpUploader(
            Endpoint(scheme, hostname, port, host_header, BASE_PATH),
            PutSigner(host_header, "us-east-1"),
            lambda: Credentials("AKID", "SECRET", token),
            connections=connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            key_prefix=key_prefix,
            ssl_context=ssl_context,
        )
        made.append(uploader)
        return uploader

    yield make
    for uploader in made:
        uploader.close()


def bounded(work: Callable[[], Any], seconds: float) -> Any:
    """``work()``, run on another thread so that a hang fails the test instead of hanging it."""
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # raised again below
            error.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: the uploader hangs"
    if error:
        raise error[0]
    return result[0]


def collect(uploader: HttpUploader, count: int, seconds: float = 5.0) -> list[Done | Failed]:
    """Outcomes until at least ``count`` came back (``run`` returns at least what it waits
    for, and whatever else finished meanwhile)."""

    def drive() -> list[Done | Failed]:
        outcomes: list[Done | Failed] = []
        while len(outcomes) < count:
            outcomes += uploader.run(count - len(outcomes))
        return outcomes

    outcomes: list[Done | Failed] = bounded(drive, seconds)
    return outcomes


def put_all(
    uploader: HttpUploader, count: int, body: bytes = b"body", seconds: float = 5.0
) -> dict[int, Done | Failed]:
    """Starts ``count`` PUTs (tags 0..count-1) and returns each one's outcome by tag."""

    def go() -> list[Done | Failed]:
        for tag in range(count):
            uploader.start(tag, f"key-{tag}", body, {"n": str(tag)})
        return collect(uploader, count, seconds)

    outcomes: list[Done | Failed] = bounded(go, seconds + 1)
    by_tag = {outcome.tag: outcome for outcome in outcomes}
    assert sorted(by_tag) == list(range(count)), "each PUT comes back exactly once"
    assert uploader.in_flight == 0
    return by_tag


def only(outcomes: dict[int, Done | Failed]) -> Done | Failed:
    assert len(outcomes) == 1
    return outcomes[0]


def assert_failed(outcome: Done | Failed, status: int, code: str) -> Failed:
    assert isinstance(outcome, Failed), f"expected Failed, got Done({outcome.etag!r})"
    assert (outcome.status, outcome.code) == (status, code), outcome.reason
    return outcome


def assert_done(outcome: Done | Failed, etag: str) -> None:
    assert isinstance(outcome, Done), (
        f"expected Done, got Failed({outcome.status}, {outcome.code}, {outcome.reason})"
    )
    assert outcome.etag == etag


def botocore_signature(request: Request, host: str) -> tuple[str, str]:
    """(SignedHeaders, Signature) botocore computes for the request as the server got it."""
    signed = {name: value for name, value in request.headers.items() if name.startswith("x-amz-")}
    aws = AWSRequest(method="PUT", url=f"http://{host}{request.path}", headers=signed)
    aws.context["timestamp"] = request.headers["x-amz-date"]
    token = request.headers.get("x-amz-security-token")
    auth = S3SigV4Auth(BotoCredentials("AKID", "SECRET", token), "s3", "us-east-1")
    canonical = auth.canonical_request(aws)
    signature = auth.signature(auth.string_to_sign(aws, canonical), aws)
    return auth.signed_headers(auth.headers_to_sign(aws)), signature


# --- happy path --------------------------------------------------------------------------------


def test_a_request_is_dated_now_in_utc(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    """X-Amz-Date is the wall clock in UTC, as S3 checks it (within 15 minutes)."""
    server = servers()
    assert_done(only(put_all(uploaders(server.port), 1)), "etag-0")
    (request,) = server.requests
    sent = datetime.datetime.strptime(request.headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    assert abs((now - sent).total_seconds()) < 5
    assert request.headers["authorization"].split("/")[1] == sent.strftime("%Y%m%d")


def test_fifty_puts_over_four_connections_all_done_with_what_the_server_received(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    server = servers()
    uploader = uploaders(server.port, connections=4, key_prefix="pre/")
    bodies = {tag: f"body of {tag} ".encode() * (tag + 1) for tag in range(50)}
    for tag, body in bodies.items():
        uploader.start(tag, f"a b/é{tag}", body, {"s3idx-key": f"k{tag}", "Other": "x  y"})
    assert uploader.in_flight == 50

    outcomes = bounded(lambda: uploader.run(50), 5)

    assert len(outcomes) == 50, "run(50) returns once 50 finished"
    assert sorted(outcome.tag for outcome in outcomes) == list(range(50))
    assert uploader.in_flight == 0
    assert all(isinstance(outcome, Done) for outcome in outcomes)
    etags = {outcome.etag for outcome in outcomes}
    assert etags == {f"etag-{n}" for n in range(50)}, "the server's ETag, quotes removed"
    assert server.connections <= 4, "connections kept alive and reused"
    assert len(server.requests) == 50
    host = f"127.0.0.1:{server.port}"
    by_path = {request.path: request for request in server.requests}
    for tag, body in bodies.items():
        request = by_path[f"/bucket/pre/a%20b/%C3%A9{tag}"]
        assert request.method == "PUT"
        assert request.body == body
        assert request.headers["content-length"] == str(len(body))
        assert request.headers["host"] == host
        assert request.headers["x-amz-meta-s3idx-key"] == f"k{tag}"
        assert request.headers["x-amz-meta-other"] == "x  y"
        assert request.headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
        authorization = request.headers["authorization"]
        assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKID/")
        names, signature = botocore_signature(request, host)
        assert f"SignedHeaders={names}, Signature={signature}" in authorization


def test_keys_with_reserved_characters_are_quoted_and_signed_as_botocore_signs(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    keys = {
        "q?x#y%z+w=&;:,@$!'()*": "q%3Fx%23y%25z%2Bw%3D%26%3B%3A%2C%40%24%21%27%28%29%2A",
        "~t/../x//y/": "~t/../x//y/",
        "tab\tnew\nline": "tab%09new%0Aline",
    }
    server = servers()
    uploader = uploaders(server.port, connections=2, key_prefix="p re/", token="TOKEN/+=")
    for tag, key in enumerate(keys):
        uploader.start(tag, key, b"x", {"k": key.encode("unicode_escape").decode("ascii")})
    assert all(isinstance(outcome, Done) for outcome in collect(uploader, len(keys)))
    host = f"127.0.0.1:{server.port}"
    assert sorted(request.path for request in server.requests) == sorted(
        f"/bucket/p%20re/{quoted}" for quoted in keys.values()
    )
    for request in server.requests:
        assert request.headers["x-amz-security-token"] == "TOKEN/+="
        names, signature = botocore_signature(request, host)
        assert "x-amz-security-token" in names
        assert f"SignedHeaders={names}, Signature={signature}" in request.headers["authorization"]


def test_each_answer_is_matched_to_its_own_put(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    # The ETag names the key the server received: a Done with another PUT's ETag would show.
    def by_key(request: Request, number: int) -> Reply:
        return Reply([answer(etag=f'"{request.path.rsplit("/", 1)[1]}"')])

    server = servers(by_key)
    uploader = uploaders(server.port, connections=3)
    outcomes = put_all(uploader, 30)
    for tag, outcome in outcomes.items():
        assert_done(outcome, f"key-{tag}")


def test_answers_arriving_in_small_pieces(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    whole = answer(etag='"pieces"', body=b"<ok/>", headers=["x-amz-request-id: R"])
    pieces = [whole[i : i + 7] for i in range(0, len(whole), 7)]
    server = servers(lambda request, number: Reply(pieces))
    uploader = uploaders(server.port, connections=1)
    outcomes = put_all(uploader, 2)
    assert_done(outcomes[0], "pieces")
    assert_done(outcomes[1], "pieces")
    assert server.connections == 1


@pytest.mark.parametrize("size", [5 * 1024 * 1024])
def test_large_body_arrives_intact(
    servers: Servers, uploaders: Callable[..., HttpUploader], size: int
) -> None:
    body = bytes(range(256)) * (size // 256)
    server = servers()
    uploader = uploaders(server.port, connections=2)
    outcomes = put_all(uploader, 2, body)
    assert all(isinstance(outcome, Done) for outcome in outcomes.values())
    for request in server.requests:
        assert hashlib.sha256(request.body).hexdigest() == hashlib.sha256(body).hexdigest()
        assert request.headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()


def test_in_flight_counts_started_and_not_returned(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    server = servers()
    uploader = uploaders(server.port, connections=2)
    assert (uploader.in_flight, uploader.queued) == (0, 0)
    for tag in range(5):
        uploader.start(tag, f"k{tag}", b"x", {})
    assert uploader.in_flight == 5
    assert uploader.queued == 3, "two sent on the two connections, three wait"
    first = bounded(lambda: uploader.run(2), 5)
    assert len(first) >= 2
    assert uploader.in_flight == 5 - len(first)
    rest = collect(uploader, 5 - len(first))
    assert uploader.in_flight == 0
    assert sorted(outcome.tag for outcome in first + rest) == list(range(5))
    assert uploader.run(0) == []
    assert uploader.run(3) == [], "nothing under way: nothing to wait for"


# --- error answers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        (answer(503, None, s3_error("SlowDown")), 503, "SlowDown"),
        (answer(403, None, s3_error("AccessDenied")), 403, "AccessDenied"),
        (answer(404, None, s3_error("NoSuchBucket")), 404, "NoSuchBucket"),
        (answer(500, None, b""), 500, "500"),
        (answer(200, None, b""), 200, "200"),
        (answer(200, "", b""), 200, "200"),
    ],
    ids=["503-slowdown", "403-denied", "404-no-bucket", "500-no-body", "200-no-etag", "200-empty"],
)
def test_error_answers_are_failed_with_status_and_code(
    servers: Servers,
    uploaders: Callable[..., HttpUploader],
    reply: bytes,
    status: int,
    code: str,
) -> None:
    # The first PUT gets the error; the second, on the same kept-alive connection, succeeds.
    server = servers(lambda request, n: Reply([reply] if n == 0 else [answer(etag='"good"')]))
    uploader = uploaders(server.port, connections=1)
    uploader.start("bad", "k1", b"one", {})
    uploader.start("good", "k2", b"two", {})
    outcomes = {outcome.tag: outcome for outcome in collect(uploader, 2)}
    failed = assert_failed(outcomes["bad"], status, code)
    assert failed.message == ("whatever" if b"<Message>" in reply else "")
    assert_done(outcomes["good"], "good")
    assert server.connections == 1, "an error answer with a length keeps the connection"


def chunked(body: bytes, size: int = 10) -> bytes:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"


def test_chunked_answers(servers: Servers, uploaders: Callable[..., HttpUploader]) -> None:
    te = ["Transfer-Encoding: chunked"]
    replies = [
        answer(503, None, chunked(s3_error("SlowDown")), te, length=False),
        answer(200, '"chunky"', chunked(b""), te, length=False),
        answer(200, '"chunky2"', chunked(b"<some>body</some>"), te, length=False),
        # A chunk extension, a trailer, and data that ends like the last chunk.
        answer(
            200,
            '"chunky3"',
            b"5;name=value\r\nab\r\n0\r\n0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\n",
            te,
            length=False,
        ),
        answer(200, '"after"'),
    ]
    server = servers(lambda request, n: Reply([replies[n]]))
    uploader = uploaders(server.port, connections=1)
    for tag in range(5):
        uploader.start(tag, f"k{tag}", b"x", {})
    outcomes = {outcome.tag: outcome for outcome in collect(uploader, 5)}
    assert_failed(outcomes[0], 503, "SlowDown")
    assert_done(outcomes[1], "chunky")
    assert_done(outcomes[2], "chunky2")
    assert_done(outcomes[3], "chunky3")
    assert_done(outcomes[4], "after")
    assert server.connections == 1, "a chunked answer's end is found: the connection is reused"


@pytest.mark.parametrize("together", [True, False], ids=["one-packet", "two-packets"])
def test_answer_after_100_continue(
    servers: Servers, uploaders: Callable[..., HttpUploader], together: bool
) -> None:
    cont = b"HTTP/1.1 100 Continue\r\n\r\n"
    final = answer(etag='"after-continue"')
    parts = [cont + final] if together else [cont, final]
    server = servers(lambda request, n: Reply(parts))
    uploader = uploaders(server.port, connections=1)
    outcomes = put_all(uploader, 2)
    assert_done(outcomes[0], "after-continue")
    assert_done(outcomes[1], "after-continue")


def test_connection_close_answers_open_a_new_connection(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    def close_each(request: Request, n: int) -> Reply:
        return Reply([answer(etag=f'"c{n}"', headers=["Connection: close"])], close=True)

    server = servers(close_each)
    uploader = uploaders(server.port, connections=2)
    outcomes = put_all(uploader, 6)
    assert all(isinstance(outcome, Done) for outcome in outcomes.values())
    assert server.connections == 6, "one connection per PUT"
    assert len(server.requests) == 6


def test_answer_without_length_runs_until_the_server_closes(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    reply = answer(200, '"unbounded"', b"", length=False)
    server = servers(lambda request, n: Reply([reply], close=True))
    uploader = uploaders(server.port, connections=1)
    outcomes = put_all(uploader, 3)
    for outcome in outcomes.values():
        assert_done(outcome, "unbounded")
    assert server.connections == 3, "such an answer is not followed by another request"


@pytest.mark.parametrize(
    ("reply", "close"),
    [
        (b"garbage garbage\r\n\r\n", False),
        (b"HTTP/1.1 OK fine\r\n\r\n", False),
        (b"SSH-2.0-OpenSSH_9.6\r\n", True),
        (b"\x00\xff" * 100, True),
    ],
    ids=["no-status", "status-not-a-number", "other-protocol", "binary"],
)
def test_non_http_answers_are_failed(
    servers: Servers, uploaders: Callable[..., HttpUploader], reply: bytes, close: bool
) -> None:
    server = servers(lambda request, n: Reply([reply], close=close))
    uploader = uploaders(server.port, connections=1)
    outcome = assert_failed(only(put_all(uploader, 1)), 0, "ConnectionError")
    assert outcome.reason


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 200 OK\r\nETag: "e"\r\nContent-Length: many\r\n\r\n',
        answer(200, '"e"', b"zz\r\nabc\r\n0\r\n\r\n", ["Transfer-Encoding: chunked"], length=False),
        answer(200, '"e"', b"-6\r\nabc\r\n0\r\n\r\n", ["Transfer-Encoding: chunked"], length=False),
    ],
    ids=["content-length", "chunk-size", "negative-chunk-size"],
)
def test_bad_lengths_are_failed(
    servers: Servers, uploaders: Callable[..., HttpUploader], reply: bytes
) -> None:
    server = servers(lambda request, n: Reply([reply]))
    uploader = uploaders(server.port, connections=1)
    assert_failed(only(put_all(uploader, 1)), 0, "ConnectionError")


@pytest.mark.parametrize(
    "partial",
    [b"HTTP/1.1 200 OK\r\nETa", answer(etag='"e"', body=b"12345")[:-2]],
    ids=["half-headers", "half-body"],
)
def test_server_closing_mid_answer_is_failed(
    servers: Servers, uploaders: Callable[..., HttpUploader], partial: bytes
) -> None:
    server = servers(lambda request, n: Reply([partial], close=True))
    uploader = uploaders(server.port, connections=1)
    outcome = assert_failed(only(put_all(uploader, 1)), 0, "ConnectionError")
    assert "closed" in outcome.reason


@pytest.mark.parametrize("reused", [False, True], ids=["fresh", "reused"])
def test_error_answer_before_the_body_was_read_is_failed(
    servers: Servers, uploaders: Callable[..., HttpUploader], reused: bool
) -> None:
    # The server answers once it has the headers and closes with the body unread (a reset): the
    # client may read the answer or fail to send; never Done, never raised.
    def refuse(request: Request, n: int) -> Reply:
        if reused and n == 0:
            return Reply([answer(etag='"small"')])
        error = answer(403, None, s3_error("AccessDenied"), ["Connection: close"])
        return Reply([error], close=True)

    server = servers(refuse, early=True)
    uploader = uploaders(server.port, connections=1)
    if reused:
        uploader.start("small", "k", b"", {})
        assert_done(collect(uploader, 1)[0], "small")
    uploader.start("large", "k", b"x" * (16 * 1024 * 1024), {})
    outcome = bounded(lambda: collect(uploader, 1), 5)[0]
    assert outcome.tag == "large"
    assert isinstance(outcome, Failed)
    assert (outcome.status, outcome.code) in {(403, "AccessDenied"), (0, "ConnectionError")}
    # Sent again at most once, and only from the reused connection (it may have been stale).
    assert len(server.requests) <= (3 if reused else 1)


def test_server_closing_without_answer_is_failed_not_resent(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    # On a fresh connection no answer means the server may have seen the PUT and failed:
    # reported, not sent again (boto3 does that, with its own retry limits).
    server = servers(lambda request, n: Reply([], close=True))
    uploader = uploaders(server.port, connections=1)
    assert_failed(only(put_all(uploader, 1)), 0, "ConnectionError")
    assert len(server.requests) == 1


# --- connections closed while idle -------------------------------------------------------------


@pytest.mark.parametrize("noticed", [False, True], ids=["unnoticed", "noticed-by-run"])
@pytest.mark.parametrize("reset", [False, True], ids=["fin", "reset"])
def test_kept_alive_connection_closed_by_the_server_while_idle(
    servers: Servers, uploaders: Callable[..., HttpUploader], noticed: bool, reset: bool
) -> None:
    # The first answer says nothing of closing, then the server closes the connection: the
    # next PUT goes on a new connection (sent again there if it went on the dead one first).
    def close_first(request: Request, n: int) -> Reply:
        return Reply([answer(etag=f'"e{n}"')], close=n == 0, reset=reset)

    server = servers(close_first)
    uploader = uploaders(server.port, connections=1)
    uploader.start("first", "k1", b"one", {})
    assert_done(only({0: collect(uploader, 1)[0]}), "e0")
    assert server.closed.wait(2)
    time.sleep(0.05)  # the FIN (or reset) reaches the client's socket
    if noticed:
        assert uploader.run(0) == []
    uploader.start("second", "k2", b"two", {})
    outcome = collect(uploader, 1)[0]
    assert outcome.tag == "second"
    assert_done(outcome, "e1")
    assert [request.body for request in server.requests] == [b"one", b"two"]
    assert server.connections == 2


# --- timeouts and unreachable servers ------------------------------------------------------------


def test_server_that_never_answers_times_out(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    server = servers(lambda request, n: Reply(silent=True))
    uploader = uploaders(server.port, connections=2, read_timeout=0.5)
    began = time.monotonic()
    outcomes = put_all(uploader, 3, seconds=5)
    elapsed = time.monotonic() - began
    for outcome in outcomes.values():
        outcome = assert_failed(outcome, 0, "Timeout")
        assert "no answer within 0.5" in outcome.reason
        assert outcome.connected  # a read timeout, not a connect timeout
    # Two on the two connections, then the third once one of them was given up: two timeouts.
    assert 0.9 < elapsed < 5
    assert len(server.requests) == 3


def test_an_answer_trickled_under_the_read_timeout_times_out_at_its_total_deadline(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    # A byte every 30 ms is never 0.5 s of silence: the whole request has a deadline too.
    whole = answer(etag='"slow"', body=b"<ok/>" * 4)
    server = servers(lambda request, n: Reply([whole[i : i + 1] for i in range(len(whole))]))
    uploader = uploaders(server.port, connections=1, read_timeout=0.5)
    began = time.monotonic()
    outcome = assert_failed(only(put_all(uploader, 1, seconds=10)), 0, "Timeout")
    elapsed = time.monotonic() - began
    assert "not finished within 0.5" in outcome.reason, outcome.reason
    assert outcome.connected
    assert 0.4 < elapsed < 1.5, elapsed  # the answer alone would take over 3 s


def test_server_that_never_reads_a_large_body_times_out(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    server = servers(mute=True)
    uploader = uploaders(server.port, connections=1, read_timeout=0.5)
    began = time.monotonic()
    assert_failed(only(put_all(uploader, 1, b"x" * (8 * 1024 * 1024))), 0, "Timeout")
    assert time.monotonic() - began < 5


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_nothing_listening_is_failed(uploaders: Callable[..., HttpUploader]) -> None:
    uploader = uploaders(unused_port(), connections=2)
    outcomes = put_all(uploader, 5)
    for outcome in outcomes.values():
        failed = assert_failed(outcome, 0, "ConnectionError")
        # Never connected: unreachable, not a request lost on its way (which is retried).
        assert not failed.connected
        assert isinstance(failed.error, OSError)
        assert failed.error.strerror == "Connection refused"


def test_a_server_closing_each_connection_at_once_is_a_lost_request(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    server = servers(lambda request, n: Reply(close=True))
    uploader = uploaders(server.port, connections=2)
    for outcome in put_all(uploader, 3).values():
        assert assert_failed(outcome, 0, "ConnectionError").connected


def test_run_with_a_timeout_returns_after_it_even_with_nothing_finished(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    server = servers(lambda request, n: Reply(silent=True))
    uploader = uploaders(server.port, connections=1, read_timeout=5)
    uploader.start("t", "k", b"body", {})
    began = time.monotonic()
    assert uploader.run(1, timeout=0.2) == []
    assert 0.15 < time.monotonic() - began < 2
    assert uploader.in_flight == 1
    # Nothing under way: it waits the whole timeout (the pause before a retry).
    idle = uploaders(server.port, connections=1)
    began = time.monotonic()
    assert idle.run(0, timeout=0.2) == []
    assert 0.15 < time.monotonic() - began < 2


def test_unresolvable_hostname_is_failed(uploaders: Callable[..., HttpUploader]) -> None:
    uploader = uploaders(80, hostname="nonexistent.invalid", connections=2)
    outcomes = put_all(uploader, 3)
    for outcome in outcomes.values():
        assert_failed(outcome, 0, "ConnectionError")


# --- close -------------------------------------------------------------------------------------


def test_close_returns_puts_in_flight_as_failed(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    # One answered, two sent and never answered, one waiting for a connection.
    def answer_first(request: Request, n: int) -> Reply:
        return Reply([answer()]) if request.body == b"answered" else Reply(silent=True)

    server = servers(answer_first)
    uploader = uploaders(server.port, connections=2)
    uploader.start("answered", "k0", b"answered", {})
    uploader.start("silent-1", "k1", b"s1", {})
    uploader.start("silent-2", "k2", b"s2", {})
    uploader.start("queued", "k3", b"s3", {})
    seen: list[Done | Failed] = []
    deadline = time.monotonic() + 2
    while len(server.requests) < 3 and time.monotonic() < deadline:
        seen += bounded(lambda: uploader.run(0), 2)
        time.sleep(0.01)
    assert len(server.requests) == 3
    assert uploader.in_flight == 4 - len(seen)

    seen += uploader.close()

    outcomes = {outcome.tag: outcome for outcome in seen}
    assert len(seen) == len(outcomes) == 4, "each PUT once, by run or by close"
    assert_done(outcomes["answered"], "etag")
    for tag in ("silent-1", "silent-2", "queued"):
        assert_failed(outcomes[tag], 0, "ConnectionError")
    assert uploader.in_flight == 0
    assert uploader.run(0) == []
    assert uploader.run(5) == []
    assert uploader.close() == []


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key (openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A client context that trusts the test certificate."""
    return ssl.create_default_context(cafile=str(certificate[0]))


def test_tls_puts_done_with_a_trusted_certificate(
    servers: Servers,
    uploaders: Callable[..., HttpUploader],
    trusting: ssl.SSLContext,
    tls_server_context: ssl.SSLContext,
) -> None:
    server = servers(tls=tls_server_context)
    uploader = uploaders(
        server.port, scheme="https", hostname="localhost", connections=3, ssl_context=trusting
    )
    outcomes = put_all(uploader, 20)
    assert {outcome.etag for outcome in outcomes.values() if isinstance(outcome, Done)} == {
        f"etag-{n}" for n in range(20)
    }
    assert server.connections <= 3
    assert sorted(request.body for request in server.requests) == [b"body"] * 20


def test_tls_with_an_untrusted_certificate_is_failed(
    servers: Servers, uploaders: Callable[..., HttpUploader], tls_server_context: ssl.SSLContext
) -> None:
    server = servers(tls=tls_server_context)
    uploader = uploaders(
        server.port,
        scheme="https",
        hostname="localhost",
        connections=2,
        ssl_context=ssl.create_default_context(),
    )
    outcomes = put_all(uploader, 3)
    for outcome in outcomes.values():
        outcome = assert_failed(outcome, 0, "ConnectionError")
        assert "certificate" in outcome.reason
        assert not outcome.connected and isinstance(outcome.error, ssl.SSLError)
    assert server.requests == []


def test_tls_for_another_hostname_is_failed(
    servers: Servers,
    uploaders: Callable[..., HttpUploader],
    trusting: ssl.SSLContext,
    tls_server_context: ssl.SSLContext,
) -> None:
    # The certificate names localhost and 127.0.0.1, not 127.0.0.2 (a loopback address too).
    server = servers(tls=tls_server_context, address="127.0.0.2")
    uploader = uploaders(server.port, scheme="https", hostname="127.0.0.2", ssl_context=trusting)
    outcome = assert_failed(only(put_all(uploader, 1)), 0, "ConnectionError")
    assert "certificate" in outcome.reason
    assert server.requests == []


def test_tls_large_bodies_arrive_intact(
    servers: Servers,
    uploaders: Callable[..., HttpUploader],
    trusting: ssl.SSLContext,
    tls_server_context: ssl.SSLContext,
) -> None:
    body = hashlib.sha256(b"seed").digest() * (5 * 1024 * 1024 // 32)
    server = servers(tls=tls_server_context)
    uploader = uploaders(
        server.port, scheme="https", hostname="localhost", connections=2, ssl_context=trusting
    )
    outcomes = put_all(uploader, 3, body)
    assert all(isinstance(outcome, Done) for outcome in outcomes.values())
    assert len(server.requests) == 3
    for request in server.requests:
        assert len(request.body) == len(body)
        assert hashlib.sha256(request.body).hexdigest() == hashlib.sha256(body).hexdigest()
        assert request.headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("noticed", [False, True], ids=["unnoticed", "noticed-by-run"])
@pytest.mark.parametrize("reset", [False, True], ids=["fin", "reset"])
def test_tls_connection_closed_by_the_server_while_idle(
    servers: Servers,
    uploaders: Callable[..., HttpUploader],
    trusting: ssl.SSLContext,
    tls_server_context: ssl.SSLContext,
    noticed: bool,
    reset: bool,
) -> None:
    def close_first(request: Request, n: int) -> Reply:
        return Reply([answer(etag=f'"e{n}"')], close=n == 0, reset=reset)

    server = servers(close_first, tls=tls_server_context)
    uploader = uploaders(
        server.port, scheme="https", hostname="localhost", connections=1, ssl_context=trusting
    )
    uploader.start("first", "k1", b"one", {})
    assert_done(collect(uploader, 1)[0], "e0")
    assert server.closed.wait(2)
    time.sleep(0.05)
    if noticed:
        assert uploader.run(0) == []
    uploader.start("second", "k2", b"two", {})
    outcome = collect(uploader, 1)[0]
    assert outcome.tag == "second"
    assert_done(outcome, "e1")
    assert [request.body for request in server.requests] == [b"one", b"two"]


def test_tls_server_that_never_answers_times_out(
    servers: Servers,
    uploaders: Callable[..., HttpUploader],
    trusting: ssl.SSLContext,
    tls_server_context: ssl.SSLContext,
) -> None:
    server = servers(lambda request, n: Reply(silent=True), tls=tls_server_context)
    uploader = uploaders(
        server.port, scheme="https", hostname="localhost", read_timeout=0.5, ssl_context=trusting
    )
    began = time.monotonic()
    assert_failed(only(put_all(uploader, 1)), 0, "Timeout")
    assert time.monotonic() - began < 5


def test_tls_handshake_that_never_ends_times_out(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    # A plain server that never reads: the client's hello goes unanswered.
    server = servers(mute=True)
    uploader = uploaders(
        server.port,
        scheme="https",
        hostname="localhost",
        connect_timeout=0.5,
        ssl_context=ssl.create_default_context(),
    )
    began = time.monotonic()
    outcome = assert_failed(only(put_all(uploader, 1)), 0, "Timeout")
    assert "0.5" in outcome.reason
    assert time.monotonic() - began < 5


# --- refused starts ----------------------------------------------------------------------------


def test_a_refused_start_leaves_nothing_in_flight(
    servers: Servers, uploaders: Callable[..., HttpUploader]
) -> None:
    # The engine waits while in_flight is not 0: a PUT counted but never sent would hang it.
    server = servers()
    uploader = uploaders(server.port, connections=1)
    with pytest.raises(MetadataTooLargeError):
        uploader.start("big", "k", b"x", {"m": "x" * 3000})
    assert (uploader.in_flight, uploader.queued) == (0, 0)
    uploader.start("fine", "k", b"x", {})
    assert [outcome.tag for outcome in collect(uploader, 1)] == ["fine"]
    assert uploader.in_flight == 0
    assert len(server.requests) == 1


def test_credentials_that_fail_to_load_leave_nothing_in_flight(servers: Servers) -> None:
    server = servers()
    host_header = f"127.0.0.1:{server.port}"
    calls: list[int] = []

    def credentials() -> Credentials:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the credential process failed")
        return Credentials("AKID", "SECRET")

    uploader = HttpUploader(
        Endpoint("http", "127.0.0.1", server.port, host_header, BASE_PATH),
        PutSigner(host_header, "us-east-1"),
        credentials,
        connections=1,
        connect_timeout=2,
        read_timeout=2,
    )
    try:
        with pytest.raises(RuntimeError, match="credential process"):
            uploader.start("first", "k", b"x", {})
        assert uploader.in_flight == 0
        uploader.start("second", "k", b"x", {})  # credentials asked again, not the failed ones
        outcome = collect(uploader, 1)[0]
        assert outcome.tag == "second"
        assert_done(outcome, "etag-0")
        assert (
            server.requests[0]
            .headers["authorization"]
            .startswith("AWS4-HMAC-SHA256 Credential=AKID/")
        )
    finally:
        uploader.close()
