"""A small HTTP proxy in front of the moto server: counts requests, injects faults, can die.

Tests point ``--endpoint-url`` at it to see exactly which requests a command made (no GET of a
body during a rebuild), to have about one request in ten answered with 503 SlowDown, or to have
the S3 server vanish in the middle of an ingest, or to have object bodies cut off mid-transfer
(the connection closed after half the announced bytes) or trickled (a byte at a time, each
sooner than a read timeout, so the connection never falls silent), or to have every GET of
chosen objects, or every PUT, fail (``failing``), as one bad key among good ones, or fall
silent (``stalled``).
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)

# S3's answer to a request the credentials may not make on this object: a bucket policy on its
# key, or a KMS key they may not use. A HEAD's carries no body: a bare 403.
ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)


class S3Proxy:
    def __init__(
        self,
        upstream: str,
        *,
        slow_down_rate: float = 0.0,
        seed: int = 1,
        cut_bodies: int = 0,
        fault: tuple[int, bytes] = (503, SLOW_DOWN),
    ) -> None:
        target = urlsplit(upstream)
        self._host, self._port = target.hostname or "127.0.0.1", target.port or 80
        self.slow_down_rate = slow_down_rate
        self.fault = fault  # the answer (status, body) of a request slowed down
        self.delay = 0.0  # seconds each request waits before it is relayed: a slow server
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.log: list[tuple[str, str]] = []  # (method or LIST, path) of every request
        self.slowed_down = 0
        # The next ``cut_bodies`` object GETs send half their body, then close the connection.
        self.cut_bodies = cut_bodies
        self.bodies_cut = 0
        # Seconds between the bytes of each object GET's body (0: sent at once).
        self.trickle = 0.0
        # Given a listing's path, the ListObjectsV2 XML to answer instead of the server's (a
        # server that pages wrongly), or None to relay the listing.
        self.listing: Callable[[str], bytes | None] | None = None
        # Given a request's method and path (unquoted, without the query; never a listing's),
        # whether to answer it with ``fault`` (or with the (status, body) returned), every
        # time: a key whose reads (or uploads) fail however often they are retried.
        self.failing: Callable[[str, str], bool | tuple[int, bytes]] | None = None
        self.failed = 0
        # Given a request's method and path, whether to relay it and then answer ``fault``
        # instead of the server's answer: a request that took effect, reported as failed.
        self.landed_failing: Callable[[str, str], bool] | None = None
        # Given a request's method and path, whether to hold it unanswered until the proxy
        # stops: a server that accepts a request and falls silent.
        self.stalled: Callable[[str, str], bool] | None = None
        # Given a request's method (LIST for a listing) and path, the names (lowercase) of the
        # server's answer headers to leave out, or of XML elements of its body (``"<ETag>"``):
        # a server or proxy that does not send them.
        self.dropped_headers: Callable[[str, str], Collection[str]] | None = None
        self._stopped = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> S3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop listening: from now on connections are refused."""
        self._stopped.set()
        self.server.shutdown()
        self.server.server_close()

    def _should_slow_down(self) -> bool:
        with self._lock:
            return self._rng.random() < self.slow_down_rate

    def _should_cut(self) -> bool:
        with self._lock:
            if self.cut_bodies <= 0:
                return False
            self.cut_bodies -= 1
            self.bodies_cut += 1
            return True

    def _failure(self, method: str, listing: bool, path: str) -> tuple[int, bytes] | None:
        """The fault to answer this request with, if ``failing`` chooses it."""
        if listing or self.failing is None:
            return None
        chosen = self.failing(method, unquote(urlsplit(path).path))
        if not chosen:
            return None
        with self._lock:
            self.failed += 1
        return self.fault if chosen is True else chosen

    def _count(self, method: str, slowed: bool, path: str = "") -> None:
        with self._lock:
            self.requests[method] += 1
            self.log.append((method, path))
            self.slowed_down += slowed

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: tests read the counters instead."""

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                # A listing is a GET too; counted apart, so "no GET" means no body was read.
                listing = self.command == "GET" and "list-type=2" in self.path
                fault = proxy._failure(self.command, listing, self.path)
                if fault is None and proxy._should_slow_down():
                    fault = proxy.fault
                slowed = fault is not None
                proxy._count("LIST" if listing else self.command, slowed, self.path)
                if proxy.delay:
                    time.sleep(proxy.delay)
                if proxy.stalled is not None and proxy.stalled(
                    self.command, unquote(urlsplit(self.path).path)
                ):
                    proxy._stopped.wait(600)
                    self.close_connection = True
                    return
                answer = proxy.listing(self.path) if proxy.listing and listing else None
                if answer is not None:
                    self._answer(200, {"Content-Type": "application/xml"}, answer)
                    return
                if fault is not None:
                    status, error = fault
                    self._answer(status, {"Content-Type": "application/xml"}, error)
                    return
                upstream = http.client.HTTPConnection(proxy._host, proxy._port, timeout=60)
                try:
                    # Headers pass unchanged: the Host is part of the request's signature.
                    headers = dict(self.headers.items())
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    if proxy.landed_failing is not None and proxy.landed_failing(
                        self.command, unquote(urlsplit(self.path).path)
                    ):
                        status, error = proxy.fault
                        self._answer(status, {"Content-Type": "application/xml"}, error)
                        return
                    # A HEAD's Content-Length is the object's size, not the (empty) body's.
                    dropped = ("transfer-encoding", "connection")
                    if self.command != "HEAD":
                        dropped += ("content-length",)
                    if proxy.dropped_headers is not None:
                        method = "LIST" if listing else self.command
                        path = unquote(urlsplit(self.path).path)
                        names = tuple(proxy.dropped_headers(method, path))
                        dropped += names
                        for name in (n[1:-1].encode() for n in names if n.startswith("<")):
                            data = re.sub(rb"<%s>[^<]*</%s>" % (name, name), b"", data)
                    passed = {k: v for k, v in response.getheaders() if k.lower() not in dropped}
                    if (
                        self.command == "GET"
                        and not listing
                        and response.status == 200
                        and proxy._should_cut()
                    ):
                        self._answer_cut(passed, data)
                        return
                    if self.command == "GET" and not listing and proxy.trickle:
                        self._answer_trickled(passed, data)
                        return
                    self._answer(response.status, passed, data)
                finally:
                    upstream.close()

            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "content-length" not in {name.lower() for name in headers}:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _start_body(self, headers: dict[str, str], data: bytes) -> None:
                """An object's 200 answer up to its body, which announces all of ``data``."""
                self.send_response(200)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()

            def _answer_cut(self, headers: dict[str, str], data: bytes) -> None:
                self._start_body(headers, data)
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def _answer_trickled(self, headers: dict[str, str], data: bytes) -> None:
                self._start_body(headers, data)
                self.wfile.flush()
                self.close_connection = True
                try:
                    for i in range(len(data)):
                        time.sleep(proxy.trickle)
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                except OSError:
                    return  # the client gave up on it

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler
