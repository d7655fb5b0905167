"""Differential test: our filters, sorting and projection against a MongoDB oracle.

Hypothesis generates documents (nested documents and arrays; null, booleans, int/float mixes,
strings, datetimes; missing fields; repeated values) and filters (every supported operator,
nested logical operators, dotted paths through arrays, numeric path steps). The documents go
into the oracle and, as entries, into a ``SqliteIndex`` with some of the paths searchable; then:

- ``SqliteIndex.find(filter)`` and ``count`` return exactly the oracle's documents;
- ``Filter.matches`` (pure Python) agrees with the oracle;
- the compiled SQL plan always holds every true match, and an *exact* plan holds nothing else;
- ``sort_entries`` and ``find(sort=...)`` give the oracle's order, and ``project`` its projection.

The oracle is mongomock, and real MongoDB when ``S3IDX_TEST_MONGODB_URI`` is set (the test
against MongoDB is skipped otherwise). A third run uses ``Filter.matches`` itself as the oracle
with the unrestricted generators, so the index and its SQL plans are also checked in the
corners mongomock cannot judge.

The semantics are those of released MongoDB (up to 8.x). MongoDB's development branch (FCV 9.0,
SERVER-36681) changes one corner: ``{"a.b": null}`` will also match arrays that hold no
document, such as ``{"a": []}`` and ``{"a": [1]}``; a 9.0 server as oracle would report it.

mongomock (4.3) deviates from MongoDB in these places, each checked by a ``test_deviation_*``
test at the end of this module, which pins MongoDB's behaviour (from the manual, or from the
server's source in ``src/mongo/db/matcher`` and its tests in ``jstests/core/query``) and asserts
that mongomock still answers otherwise. The implementation follows MongoDB; for the mongomock
oracle the generators stay out of each corner, as noted:

1. Null and missing through a dead end: ``{"a.b": null}`` matches ``{"a": 1}`` and
   ``{"a": null}`` in MongoDB (the path leads nowhere, which equality with null matches), not
   in mongomock; likewise ``$in`` with null and the negations ``$ne``/``$nin`` null. On a
   missing field mongomock also misses ``$gte``/``$lte`` null and ``$all: [null]``.
   Generators: no null-matching condition on dotted paths, no null bound or ``$all`` null.
2. Booleans are numbers to mongomock (Python equality): ``1`` equals ``true``, ``0`` equals
   ``false``, also in ``$in`` and inside arrays. Generators: no 0 or 1 among the numbers.
3. Document equality ignores field order in mongomock; MongoDB's ``{"b": 1, "c": 2}`` does not
   equal ``{"c": 2, "b": 1}``. Generators: every document's fields in one order.
4. Sorting by an array uses its first element in mongomock; MongoDB uses the smallest element
   ascending and the largest descending. Generators: no array on a sort path.
5. Projection through an array holding non-documents fails in mongomock (``AttributeError``);
   MongoDB drops those elements. Generators: arrays on projected paths hold documents only.
6. ``$size`` matches documents (by field count) and scalars (as size 1) in mongomock; MongoDB
   matches arrays only. Generators: ``$size`` only on ``l``, which always holds an array.
7. A comparison with an array operand skips array elements that are arrays in mongomock:
   ``{"a": {"$gt": [1]}}`` matches ``{"a": [0, [5]]}`` in MongoDB only. Generators: comparison
   operands are scalars.
8. Numeric steps: MongoDB also looks for a field named "0" in document elements, so
   ``{"a.0": null}`` matches ``{"a": [{"x": 1}]}``, and does not expand an array reached by
   position, so ``{"a.0": 1}`` does not match ``{"a": [[1]]}``; mongomock does both the other
   way. Generators: numeric steps only into ``l`` (scalars) and never with null.
9. Object-form ``$elemMatch`` on an element that is itself an array: MongoDB treats it as a
   document with fields "0", "1", ..., so ``{"a": {"$elemMatch": {"b": null}}}`` matches
   ``{"a": [[]]}``; mongomock does not. Generators: no condition inside the object form that
   a missing field satisfies.
10. ``{"a": {}}`` (equality with the empty document) matches documents without ``a`` in
    mongomock, which reads it as "no condition". Generators: no bare ``{}`` condition.
11. ``{"$all": []}`` matches every document in mongomock; MongoDB's manual: "When passed an
    empty array, $all matches no documents." Generators: ``$all`` never empty.
12. ``{"$not": {"$regex": ..., "$options": ...}}`` raises "unknown operator: $options" in
    mongomock; MongoDB accepts it. Generators: no ``$options`` inside ``$not``.
13. An array operand of ``$eq``/``$in`` is not compared with array elements (``$eq``) or the
    whole array (``$in``) in mongomock: ``{"a": {"$eq": [1, 2]}}`` matches
    ``{"a": [[1, 2], 3]}`` and ``{"a": {"$in": [[1]]}}`` matches ``{"a": [1]}`` in MongoDB
    only. Generators: ``$eq``/``$ne``/``$in``/``$nin`` operands are not arrays.
14. ``{"$all": [[1, 2]]}`` matches ``{"a": [1, 2]}`` in MongoDB (the whole array equals the
    operand), not in mongomock. Generators: ``$all`` operands are not arrays.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import mongomock
import pymongo.errors
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from s3idx.errors import InvalidFilterError
from s3idx.index.sqlite import LIVE, SqliteIndex
from s3idx.query.filter import parse_filter
from s3idx.query.paths import iter_path_values, project, split_path
from s3idx.query.sort import sort_entries
from s3idx.query.values import MISSING

MONGODB_URI = os.environ.get("S3IDX_TEST_MONGODB_URI")
KEY = "k"
SEARCHABLE = ("a", "b", "a.b", "a.0", "b.c", "c", "l")
DATES = [
    datetime(2020, 1, 1, tzinfo=UTC),
    datetime(2021, 6, 15, 12, 30, 0, 250000, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
]
BOOKKEEPING = {"etag": "e", "size": 1, "sha256": None, "codec": "json"}


# --- generators ------------------------------------------------------------------------------


# Strategies are built once and cached: building them per draw (and hypothesis reading the
# source of lambdas to describe them) would cost more than the comparisons themselves.


def _fields_in_order(document: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(document.items()))


def _not_array(value: Any) -> bool:
    return not isinstance(value, list)


def _not_null(value: Any) -> bool:
    return value is not None


@functools.cache
def scalars(*, mongomock_safe: bool) -> st.SearchStrategy[Any]:
    numbers = [-2, 2, 3, 7, 2**40, -2.0, 2.0, 2.5, 3.0, 1e20]
    if not mongomock_safe:
        numbers += [0, 1, 0.0, 1.0]  # deviation 2
    return st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(numbers),
        st.sampled_from(["", "x", "y", "xy", "Y", "é"]),
        st.sampled_from(DATES),
    )


@functools.cache
def nested(scalar: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        # Fields in one fixed order: mongomock ignores field order when comparing (deviation 3).
        subdocs = st.dictionaries(st.sampled_from(["b", "c"]), inner, max_size=2).map(
            _fields_in_order
        )
        return st.one_of(st.lists(inner, max_size=3), subdocs)

    return st.recursive(scalar, containers, max_leaves=4)


@functools.cache
def documents(*, mongomock_safe: bool) -> st.SearchStrategy[dict[str, Any]]:
    scalar = scalars(mongomock_safe=mongomock_safe)
    value = nested(scalar)
    # "l" always holds an array of scalars, for the operators mongomock only gets right there.
    fields = {"a": value, "b": value, "c": value, "l": st.lists(scalar, max_size=3)}
    return st.fixed_dictionaries({}, optional=fields).map(_fields_in_order)


def subvalues(value: Any) -> Iterator[Any]:
    yield value
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    for child in children:
        yield from subvalues(child)


class Gen:
    """What one example's filters draw from: mostly values found at the path in its documents."""

    def __init__(self, docs: list[dict[str, Any]], *, mongomock_safe: bool) -> None:
        self.safe = mongomock_safe
        self.docs = docs
        self.domain = scalars(mongomock_safe=mongomock_safe)
        self._cache: dict[tuple[str, str | None], st.SearchStrategy[Any]] = {}

    def _cached(self, kind: str, path: str | None, build: Any) -> st.SearchStrategy[Any]:
        if (kind, path) not in self._cache:
            self._cache[kind, path] = build(path)
        return self._cache[kind, path]

    def _found(self, path: str | None) -> list[Any]:
        if path is None:
            tops = [field for doc in self.docs for field in doc.values()]
        else:
            parts = split_path(path)
            tops = [
                v for doc in self.docs for v in iter_path_values(doc, parts) if v is not MISSING
            ]
        return [v for top in tops for v in subvalues(top) if v != {}]

    def scalar(self, path: str | None) -> st.SearchStrategy[Any]:
        return self._cached("scalar", path, self._scalar)

    def value(self, path: str | None) -> st.SearchStrategy[Any]:
        return self._cached("value", path, self._value)

    def operand(self, path: str | None) -> st.SearchStrategy[Any]:
        return self._cached("operand", path, self._operand)

    def _scalar(self, path: str | None) -> st.SearchStrategy[Any]:
        found = [v for v in self._found(path) if not isinstance(v, dict | list)]
        return st.one_of(st.sampled_from(found), self.domain) if found else self.domain

    def _value(self, path: str | None) -> st.SearchStrategy[Any]:
        found = self._found(path)
        anything = nested(self.domain)
        return st.one_of(st.sampled_from(found), anything) if found else anything

    def _operand(self, path: str | None) -> st.SearchStrategy[Any]:
        # Deviation 13: mongomock's $eq and $in miss an array operand that equals an array
        # element (or, for $in, the whole array).
        if self.safe:
            return self.value(path).filter(_not_array)
        return self.value(path)


PATHS = ["a", "b", "c", "l", "a.b", "a.c", "b.c", "a.b.c"]
NUMERIC_PATHS = ["a.0", "a.1", "a.0.b", "l.0", "l.2"]
NUMERIC_PATHS_ON_SCALAR_ARRAYS = ["l.0", "l.2"]
REGEXES = [("^x", ""), ("y", ""), ("^$", ""), ("^X", "i"), ("y$", "m"), ("é", "")]
OPERATORS = [
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$regex", "$all",
    "$size", "$type", "$elemMatch", "$not",
]  # fmt: skip
# Single type names only, and no "null": mongomock 4.3 implements neither lists, numbers nor
# "null" for $type (the unit tests cover them).
TYPE_SPECS = [
    "string", "number", "double", "int", "long", "array", "object", "bool", "date",
]  # fmt: skip


@st.composite
def conditions(draw: st.DrawFn, g: Gen, depth: int = 0) -> dict[str, Any]:
    """One ``{path: condition}``."""
    if draw(st.integers(0, 9)) == 0:
        # Deviation 8: for mongomock, numeric steps only into arrays of scalars, and only with
        # equality to a non-null value.
        path = draw(st.sampled_from(NUMERIC_PATHS_ON_SCALAR_ARRAYS if g.safe else NUMERIC_PATHS))
        value = draw(g.scalar(path).filter(_not_null) if g.safe else g.value(path))
        return {path: value}
    path = draw(st.sampled_from(PATHS))
    condition = draw(operator_objects(g, path, depth))
    if g.safe:
        assume(not _null_bound(condition))  # deviation 1
        assume(not ("." in path and _may_match_null(condition)))  # deviation 1
    return {path: condition}


def _null_bound(condition: Any) -> bool:
    if not isinstance(condition, dict):
        return False
    return any(
        (name in ("$gte", "$lte") and argument is None)
        or (name == "$all" and None in argument)
        or _null_bound(argument)
        for name, argument in condition.items()
    )


def _may_match_null(condition: Any) -> bool:
    """Whether a condition can be satisfied (or negated) by a missing value."""
    if condition is None:
        return True
    if (
        not isinstance(condition, dict)
        or not condition
        or not next(iter(condition)).startswith("$")
    ):
        return False
    for name, argument in condition.items():
        if name in ("$eq", "$ne", "$gte", "$lte") and argument is None:
            return True
        if name in ("$in", "$nin") and None in argument:
            return True
        if name in ("$exists", "$ne", "$nin", "$not", "$all"):
            return True
    return False


@st.composite
def operator_objects(draw: st.DrawFn, g: Gen, path: str, depth: int) -> Any:
    kind = draw(st.integers(0, 5))
    if kind <= 1:
        # Implicit equality, with documents and arrays too; a bare {} reads as "no condition"
        # to mongomock (deviation 10).
        value = draw(g.value(path) if kind == 0 else g.scalar(path))
        assume(not (g.safe and value == {}))
        return value
    names = draw(st.lists(st.sampled_from(OPERATORS), min_size=1, max_size=2, unique=True))
    condition: dict[str, Any] = {}
    for name in names:
        condition.update(draw(single_operator(g, name, path, depth)))
    return condition


@st.composite
def single_operator(draw: st.DrawFn, g: Gen, name: str, path: str, depth: int) -> dict[str, Any]:
    if name in ("$eq", "$ne"):
        return {name: draw(g.operand(path))}
    if name in ("$gt", "$gte", "$lt", "$lte"):
        # Deviation 7: scalar operands for mongomock.
        return {name: draw(g.scalar(path) if g.safe else g.value(path))}
    if name in ("$in", "$nin"):
        return {name: draw(st.lists(g.operand(path), max_size=3))}
    if name == "$exists":
        return {name: draw(st.booleans())}
    if name == "$regex":
        pattern, options = draw(st.sampled_from(REGEXES))
        return {name: pattern, "$options": options} if options else {name: pattern}
    if name == "$all":
        # Deviations 11 and 14: never empty, no array operands.
        if g.safe:
            return {name: draw(st.lists(g.operand(path), min_size=1, max_size=2))}
        return {name: draw(st.lists(g.value(path), max_size=2))}
    if name == "$size":
        assume(not g.safe or path == "l")  # deviation 6
        return {name: draw(st.integers(0, 3))}
    if name == "$type":
        return {name: draw(st.sampled_from(TYPE_SPECS))}
    assume(depth < 2)
    if name == "$not":
        inner_name = draw(st.sampled_from(["$eq", "$gt", "$lt", "$in", "$regex", "$size"]))
        inner = draw(single_operator(g, inner_name, path, depth + 1))
        assume(not (g.safe and "$options" in inner))  # deviation 12
        return {name: inner}
    if draw(st.booleans()):
        value_operators = ["$eq", "$ne", "$gt", "$lt", "$gte", "$in", "$exists", "$regex"]
        inner_names = draw(
            st.lists(st.sampled_from(value_operators), min_size=1, max_size=2, unique=True)
        )
        inner: dict[str, Any] = {}
        for inner_name in inner_names:
            inner.update(draw(single_operator(g, inner_name, path, depth + 1)))
        return {name: inner}
    # Object form: a filter on the elements' fields.
    sub = draw(conditions(g, depth + 1).filter(_top_field_only))
    assume(not (g.safe and any(map(_may_match_null, sub.values()))))  # deviation 9
    return {name: sub}


def _top_field_only(condition: dict[str, Any]) -> bool:
    return all(path in ("b", "c") for path in condition)


@st.composite
def filters(draw: st.DrawFn, g: Gen, depth: int = 0) -> dict[str, Any]:
    # Hypothesis leans towards the first choices, so the rare ones come last.
    kinds = ["fields", "fields", "$or", "$and", "$nor", "empty"]
    kind = draw(st.sampled_from(kinds[: 5 if depth < 2 else 2] if depth else kinds))
    if kind == "empty":
        return {}
    if kind == "fields":
        result: dict[str, Any] = {}
        for _ in range(draw(st.integers(1, 2))):
            result.update(draw(conditions(g)))
        return result
    children = draw(st.lists(filters(g, depth + 1), min_size=1, max_size=3))
    return {kind: children}


@st.composite
def examples(draw: st.DrawFn, *, mongomock_safe: bool) -> tuple[list[dict[str, Any]], Any]:
    docs = draw(st.lists(documents(mongomock_safe=mongomock_safe), min_size=2, max_size=8))
    return docs, draw(filters(Gen(docs, mongomock_safe=mongomock_safe)))


@functools.cache
def sort_documents(*, mongomock_safe: bool) -> st.SearchStrategy[dict[str, Any]]:
    if not mongomock_safe:
        return documents(mongomock_safe=False)
    # Deviation 4: no arrays where sorting looks.
    scalar = scalars(mongomock_safe=True)
    subdoc = st.dictionaries(st.sampled_from(["b", "c"]), scalar, max_size=2)
    flat = st.one_of(scalar, subdoc.map(_fields_in_order))
    fields = {"a": flat, "b": flat, "c": nested(scalar), "l": st.lists(scalar, max_size=3)}
    return st.fixed_dictionaries({}, optional=fields).map(_fields_in_order)


@st.composite
def sort_examples(
    draw: st.DrawFn, *, mongomock_safe: bool
) -> tuple[list[dict[str, Any]], Any, list[tuple[str, int]]]:
    docs = draw(st.lists(sort_documents(mongomock_safe=mongomock_safe), min_size=2, max_size=8))
    flt = draw(filters(Gen(docs, mongomock_safe=mongomock_safe)))
    choices = SORT_PATHS if mongomock_safe else SORT_PATHS_THROUGH_ARRAYS
    paths = draw(st.lists(st.sampled_from(choices), min_size=1, max_size=2, unique=True))
    spec = [(path, draw(st.sampled_from([1, -1]))) for path in paths]
    return docs, flt, spec


def _documents_in_arrays(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    subdoc = st.dictionaries(st.sampled_from(["b", "c"]), inner, max_size=2)
    return st.one_of(subdoc, st.lists(subdoc, max_size=3))


@functools.cache
def projection_documents(*, mongomock_safe: bool) -> st.SearchStrategy[dict[str, Any]]:
    if not mongomock_safe:
        return documents(mongomock_safe=False)
    # Deviation 5: arrays hold documents only.
    value = st.recursive(scalars(mongomock_safe=True), _documents_in_arrays, max_leaves=5)
    return st.fixed_dictionaries({}, optional={"a": value, "b": value, "c": value})


@st.composite
def projection_examples(
    draw: st.DrawFn, *, mongomock_safe: bool
) -> tuple[list[dict[str, Any]], list[str]]:
    document = projection_documents(mongomock_safe=mongomock_safe)
    docs = draw(st.lists(document, min_size=1, max_size=5))
    paths = draw(
        st.lists(st.sampled_from(PROJECTION_PATHS), min_size=1, max_size=3, unique=True).filter(
            _no_collision
        )
    )
    return docs, paths


PROJECTION_PATHS = ["a", "b", "c", "a.b", "a.c", "b.c", "a.b.c", "a.c.b"]


def _no_collision(paths: list[str]) -> bool:
    # MongoDB refuses a path beside its own prefix ("Path collision").
    return not any(p != q and q.startswith(p + ".") for p in paths for q in paths)


SORT_PATHS = ["a", "b", "a.b", "a.c", "b.c"]
SORT_PATHS_THROUGH_ARRAYS = [*SORT_PATHS, "c", "l", "c.b", "a.0"]


# --- oracles ---------------------------------------------------------------------------------


class Oracle:
    """A MongoDB (or mongomock) collection holding one example's documents."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection

    def load(self, docs: dict[str, dict[str, Any]]) -> None:
        self.collection.delete_many({})
        if docs:
            self.collection.insert_many([{"_id": key, **doc} for key, doc in docs.items()])

    def keys(self, flt: dict[str, Any]) -> set[str]:
        return {doc["_id"] for doc in self.collection.find(flt, {"_id": 1})}

    def sorted_keys(self, flt: dict[str, Any], spec: list[tuple[str, int]]) -> list[str]:
        # The key as last sort field makes ties come out in key order, as ours do.
        cursor = self.collection.find(flt, {"_id": 1}).sort([*spec, ("_id", 1)])
        return [doc["_id"] for doc in cursor]

    def projections(self, paths: list[str]) -> dict[str, dict[str, Any]]:
        projection = {"_id": 1, **dict.fromkeys(paths, 1)}
        found = {}
        for doc in self.collection.find({}, projection):
            key = doc.pop("_id")
            found[key] = _aware(doc)
        return found


class PythonOracle(Oracle):
    """``Filter.matches`` as the oracle: for the corners no available oracle judges, the
    index and its SQL plans must at least agree with the pure-Python semantics."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    def load(self, docs: dict[str, dict[str, Any]]) -> None:
        self.docs = docs

    def keys(self, flt: dict[str, Any]) -> set[str]:
        parsed = parse_filter(flt)
        return {key for key, doc in self.docs.items() if parsed.matches(doc)}


def _aware(value: Any) -> Any:
    """mongomock hands datetimes back naive (as pymongo does by default); ours are UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value
    if isinstance(value, dict):
        return {k: _aware(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_aware(v) for v in value]
    return value


@pytest.fixture(scope="module")
def mongomock_oracle() -> Oracle:
    return Oracle(mongomock.MongoClient().db.docs)


@pytest.fixture(scope="module")
def mongodb_oracle() -> Iterator[Oracle]:
    if not MONGODB_URI:
        pytest.skip("S3IDX_TEST_MONGODB_URI is not set: no real MongoDB to compare with")
    import pymongo

    client: Any = pymongo.MongoClient(MONGODB_URI, tz_aware=True, serverSelectionTimeoutMS=5000)
    collection = client.get_database("s3idx_test").get_collection(f"docs_{os.getpid()}")
    yield Oracle(collection)
    collection.drop()
    client.close()


_counter = itertools.count()


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tmp_path_factory.mktemp("differential")


def fresh_index(directory: Any) -> SqliteIndex:
    index = SqliteIndex(directory / f"index-{next(_counter)}.sqlite3")
    index.configure(KEY, SEARCHABLE)
    return index


# --- the comparison --------------------------------------------------------------------------


def check_against(
    oracle: Oracle, index_dir: Any, docs_list: list[dict[str, Any]], flt: dict[str, Any]
) -> None:
    docs = {f"d{n:02d}": doc for n, doc in enumerate(docs_list)}
    oracle.load(docs)
    expected = oracle.keys(flt)

    parsed = parse_filter(flt)
    assert {key for key, doc in docs.items() if parsed.matches(doc)} == expected, "matches"

    index = fresh_index(index_dir)
    try:
        index.upsert([{KEY: key, **doc, "_s3idx": BOOKKEEPING} for key, doc in docs.items()])
        assert {e[KEY] for e in index.find(flt)} == expected, "SqliteIndex.find"
        assert index.count(flt) == len(expected), "SqliteIndex.count"
        candidates, exact = plan_candidates(index, flt)
        event(f"matches: {_share(expected, docs)}; SQL plan: {'exact' if exact else 'superset'}")
        assert expected <= candidates, "the SQL plan lost a match"
        if exact:
            assert candidates == expected, "an exact SQL plan holds a non-match"
    finally:
        index.close()


def _share(found: set[str], docs: dict[str, Any]) -> str:
    if not found:
        return "none"
    return "all" if len(found) == len(docs) else "some"


def plan_candidates(index: SqliteIndex, flt: dict[str, Any]) -> tuple[set[str], bool]:
    """The keys the index's own SQL plan selects (with what it knows of multikey fields)."""
    with index._db.reading() as conn:
        planned = index._planned(conn, parse_filter(flt))
        assert conn is not None and planned is not None
        keys = planned[1]
        where, params = keys.where()
        rows = conn.execute(f"SELECT key FROM {LIVE.entries}{where}", params).fetchall()
    return {row[0] for row in rows}, keys.exact


def check_sort_against(
    oracle: Oracle,
    index_dir: Any,
    docs_list: list[dict[str, Any]],
    flt: dict[str, Any],
    spec: list[tuple[str, int]],
) -> None:
    docs = {f"d{n:02d}": doc for n, doc in enumerate(docs_list)}
    oracle.load(docs)
    parsed = parse_filter(flt)
    entries = [{KEY: key, **doc} for key, doc in docs.items() if parsed.matches(doc)]
    try:
        expected = oracle.sorted_keys(flt, spec)
    except pymongo.errors.OperationFailure as exc:
        # MongoDB refuses to sort by two different arrays; so must we.
        assert "parallel arrays" in str(exc)
        with pytest.raises(InvalidFilterError, match="parallel arrays"):
            sort_entries(entries, spec)
        return
    assert [e[KEY] for e in sort_entries(entries, spec)] == expected, "sort_entries"
    assert [e[KEY] for e in sort_entries(entries, spec, skip=1, limit=2)] == expected[1:3]
    index = fresh_index(index_dir)
    try:
        index.upsert([{KEY: key, **doc, "_s3idx": BOOKKEEPING} for key, doc in docs.items()])
        assert [e[KEY] for e in index.find(flt, sort=spec)] == expected, "find(sort=...)"
        found = [e[KEY] for e in index.find(flt, sort=spec, skip=1, limit=2)]
        assert found == expected[1:3], "find(sort=..., skip=1, limit=2)"
    finally:
        index.close()


def check_projection_against(
    oracle: Oracle, docs_list: list[dict[str, Any]], paths: list[str]
) -> None:
    docs = {f"d{n:02d}": doc for n, doc in enumerate(docs_list)}
    oracle.load(docs)
    expected = oracle.projections(paths)
    for key, doc in docs.items():
        ours = project(doc, paths)
        assert ours == expected[key], key
        assert _field_orders(ours) == _field_orders(expected[key]), key


def _field_orders(value: Any) -> Any:
    if isinstance(value, dict):
        return [(k, _field_orders(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_field_orders(v) for v in value]
    return None


EXAMPLES = settings(
    max_examples=int(os.environ.get("S3IDX_DIFFERENTIAL_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)


@EXAMPLES
@given(examples(mongomock_safe=True))
def test_filters_agree_with_mongomock(
    mongomock_oracle: Oracle, index_dir: Any, example: tuple[list[dict[str, Any]], Any]
) -> None:
    check_against(mongomock_oracle, index_dir, *example)


@EXAMPLES
@given(examples(mongomock_safe=False))
def test_filters_agree_with_mongodb(
    mongodb_oracle: Oracle, index_dir: Any, example: tuple[list[dict[str, Any]], Any]
) -> None:
    check_against(mongodb_oracle, index_dir, *example)


@EXAMPLES
@given(examples(mongomock_safe=False))
def test_index_agrees_with_python_matching_everywhere(
    index_dir: Any, example: tuple[list[dict[str, Any]], Any]
) -> None:
    """Where neither oracle looks (mongomock's blind spots without a MongoDB), the index, its
    SQL plans and ``Filter.matches`` must still agree."""
    check_against(PythonOracle(), index_dir, *example)


@EXAMPLES
@given(sort_examples(mongomock_safe=True))
def test_sort_agrees_with_mongomock(
    mongomock_oracle: Oracle,
    index_dir: Any,
    example: tuple[list[dict[str, Any]], Any, list[tuple[str, int]]],
) -> None:
    check_sort_against(mongomock_oracle, index_dir, *example)


@EXAMPLES
@given(sort_examples(mongomock_safe=False))
def test_sort_agrees_with_mongodb(
    mongodb_oracle: Oracle,
    index_dir: Any,
    example: tuple[list[dict[str, Any]], Any, list[tuple[str, int]]],
) -> None:
    check_sort_against(mongodb_oracle, index_dir, *example)


@EXAMPLES
@given(projection_examples(mongomock_safe=True))
def test_projection_agrees_with_mongomock(
    mongomock_oracle: Oracle, example: tuple[list[dict[str, Any]], list[str]]
) -> None:
    check_projection_against(mongomock_oracle, *example)


@EXAMPLES
@given(projection_examples(mongomock_safe=False))
def test_projection_agrees_with_mongodb(
    mongodb_oracle: Oracle, example: tuple[list[dict[str, Any]], list[str]]
) -> None:
    check_projection_against(mongodb_oracle, *example)


# --- the deviations, pinned ------------------------------------------------------------------


def mongomock_matches(flt: dict[str, Any], document: dict[str, Any]) -> bool:
    collection = mongomock.MongoClient().db.deviation
    collection.insert_one({"_id": 1, **document})
    return bool(list(collection.find(flt)))


def ours(flt: dict[str, Any], document: dict[str, Any]) -> bool:
    return parse_filter(flt).matches(document)


@pytest.mark.parametrize(
    ("flt", "document", "mongodb"),
    [
        # Manual, "Query for Null or Missing Fields"; null_query_semantics.js lists {a: 4} and
        # {a: null} among the matches of {"a.b": {$eq: null}}, and $in with null alike.
        ({"a.b": None}, {"a": 1}, True),
        ({"a.b": None}, {"a": None}, True),
        ({"a.b": {"$in": [None, 75]}}, {"a": 4}, True),
        ({"a.b": {"$ne": None}}, {"a": 1}, False),
        # null_query_semantics.js: {$not: {$gte: null}} excludes the document without "a".
        ({"a": {"$gte": None}}, {}, True),
        # $all [null] is equality with null, which a missing field satisfies.
        ({"a": {"$all": [None]}}, {}, True),
    ],
)
def test_deviation_1_null_through_dead_ends(
    flt: dict[str, Any], document: dict[str, Any], mongodb: bool
) -> None:
    assert ours(flt, document) is mongodb
    assert mongomock_matches(flt, document) is not mongodb


@pytest.mark.parametrize(
    ("flt", "document"),
    [({"a": 1}, {"a": True}), ({"a": {"$in": [0]}}, {"a": False}), ({"a": [1]}, {"a": [True]})],
)
def test_deviation_2_booleans_are_not_numbers(
    flt: dict[str, Any], document: dict[str, Any]
) -> None:
    # Manual, "Comparison/Sort Order": Numbers and Boolean are different BSON types.
    assert not ours(flt, document)
    assert mongomock_matches(flt, document)


def test_deviation_3_document_equality_depends_on_field_order() -> None:
    # Manual, "Query on Embedded/Nested Documents": equality on a whole embedded document
    # requires an exact match, including the field order.
    flt, document = {"a": {"b": 1, "c": 2}}, {"a": {"c": 2, "b": 1}}
    assert not ours(flt, document)
    assert mongomock_matches(flt, document)


def test_deviation_4_sorting_by_an_array() -> None:
    # Manual, cursor.sort(): an ascending sort compares the smallest elements of arrays.
    entries = [{"_id": "x", "a": [3, 1]}, {"_id": "y", "a": [2]}]
    assert [e["_id"] for e in sort_entries(entries, [("a", 1)])] == ["x", "y"]
    collection = mongomock.MongoClient().db.deviation
    collection.insert_many(entries)
    assert [d["_id"] for d in collection.find().sort("a", 1)] == ["y", "x"]


def test_deviation_5_projection_through_non_documents() -> None:
    # null_query_semantics.js: projecting "a.b" of {a: [1, "string", 4]} gives {a: []}.
    document = {"a": [1, {"b": 2, "c": 3}, "x"]}
    assert project(document, ["a.b"]) == {"a": [{"b": 2}]}
    collection = mongomock.MongoClient().db.deviation
    collection.insert_one({"_id": 1, **document})
    with pytest.raises(AttributeError):
        list(collection.find({}, {"a.b": 1}))


@pytest.mark.parametrize("document", [{"a": {"b": 1}}, {"a": 5}])
def test_deviation_6_size_needs_an_array(document: dict[str, Any]) -> None:
    # Manual, $size: "matches any array with the number of elements specified".
    assert not ours({"a": {"$size": 1}}, document)
    assert mongomock_matches({"a": {"$size": 1}}, document)


def test_deviation_7_comparison_with_nested_array_elements() -> None:
    # An array matches a comparison if any element, or the array itself, does; the element
    # [5] is an array and compares with [1] (matcher: ComparisonMatchExpression per element).
    flt, document = {"a": {"$gt": [1]}}, {"a": [0, [5]]}
    assert ours(flt, document)
    assert not mongomock_matches(flt, document)


@pytest.mark.parametrize(
    ("flt", "document", "mongodb"),
    [
        # path.cpp: a document element is searched for a field "0" (missing here) as well as
        # taken as the element at position 0.
        ({"a.0": None}, {"a": [{"x": 1}]}, True),
        # path.cpp: an element reached by position is yielded as it is, not expanded.
        ({"a.0": 1}, {"a": [[1]]}, False),
    ],
)
def test_deviation_8_numeric_steps(
    flt: dict[str, Any], document: dict[str, Any], mongodb: bool
) -> None:
    assert ours(flt, document) is mongodb
    assert mongomock_matches(flt, document) is not mongodb


def test_deviation_9_elem_match_on_an_array_element() -> None:
    # null_query_semantics.js: {a: {$elemMatch: {b: {$eq: null}}}} matches {a: [[]]}.
    flt, document = {"a": {"$elemMatch": {"b": None}}}, {"a": [[]]}
    assert ours(flt, document)
    assert not mongomock_matches(flt, document)


def test_deviation_10_equality_with_the_empty_document() -> None:
    assert not ours({"a": {}}, {})
    assert ours({"a": {}}, {"a": {}})
    assert mongomock_matches({"a": {}}, {})


def test_deviation_11_all_of_nothing() -> None:
    # Manual, $all: "When passed an empty array, $all matches no documents."
    assert not ours({"a": {"$all": []}}, {"a": 1})
    assert mongomock_matches({"a": {"$all": []}}, {"a": 1})


def test_deviation_12_not_with_regex_options() -> None:
    # Manual, $not: accepts {$regex: ..., $options: ...} operator expressions.
    flt = {"a": {"$not": {"$regex": "^x", "$options": "i"}}}
    assert ours(flt, {"a": "y"})
    assert not ours(flt, {"a": "Xy"})
    with pytest.raises(mongomock.OperationFailure, match="unknown operator: \\$options"):
        mongomock_matches(flt, {"a": "y"})


@pytest.mark.parametrize(
    ("flt", "document"),
    [({"a": {"$eq": [1, 2]}}, {"a": [[1, 2], 3]}), ({"a": {"$in": [[1]]}}, {"a": [1]})],
)
def test_deviation_13_array_operands(flt: dict[str, Any], document: dict[str, Any]) -> None:
    # Manual, "Query an Array": an array operand matches an equal element or the whole array.
    assert ours(flt, document)
    assert not mongomock_matches(flt, document)


def test_deviation_14_all_with_an_array_operand() -> None:
    # Manual, $all: {$all: [["a", "b"]]} is equivalent to {$eq: ["a", "b"]}.
    flt, document = {"a": {"$all": [[1, 2]]}}, {"a": [1, 2]}
    assert ours(flt, document)
    assert not mongomock_matches(flt, document)
