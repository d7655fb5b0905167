"""What is read is what was written: every body is verified on every store, reads are retried.

Damage is made the way it happens: a body replaced under its metadata (an S3 copy or put with
the metadata kept), bytes flipped or cut off a local object file, a codec in the metadata that
does not match the body. Each damaged key is reported; the other documents are still served.
"""

from __future__ import annotations

import io
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx import Engine, codec
from s3idx.errors import DamagedObjectError, ExitStatus
from s3idx.index.sqlite import SqliteIndex
from s3idx.store.base import ObjectStore
from s3idx.store.local import LocalStore
from tests.helpers import Run, json_lines, jsonl
from tests.s3proxy import S3Proxy

KEYS = ["a", "b", "c", "d"]
SMALL_SPOOL = 1024  # documents above this (decompressed) take the spooled path


def _doc(key: str, size: int = 3000) -> dict[str, Any]:
    return {"fs_id": key, "v": ord(key[0]), "text": "".join(chr(97 + i % 26) for i in range(size))}


@pytest.fixture(params=["in-memory", "spooled"])
def spool_threshold(request: pytest.FixtureRequest) -> int:
    return SMALL_SPOOL if request.param == "spooled" else 8 << 20


@pytest.fixture
def engine(store: ObjectStore, tmp_path: Path, spool_threshold: int) -> Iterator[Engine]:
    with Engine(
        store, SqliteIndex(tmp_path / "i.sqlite3"), fields=["v"], spool_threshold=spool_threshold
    ) as engine:
        result = engine.put_documents([_doc(k) for k in KEYS])
        assert result.stored == len(KEYS)
        yield engine


def _replace(
    store: ObjectStore, key: str, change: Callable[[bytes, dict[str, str]], bytes]
) -> None:
    """Put a new body under the object's own metadata (as an S3 copy or a careless tool does)."""
    body = store.open(key)
    old, metadata = body.read(), dict(body.head.metadata)
    store.put(key, change(old, metadata), metadata)


def _other_document(old: bytes, metadata: dict[str, str]) -> bytes:
    return codec.encode_raw(codec.dumps(_doc("b", 2000)), metadata["s3idx-codec"])


def _cut_in_half(old: bytes, metadata: dict[str, str]) -> bytes:
    return old[: len(old) // 2]


def _trailing_bytes(old: bytes, metadata: dict[str, str]) -> bytes:
    return old + b"\x00garbage"


def _codec_says_json(old: bytes, metadata: dict[str, str]) -> bytes:
    metadata["s3idx-codec"] = "json"  # the body stays zlib
    return old


def _hash_of_other_document(old: bytes, metadata: dict[str, str]) -> bytes:
    metadata["s3idx-sha256"] = "0" * 64
    return old


def _no_hash_and_binary(old: bytes, metadata: dict[str, str]) -> bytes:
    del metadata["s3idx-sha256"]
    metadata["s3idx-codec"] = "json"
    return b"\x00\x01\x02 binary, and no hash recorded to tell"


def _no_hash_and_other_document(old: bytes, metadata: dict[str, str]) -> bytes:
    del metadata["s3idx-sha256"]
    return _other_document(old, metadata)


DAMAGE = {
    "other document, same metadata": (_other_document, "does not match its recorded sha256"),
    "cut in half": (_cut_in_half, "cut short"),
    "trailing bytes": (_trailing_bytes, "bytes after the end"),
    "codec json over a zlib body": (_codec_says_json, "codec 'json' but the body is json+zlib"),
    "hash of another body": (_hash_of_other_document, "does not match its recorded sha256"),
}
# Every s3idx version records the sha256: metadata without it was edited, so the object is
# undecodable (exit 3), not read unchecked.
NO_HASH = {
    "no hash, binary body": _no_hash_and_binary,
    "no hash, other document": _no_hash_and_other_document,
}


def _write(engine: Engine, keys: list[str]) -> tuple[Any, list[Any]]:
    out = io.BytesIO()
    result = engine.write_documents(keys, out)
    return result, json_lines(out.getvalue().decode())


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_body_is_reported_and_the_others_are_served(
    engine: Engine, store: ObjectStore, damage: str
) -> None:
    change, reason = DAMAGE[damage]
    _replace(store, "b", change)

    result, printed = _write(engine, KEYS)

    assert printed == [_doc("a"), _doc("c"), _doc("d")]
    assert result.found == 3
    assert [key for key, _ in result.damaged] == ["b"]
    assert reason in result.damaged[0][1]
    with pytest.raises(DamagedObjectError, match="object 'b'"):
        engine.get("b")
    assert engine.get("c") == _doc("c")


@pytest.mark.parametrize("damage", NO_HASH, ids=list(NO_HASH))
def test_metadata_without_its_sha256_is_undecodable_not_read_unchecked(
    engine: Engine, store: ObjectStore, damage: str
) -> None:
    _replace(store, "b", NO_HASH[damage])

    result, printed = _write(engine, KEYS)

    assert printed == [_doc("a"), _doc("c"), _doc("d")]
    assert [key for key, _ in result.unreadable] == ["b"]
    assert "s3idx metadata lacks s3idx-sha256" in result.unreadable[0][1]
    assert result.undecodable == 1
    assert result.damaged == []


def test_one_flipped_byte_in_an_uncompressed_local_object_is_damage(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with Engine(store, SqliteIndex(tmp_path / "i.sqlite3"), compress="none") as engine:
        engine.put_documents([_doc(k) for k in KEYS])
        path = store._path("b")
        data = bytearray(path.read_bytes())
        data[-100] ^= 0x01  # one letter of the text becomes another: still valid JSON
        path.write_bytes(bytes(data))

        result, printed = _write(engine, KEYS)

    assert printed == [_doc("a"), _doc("c"), _doc("d")]
    assert [key for key, _ in result.damaged] == ["b"]
    assert "sha256" in result.damaged[0][1]


def test_a_large_spooled_document_comes_back_whole(engine: Engine) -> None:
    big = _doc("big", 200_000)
    engine.put_documents([big])
    assert engine.get("big") == big
    _, printed = _write(engine, ["a", "big", "c"])
    assert printed == [_doc("a"), big, _doc("c")]


@pytest.mark.parametrize("compress", ["zlib", "zstd"])
def test_every_codec_is_verified(tmp_path: Path, compress: str) -> None:
    pytest.importorskip("zstandard", reason="zstandard is not installed")
    store = LocalStore(tmp_path / "store")
    with Engine(store, SqliteIndex(tmp_path / "i.sqlite3"), compress=compress) as engine:
        engine.put_documents([_doc(k) for k in KEYS])
        for change, _ in DAMAGE.values():
            _replace(store, "b", change)
            result, printed = _write(engine, KEYS)
            assert [key for key, _ in result.damaged] == ["b"], change
            assert printed == [_doc("a"), _doc("c"), _doc("d")]
            engine.put_documents([_doc("b")])  # repaired for the next kind of damage


# --- the command line --------------------------------------------------------------------------


def _local_object(root: Path, key: str) -> Path:
    return LocalStore(root)._path(key)


@pytest.fixture
def local_cli(run: Run, tmp_path: Path) -> tuple[Run, Path]:
    root = tmp_path / "store"
    assert (
        run("put", "--store", str(root), "-q", input=jsonl(*[_doc(k) for k in KEYS])).exit_code == 0
    )
    return run, root


def test_get_and_query_full_exit_damaged_and_print_the_rest(local_cli: tuple[Run, Path]) -> None:
    run, root = local_cli
    path = _local_object(root, "c")
    path.write_bytes(path.read_bytes()[:-20])

    got = run("get", "--store", str(root), *KEYS)
    full = run("query", "--store", str(root), "--full", "--sort", "fs_id")

    assert got.exit_code == ExitStatus.DAMAGED == 8
    assert json_lines(got.stdout) == [_doc("a"), _doc("b"), _doc("d")]
    assert got.stderr.startswith("s3idx: damaged c: ")
    assert "cut short" in got.stderr
    assert full.exit_code == ExitStatus.DAMAGED
    assert json_lines(full.stdout) == [_doc("a"), _doc("b"), _doc("d")]
    assert "index entry 'c' has a damaged object" in full.stderr


def test_a_truncated_document_over_8_mib_is_not_served(run: Run, tmp_path: Path) -> None:
    root = tmp_path / "store"
    big = {"fs_id": "big", "blob": orjson.dumps(list(range(1_500_000))).decode()}
    put = run("put", "--store", str(root), "--compress", "none", "-q", input=jsonl(big))
    assert put.exit_code == 0
    path = _local_object(root, "big")
    assert path.stat().st_size > 8 << 20
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size - (1 << 20))

    got = run("get", "--store", str(root), "big")

    assert got.exit_code == ExitStatus.DAMAGED
    assert got.stdout == ""
    assert "damaged big" in got.stderr


def test_a_json_codec_over_a_zlib_body_prints_no_binary(run: Run, tmp_path: Path) -> None:
    root = tmp_path / "store"
    run("put", "--store", str(root), "-q", input=jsonl(_doc("a"), _doc("b")))
    store = LocalStore(root)
    _replace(store, "a", _codec_says_json)

    got = run("get", "--store", str(root), "a", "b")

    assert got.exit_code == ExitStatus.DAMAGED
    assert json_lines(got.stdout) == [_doc("b")]
    assert "metadata says codec 'json' but the body is json+zlib" in got.stderr


@pytest.mark.parametrize("transport", ["boto3", "obstore"])
def test_bodies_cut_off_mid_transfer_are_read_again(
    run: Run, s3_endpoint: str, transport: str
) -> None:
    if transport == "obstore":
        pytest.importorskip("obstore", reason="obstore is not installed")
    docs = [_doc(k, 50_000) for k in ("a", "b", "c", "d", "e")]
    direct = ["--store", "s3://bucket/docs", "--endpoint-url", s3_endpoint]
    assert run("put", *direct, "--create-bucket", "-q", input=jsonl(*docs)).exit_code == 0

    with S3Proxy(s3_endpoint, cut_bodies=3) as proxy:
        via = ["--store", "s3://bucket/docs", "--endpoint-url", proxy.url, "--transport", transport]
        got = run("get", *via, "--workers", "1", "a", "b", "c", "d", "e")
        assert proxy.bodies_cut == 3
        proxy.cut_bodies = 2
        full = run("query", *via, "--full", "--sort", "fs_id")

    assert proxy.bodies_cut == 5
    assert got.exit_code == 0, got.stderr
    assert json_lines(got.stdout) == docs
    assert full.exit_code == 0, full.stderr
    assert json_lines(full.stdout) == docs


def test_a_zlib_body_compressed_far_past_the_spool_threshold_is_verified(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with Engine(store, SqliteIndex(tmp_path / "i.sqlite3"), spool_threshold=SMALL_SPOOL) as engine:
        doc = {"fs_id": "z", "zeros": "0" * 5_000_000}
        engine.put_documents([doc])
        assert len(store.open("z").read()) < 10_000  # compresses 500-fold, stays verified
        assert engine.get("z") == doc
        raw = zlib.compress(codec.dumps({**doc, "zeros": "1" * 5_000_000}))
        _replace(store, "z", lambda old, meta: raw)
        with pytest.raises(DamagedObjectError, match="sha256"):
            engine.get("z")


class _EndsEarlyOnce(LocalStore):
    """The first read of each object ends cleanly after half the announced bytes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.cut: set[str] = set()

    def open(self, key: str) -> Any:
        body = super().open(key)
        if key in self.cut:
            return body
        self.cut.add(key)
        data = body.read()
        return type(body)(body.head, iter([data[: len(data) // 2]]), body.length)


def test_a_body_that_ends_before_its_announced_length_is_read_again(tmp_path: Path) -> None:
    store = _EndsEarlyOnce(tmp_path / "store")
    with Engine(store, SqliteIndex(tmp_path / "i.sqlite3"), compress="none") as engine:
        engine.put_documents([_doc(k) for k in KEYS])

        result, printed = _write(engine, KEYS)

        assert printed == [_doc(k) for k in KEYS]
        assert result.damaged == [] and result.unreadable == []
        assert engine.store.retries == len(KEYS)


@pytest.mark.parametrize("transport", ["boto3", "obstore"])
def test_a_body_trickled_under_the_read_timeout_fails_within_its_total_deadline(
    run: Run, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    if transport == "obstore":
        pytest.importorskip("obstore", reason="obstore is not installed")
    # A byte every 0.2 s never leaves the connection silent for S3IDX_TIMEOUT=1: only a
    # deadline for the whole body (1 s plus its size at the minimum rate) ends the read.
    docs = [_doc(k, 300) for k in ("a", "b")]
    direct = ["--store", "s3://bucket/docs", "--endpoint-url", s3_endpoint]
    assert run("put", *direct, "--create-bucket", "-q", input=jsonl(*docs)).exit_code == 0
    monkeypatch.setenv("S3IDX_TIMEOUT", "1")

    with S3Proxy(s3_endpoint) as proxy:
        proxy.trickle = 0.2
        via = ["--store", "s3://bucket/docs", "--endpoint-url", proxy.url, "--transport", transport]
        started = time.monotonic()
        got = run("get", *via, "--workers", "1", "a")
        got_took = time.monotonic() - started
        started = time.monotonic()
        full = run("query", *via, "--full", "--workers", "1", '{"fs_id": "b"}')
        full_took = time.monotonic() - started
        gets = proxy.requests["GET"]

    for result, took in ((got, got_took), (full, full_took)):
        assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
        assert "timed out" in result.stderr, result.stderr
        # obstore (reqwest) times a whole request by S3IDX_TIMEOUT itself, whatever its size.
        if transport == "boto3":
            assert "was not all received within 1 s" in result.stderr, result.stderr
        assert "S3IDX_TIMEOUT" in result.stderr
        assert result.stdout == ""
        assert took < 8, took  # two attempts of about a second, not a byte every 0.2 s
    assert gets == 4  # each read once and retried once, as a silent server is
