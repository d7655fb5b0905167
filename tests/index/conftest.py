"""Index fixtures: every index backend in turn, behind the same ``Index`` protocol.

A *kind* is a name mapped to an opener factory: ``factory(request, tmp_path)`` is a context
manager yielding ``open_index()``, which opens a new handle on one and the same empty index (so
a test can reopen it as another process would). Everything the factory set up is removed when
the test ends. To add a kind, add one line to ``INDEX_KINDS`` (and import its class), e.g.::

    "sqlite": lambda request, tmp_path: handles(lambda: SqliteIndex(tmp_path / "index.sqlite3")),
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from s3idx.errors import S3idxError
from s3idx.index.base import Index
from s3idx.index.mongo import MongoIndex
from s3idx.index.sqlite import SqliteIndex
from tests.helpers import real_mongo_database

Opener = Callable[[], Index]
IndexFactory = Callable[[pytest.FixtureRequest, Path], AbstractContextManager[Opener]]


@dataclass
class Handles:
    """Opens handles with ``make``; ``make`` itself is picklable (a ``partial`` of the class)
    where another process can reach the index, so a test can open it there too."""

    make: Callable[[], Index]
    opened: list[Index] = field(default_factory=list)

    def __call__(self) -> Index:
        self.opened.append(self.make())
        return self.opened[-1]


@contextmanager
def handles(make: Callable[[], Index]) -> Iterator[Handles]:
    """An opener over ``make`` that closes every handle it opened when the test ends."""
    opener = Handles(make)
    try:
        yield opener
    finally:
        for index in opener.opened:
            index.close()


@contextmanager
def _mongomock_kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    client = request.getfixturevalue("mongomock_client")
    with handles(lambda: MongoIndex("mongodb://localhost/test", "test", client=client)) as opener:
        yield opener


def _real_mongo_kind(kind: str) -> IndexFactory:
    """FerretDB or the real MongoDB: a fresh database per test, dropped after it."""

    @contextmanager
    def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
        with real_mongo_database(kind, request) as server:
            make = partial(
                MongoIndex, server.uri, server.database, server_selection_timeout_ms=5000
            )
            with handles(make) as opener:
                yield opener

    return factory


@contextmanager
def _sqlite_kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    with handles(partial(SqliteIndex, tmp_path / "index.sqlite3")) as opener:
        yield opener


INDEX_KINDS: dict[str, IndexFactory] = {
    "sqlite": _sqlite_kind,
    "mongomock": _mongomock_kind,
    "ferretdb": _real_mongo_kind("ferretdb"),
    "mongodb": _real_mongo_kind("mongodb"),
}

# Where a kind is known to differ from MongoDB's semantics, which the suite pins. A test that
# meets a gap is expected to fail there (strictly: the day the gap closes, the test says so).
KNOWN_GAPS: dict[str, dict[str, str]] = {
    "mongomock": {
        "bool-is-not-number": "mongomock 4.3 lets {'flag': 1} match true; MongoDB does not",
        "type-codes": "mongomock 4.3 takes $type aliases only: every number is 'not a valid $type'",
    },
    "ferretdb": {
        "nested-arrays": "FerretDB v1 cannot store arrays inside arrays; s3idx refuses such "
        "entries there with a clear error (tests/index/test_ferretdb.py)",
        "elemMatch": "FerretDB v1 answers $elemMatch wrongly (the document form matches "
        "nothing); s3idx refuses $elemMatch there (tests/index/test_ferretdb.py)",
        "min-max-key": "FerretDB v1 refuses $type -1 (minKey) and 127 (maxKey): 'Type code "
        "-1 not implemented'",
    },
}
# Where s3idx refuses what a kind cannot do, its gaps must fail with that refusal, not otherwise.
GAP_FAILURES: dict[str, type[BaseException]] = {"ferretdb": S3idxError}


@pytest.fixture(params=list(INDEX_KINDS))
def index_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_index(index_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens handles on one empty index of the current kind."""
    with INDEX_KINDS[index_kind](request, tmp_path) as opener:
        yield opener


@pytest.fixture
def index(open_index: Opener) -> Index:
    """An empty index of each kind in turn."""
    return open_index()


@pytest.fixture
def known_gap(index_kind: str, request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``known_gap(name)``: this test is expected to fail on kinds that have that gap."""

    def mark(name: str) -> None:
        reason = KNOWN_GAPS.get(index_kind, {}).get(name)
        if reason is not None:
            raises = GAP_FAILURES.get(index_kind)
            request.applymarker(pytest.mark.xfail(reason=reason, strict=True, raises=raises))

    return mark
