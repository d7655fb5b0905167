"""An S3 endpoint whose HEADs take a fixed time, as S3's do: for HEAD-bound benchmarks.

It holds ``--objects`` synthetic s3idx objects in every bucket (keys ``PREFIX/doc-00000000``
on), lists them with ListObjectsV2 (pages of 1,000, each answered after ``--list-delay``),
and answers each HEAD of one after ``--head-delay`` (default 20 ms, S3's 10-30 ms) with
valid s3idx metadata, made by ``s3idx.codec.build_metadata`` (key field ``fs_id``, field
``task_id``), so ``rebuild-index`` and ``sync`` index every object. A PUT of an object is
answered after ``--put-delay`` (default 20 ms) with its MD5 ETag, and stored nowhere (for
latency-bound ``put`` benchmarks); HeadBucket and CreateBucket answer 200; anything else 501.
Bodies are never served. The delays are ``asyncio`` sleeps, so the server's
own CPU per request is small (one process, one thread): the client is what is measured.

    python tests/bench/slow_head_server.py --objects 20000 --port 9000
    s3idx rebuild-index --store s3://bench/docs --endpoint-url http://127.0.0.1:9000 ...

Prints ``http://127.0.0.1:PORT`` on its first line once it listens (``--port 0``: any free
port), and on SIGTERM or Ctrl-C the number of requests it answered, by kind.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import sys
from collections import Counter
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from s3idx import codec

PAGE = 1000
WRITTEN = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)
SIZE = 1000  # bytes each object claims


def object_name(prefix: str, n: int) -> str:
    return f"{prefix}doc-{n:08d}"


def _number(key: str, prefix: str) -> int | None:
    """n of ``object_name(prefix, n)``, else None."""
    rest = key[len(prefix) :] if key.startswith(prefix) else ""
    digits = rest[4:] if rest.startswith("doc-") else ""
    return int(digits) if len(digits) == 8 and digits.isdigit() else None


def _etag(key: str) -> str:
    return '"' + hashlib.md5(key.encode(), usedforsecurity=False).hexdigest() + '"'


def head_headers(key: str, n: int) -> list[tuple[str, str]]:
    """The headers S3 sends for a HEAD of the n-th object (key ``key``)."""
    fs_id = key.rsplit("/", 1)[-1]
    entry = {"fs_id": fs_id, "task_id": f"mp-{n}", codec.LAST_UPDATED: WRITTEN}
    sha256 = hashlib.sha256(fs_id.encode()).hexdigest()
    metadata = codec.build_metadata(entry, "fs_id", ["task_id"], "json+zlib", sha256)
    return [
        ("Content-Length", str(SIZE)),
        ("Content-Type", "application/json"),
        ("ETag", _etag(key)),
        ("Last-Modified", format_datetime(WRITTEN, usegmt=True)),
        *((f"x-amz-meta-{name}", value) for name, value in metadata.items()),
    ]


def list_page(bucket: str, query: dict[str, list[str]], objects: int) -> bytes:
    """One ListObjectsV2 page, after ``start-after`` or the continuation token."""
    prefix = query.get("prefix", [""])[0]
    after = query.get("continuation-token", query.get("start-after", [""]))[0]
    max_keys = min(PAGE, int(query.get("max-keys", [str(PAGE)])[0]))
    start = 0
    if after:
        n = _number(after, prefix)
        # Names sort as their numbers: start after the ones that sort before ``after``.
        start = (
            n + 1 if n is not None else sum(object_name(prefix, m) <= after for m in range(objects))
        )
    names = [object_name(prefix, n) for n in range(start, min(objects, start + max_keys))]
    truncated = start + len(names) < objects
    stamp = WRITTEN.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
        f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>",
        f"<KeyCount>{len(names)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
    ]
    if truncated:
        parts.append(f"<NextContinuationToken>{escape(names[-1])}</NextContinuationToken>")
    for name in names:
        parts.append(
            f"<Contents><Key>{escape(name)}</Key><LastModified>{stamp}</LastModified>"
            f"<ETag>{escape(_etag(name))}</ETag><Size>{SIZE}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
        )
    parts.append("</ListBucketResult>")
    return "".join(parts).encode()


class Server:
    def __init__(
        self, objects: int, head_delay: float, list_delay: float, put_delay: float = 0.020
    ) -> None:
        self.objects = objects
        self.head_delay = head_delay
        self.put_delay = put_delay
        self.list_delay = list_delay
        self.answered: Counter[str] = Counter()

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readline()
                if not request:
                    return
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                sent = await reader.readexactly(length) if length else b""
                method, target, _ = request.decode("latin-1").split(" ", 2)
                status, reply_headers, body = await self.answer(method, target, sent)
                head = [f"HTTP/1.1 {status}", "Server: slow-head-server"]
                if not any(name == "Content-Length" for name, _ in reply_headers):
                    reply_headers.append(("Content-Length", str(len(body))))
                head += [f"{name}: {value}" for name, value in reply_headers]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
                if method != "HEAD":
                    writer.write(body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def answer(
        self, method: str, target: str, sent: bytes = b""
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        url = urlsplit(target)
        bucket, _, key = unquote(url.path).lstrip("/").partition("/")
        query = parse_qs(url.query, keep_blank_values=True)
        if method == "HEAD" and not key:
            self.answered["head-bucket"] += 1
            return "200 OK", [], b""
        if method == "PUT" and not key:
            self.answered["create-bucket"] += 1
            return "200 OK", [], b""
        if method == "PUT" and not url.query:
            # Stored nowhere: answered after --put-delay with the ETag S3 gives (the MD5).
            self.answered["put"] += 1
            await asyncio.sleep(self.put_delay)
            etag = '"' + hashlib.md5(sent, usedforsecurity=False).hexdigest() + '"'
            return "200 OK", [("ETag", etag)], b""
        if method == "GET" and not key and query.get("list-type") == ["2"]:
            self.answered["list"] += 1
            await asyncio.sleep(self.list_delay)
            return (
                "200 OK",
                [("Content-Type", "application/xml")],
                list_page(bucket, query, self.objects),
            )
        if method == "HEAD" and key:
            self.answered["head"] += 1
            await asyncio.sleep(self.head_delay)
            prefix = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
            n = _number(key, prefix)
            if n is None or n >= self.objects:
                return "404 Not Found", [], b""
            return "200 OK", head_headers(key, n), b""
        self.answered[f"unsupported {method}"] += 1
        message = (
            "<Error><Code>NotImplemented</Code>"
            f"<Message>{escape(method)} {escape(quote(target))}</Message></Error>"
        )
        return "501 Not Implemented", [("Content-Type", "application/xml")], message.encode()


async def serve(args: argparse.Namespace) -> None:
    server = Server(args.objects, args.head_delay, args.list_delay, args.put_delay)
    listening = await asyncio.start_server(server.connection, "127.0.0.1", args.port, backlog=1024)
    port = listening.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with listening:
        await stop.wait()
    print(" ".join(f"{kind}={n}" for kind, n in sorted(server.answered.items())), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20000)
    parser.add_argument("--head-delay", type=float, default=0.020, help="seconds per HEAD")
    parser.add_argument("--list-delay", type=float, default=0.050, help="seconds per page")
    parser.add_argument("--put-delay", type=float, default=0.020, help="seconds per PUT")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args()))
    sys.exit(0)


if __name__ == "__main__":
    main()
