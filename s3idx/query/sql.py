"""A parsed filter as SQL over an entries table and its multikey side table.

The side table holds, for every searchable field of every entry, one row ``(field, tclass,
value, key)`` per value that ``paths.iter_path_values`` yields for the field, with ``tclass``
the value's ``TypeClass`` (``MISSING`` rows mark "the path leads nowhere", which equality with
null matches). ``compile_filter`` turns a filter into a SELECT of keys that is a *superset* of
the entries that match; when the plan is *exact* it is the set itself, so counting, skipping
and limiting can happen in SQL, and otherwise the candidates are checked with
``Filter.matches``. Values and field names are always bound parameters; only the table names,
which are this module's own constants, are written into the SQL.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from s3idx.frozen import Frozen, init_field
from s3idx.query.filter import (
    NUMBER_TYPES,
    And,
    Cmp,
    CmpOp,
    ElemMatchObject,
    ElemMatchValue,
    Eq,
    Exists,
    Expr,
    Filter,
    In,
    Never,
    Not,
    Or,
    PathCondition,
    Predicate,
    Regex,
    Size,
    Type,
    ValueAnd,
    ValueExpr,
    ValueNot,
)
from s3idx.query.paths import Path, is_array_index, iter_path_values, split_path
from s3idx.query.values import TypeClass, canonical, type_class

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# SQLite's default SQLITE_MAX_COMPOUND_SELECT is 500; a filter needing more terms than this
# falls back to scanning, which is slower but still right.
MAX_TERMS = 250
# SQLite's parser stack (YYSTACKDEPTH, 100 entries) overflows at about ten nested subqueries
# (fewer parentheses of other kinds cost less). A set whose SQL would nest deeper than this many
# parentheses is given up for a Python check of the candidates: slower, never wrong.
MAX_SQL_NESTING = 9

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_SQL_OPS = {CmpOp.GT: ">", CmpOp.GTE: ">=", CmpOp.LT: "<", CmpOp.LTE: "<="}
_NULLISH = (int(TypeClass.MISSING), int(TypeClass.NULL))


# --- values as SQL ---------------------------------------------------------------------------


_NUMBER, _STRING = int(TypeClass.NUMBER), int(TypeClass.STRING)


def sql_values(value: Any) -> list[tuple[int, Any]]:
    """The ``(tclass, value)`` rows that stand for ``value`` in the side table.

    Numbers are INTEGER or REAL (SQLite compares the two exactly), booleans 0/1 in their own
    class, datetimes milliseconds since the epoch in theirs, documents and arrays their
    canonical text (equal exactly when MongoDB calls them equal). An integer beyond SQLite's
    64-bit range becomes the two floats around it, so a range condition still finds it.
    """
    kind = type(value)
    if kind is str:  # the common cases first: this runs for every value of every entry
        return [(_STRING, value)]
    if kind is float or (kind is int and INT64_MIN <= value <= INT64_MAX):
        return [(_NUMBER, value)]
    tclass = type_class(value)
    if tclass in (TypeClass.MISSING, TypeClass.NULL):
        return [(int(tclass), None)]
    if tclass is TypeClass.NUMBER and isinstance(value, int) and not _fits_int64(value):
        return [(int(tclass), bound) for bound in _floats_around(value)]
    return [(int(tclass), _scalar(tclass, value))]


def _scalar(tclass: TypeClass, value: Any) -> Any:
    if tclass is TypeClass.BOOL:
        return int(value)
    if tclass is TypeClass.DATE:
        return (value - _EPOCH) // _MS
    if tclass in (TypeClass.OBJECT, TypeClass.ARRAY):
        return canonical(value)
    return value


def _fits_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def _floats_around(value: int) -> tuple[float, ...]:
    nearest = float(value)
    if int(nearest) > value:
        return math.nextafter(nearest, -math.inf), nearest
    if int(nearest) < value:
        return nearest, math.nextafter(nearest, math.inf)
    return (nearest,)


def _exact_number(value: Any) -> bool:
    # Beyond 2**63 the side table may hold rounded floats, so equality and order there are
    # only approximately right: such conditions are re-checked in Python.
    return isinstance(value, bool) or not isinstance(value, int | float) or abs(value) < 2**63


@functools.lru_cache(maxsize=256)
def _parts(path: str) -> Path:
    return split_path(path)


def index_rows(entry: Mapping[str, Any], fields: Iterable[str]) -> list[tuple[str, int, Any]]:
    """The side-table rows ``(field, tclass, value)`` of one entry, without duplicates."""
    rows: list[tuple[str, int, Any]] = []
    for path in fields:
        seen: set[tuple[int, Any]] = set()
        for value in iter_path_values(entry, _parts(path)):
            for row in sql_values(value):
                if row not in seen:
                    seen.add(row)
                    rows.append((path, *row))
    return rows


# --- key sets --------------------------------------------------------------------------------


class _Kind(Enum):
    ALL = "all"
    NONE = "none"
    SELECT = "select"


class KeySet(Frozen):
    """A set of keys: every entry, no entry, or the entries that pass ``direct`` (a condition
    on the entries table's own key column) and whose key the SELECT ``sql`` returns.

    ``exact`` says the set is precisely the matching entries; otherwise it is a superset.
    """

    __slots__ = ("compound", "direct", "direct_params", "exact", "kind", "params", "sql", "terms")
    _fields = ("kind", "exact", "sql", "params", "direct", "direct_params", "terms", "compound")
    kind: _Kind
    exact: bool
    sql: str
    params: tuple[Any, ...]
    direct: str
    direct_params: tuple[Any, ...]
    terms: int
    compound: bool

    def __init__(
        self,
        kind: _Kind,
        exact: bool,
        sql: str = "",
        params: tuple[Any, ...] = (),
        direct: str = "",
        direct_params: tuple[Any, ...] = (),
        terms: int = 0,
        compound: bool = False,
    ) -> None:
        init_field(self, "kind", kind)
        init_field(self, "exact", exact)
        init_field(self, "sql", sql)
        init_field(self, "params", params)
        init_field(self, "direct", direct)
        init_field(self, "direct_params", direct_params)
        init_field(self, "terms", terms)
        init_field(self, "compound", compound)

    @property
    def is_all(self) -> bool:
        return self.kind is _Kind.ALL

    @property
    def is_none(self) -> bool:
        return self.kind is _Kind.NONE

    def where(self) -> tuple[str, tuple[Any, ...]]:
        """A WHERE clause (possibly empty) restricting an entries scan to this set."""
        if self.kind is _Kind.ALL:
            return "", ()
        if self.kind is _Kind.NONE:
            return " WHERE 0", ()
        conditions = [self.direct] if self.direct else []
        if self.sql:
            conditions.append(f"key IN ({self.sql})")
        return " WHERE " + " AND ".join(conditions), (*self.direct_params, *self.params)

    def with_exact(self, exact: bool) -> KeySet:
        return KeySet(
            self.kind, exact, self.sql, self.params, self.direct, self.direct_params,
            self.terms, self.compound,
        )  # fmt: skip


def _shallow(keys: KeySet) -> KeySet:
    """``keys``, or every key (to be checked in Python) when its SQL nests too deep."""
    if max(_nesting(keys.sql), _nesting(keys.direct)) > MAX_SQL_NESTING:
        return _all(False)
    return keys


def _nesting(sql: str) -> int:
    # Values are always bound parameters, so every parenthesis in the text is structure.
    depth = deepest = 0
    for char in sql:
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def _all(exact: bool) -> KeySet:
    return KeySet(_Kind.ALL, exact)


_NONE = KeySet(_Kind.NONE, True)


def _select(sql: str, params: Iterable[Any], exact: bool) -> KeySet:
    return KeySet(_Kind.SELECT, exact, sql, tuple(params), terms=1)


def _direct(condition: str, params: Iterable[Any]) -> KeySet:
    return KeySet(_Kind.SELECT, True, direct=condition, direct_params=tuple(params))


class Tables(Frozen):
    __slots__ = ("entries", "values")
    _fields = ("entries", "values")
    entries: str
    values: str

    def __init__(self, entries: str = "entries", values: str = "entry_values") -> None:
        init_field(self, "entries", entries)
        init_field(self, "values", values)


_TABLES = Tables()  # the live index's


def compile_filter(
    flt: Filter,
    *,
    key_field: str,
    fields: Collection[str],
    multikey: Collection[str] | None = None,
    tables: Tables = _TABLES,
    max_params: int | None = None,
) -> KeySet:
    """The keys that may match ``flt``: exactly those when the result says ``exact``.

    ``multikey`` names the searchable fields some entry has several values for (None: assume
    all); conditions on one of the others may be combined on a single row. A set needing more
    than ``max_params`` bound values (SQLite's limit, for a $in of 300,000 values) is given up
    for every key, checked in Python: slower, never refused.
    """
    searchable = frozenset(fields) - {key_field}
    single = searchable - (searchable if multikey is None else frozenset(multikey))
    keys = _Compiler(key_field, searchable, single, tables).expr(flt.expr)
    if max_params is not None and len(keys.params) + len(keys.direct_params) > max_params:
        return _all(False)
    return keys


class _Compiler:
    def __init__(
        self, key_field: str, fields: frozenset[str], single: frozenset[str], tables: Tables
    ) -> None:
        self.key_field = key_field
        self.fields = fields
        self.single_valued = single
        self.t = tables

    # combinators

    def expr(self, expr: Expr) -> KeySet:
        if isinstance(expr, PathCondition):
            return self.condition(expr.path, expr.parts, expr.predicate)
        if isinstance(expr, And):
            merged, rest = self.merge_ranges(expr.children)
            return _shallow(self.intersect([*merged, *(self.expr(c) for c in rest)]))
        if isinstance(expr, Or):
            return _shallow(self.union([self.expr(c) for c in expr.children]))
        if isinstance(expr.child, Not):  # $not of $not: the condition itself
            return self.expr(expr.child.child)
        return _shallow(self.complement(self.expr(expr.child)))

    def intersect(self, sets: list[KeySet]) -> KeySet:
        exact = all(s.exact for s in sets)
        if any(s.is_none for s in sets):
            return _NONE
        sets = [s for s in sets if not s.is_all]
        if not sets:
            return _all(exact)
        if len(sets) == 1:
            return sets[0].with_exact(exact)
        selects = [s for s in sets if s.sql]
        compound = self._compound("INTERSECT", selects) if selects else None
        if compound is None and selects:
            return _all(False)
        direct = " AND ".join(f"({s.direct})" for s in sets if s.direct)
        return KeySet(
            _Kind.SELECT,
            exact,
            compound.sql if compound else "",
            compound.params if compound else (),
            direct,
            tuple(p for s in sets for p in s.direct_params),
            compound.terms if compound else 0,
            compound.compound if compound else False,
        )

    def union(self, sets: list[KeySet]) -> KeySet:
        exact = all(s.exact for s in sets)
        if any(s.is_all for s in sets):
            return _all(exact)
        sets = [s for s in sets if not s.is_none]
        if not sets:
            return _NONE
        if len(sets) == 1:
            return sets[0].with_exact(exact)
        compound = self._compound("UNION", [self._as_select(s) for s in sets])
        return _all(False) if compound is None else compound.with_exact(exact)

    def complement(self, inner: KeySet) -> KeySet:
        # Only an exact set can be negated: the complement of a superset says nothing.
        if not inner.exact:
            return _all(False)
        if inner.is_none:
            return _all(True)
        if inner.is_all:
            return _NONE
        if not inner.sql:
            return _direct(f"NOT ({inner.direct})", inner.direct_params)
        every = _select(f"SELECT key FROM {self.t.entries}", (), True)
        compound = self._compound("EXCEPT", [every, self._as_select(inner)])
        return _all(False) if compound is None else compound

    def _as_select(self, keys: KeySet) -> KeySet:
        if not keys.direct:
            return keys
        where, params = keys.where()
        sql = f"SELECT key FROM {self.t.entries}{where}"
        return KeySet(_Kind.SELECT, keys.exact, sql, params, terms=max(keys.terms, 1))

    def _compound(self, operator: str, sets: list[KeySet]) -> KeySet | None:
        """The sets joined by ``operator``; None when that would be too big for SQLite."""
        if len(sets) == 1:
            return sets[0]
        terms = sum(s.terms for s in sets)
        if terms > MAX_TERMS:
            return None
        members = [f"SELECT key FROM ({s.sql})" if s.compound else s.sql for s in sets]
        params = tuple(p for s in sets for p in s.params)
        exact = all(s.exact for s in sets)
        sql = f" {operator} ".join(members)
        return KeySet(_Kind.SELECT, exact, sql, params, terms=terms, compound=True)

    def merge_ranges(self, children: tuple[Expr, ...]) -> tuple[list[KeySet], list[Expr]]:
        """Range conditions on one single-valued field, combined into one lookup.

        ``{"n": {"$gte": 1, "$lt": 5}}`` may be met by two different values of an array, so
        in general each bound is its own lookup; where every entry holds one value at most,
        both bounds can apply to the same row.
        """
        groups: dict[tuple[str, int], list[Cmp]] = {}
        rest: list[Expr] = []
        for child in children:
            mergeable = (
                isinstance(child, PathCondition)
                and child.path in self.single_valued
                and isinstance(child.predicate, Cmp)
                and type_class(child.predicate.value) in _ORDERED_CLASSES
                and _exact_number(child.predicate.value)
            )
            if mergeable:
                assert isinstance(child, PathCondition) and isinstance(child.predicate, Cmp)
                tclass = int(type_class(child.predicate.value))
                groups.setdefault((child.path, tclass), []).append(child.predicate)
            else:
                rest.append(child)
        merged = []
        for (path, tclass), bounds in groups.items():
            clause = " AND ".join(f"value {_SQL_OPS[b.op]} ?" for b in bounds)
            params = [tclass, *(sql_values(b.value)[0][1] for b in bounds)]
            merged.append(self.rows(path, [(f"tclass = ? AND {clause}", params)], True))
        return merged, rest

    # conditions on one path

    def condition(self, path: str, parts: Path, predicate: Predicate) -> KeySet:
        if path == self.key_field and "." not in path:
            return self.key_condition(predicate)
        if path in self.fields:
            return self.field_condition(path, parts, predicate)
        return _all(False)

    def key_condition(self, predicate: Predicate) -> KeySet:
        """The key field: always present, always a string, the primary key."""
        if isinstance(predicate, Eq):
            if isinstance(predicate.value, str):
                return _direct("key = ?", [predicate.value])
            return _NONE
        if isinstance(predicate, In):
            keys = sorted({v for v in predicate.values if isinstance(v, str)})
            if not keys:
                return _NONE
            return _direct(f"key IN ({_marks(len(keys))})", keys)
        if isinstance(predicate, Cmp):
            if isinstance(predicate.value, str):
                return _direct(f"key {_SQL_OPS[predicate.op]} ?", [predicate.value])
            return _NONE
        if isinstance(predicate, Exists):
            return _all(True)
        if isinstance(predicate, Regex | Type):
            return _all(False)
        # $size, $elemMatch and $all [] need an array; a key is a string.
        return _NONE

    def field_condition(self, path: str, parts: Path, predicate: Predicate) -> KeySet:
        if isinstance(predicate, Eq):
            return self.rows(path, _equal_rows(predicate.value), _exact_number(predicate.value))
        if isinstance(predicate, In):
            exact = all(_exact_number(v) for v in predicate.values)
            clauses = [c for v in predicate.values for c in _equal_rows(v)]
            return self.rows(path, _merge_in(clauses), exact)
        if isinstance(predicate, Cmp):
            return self.comparison(path, predicate)
        if isinstance(predicate, Exists):
            return self.rows(path, [("tclass <> ?", [int(TypeClass.MISSING)])], True)
        if isinstance(predicate, Regex):
            return self.rows(path, _class_rows(TypeClass.STRING), False)
        if isinstance(predicate, Never):
            return _NONE
        if isinstance(predicate, Type):
            return self.type_condition(path, predicate)
        arrays = self.rows(path, _class_rows(TypeClass.ARRAY), False)
        if isinstance(predicate, ElemMatchValue) and not any(map(is_array_index, parts)):
            # Each element of a matching array is a row too, so what the elements must be
            # narrows the candidates (numeric steps reach arrays the rows do not expand).
            inner = self.element_condition(path, parts, predicate.condition)
            return self.intersect([arrays, inner.with_exact(False)])
        assert isinstance(predicate, Size | ElemMatchValue | ElemMatchObject)
        return arrays

    def type_condition(self, path: str, predicate: Type) -> KeySet:
        classes = sorted({int(_TYPE_CLASS[c]) for c in predicate.codes if c in _TYPE_CLASS})
        if not classes:
            return _NONE
        # Exact where the asked types cover whole classes (all numbers, or a class of one).
        numbers = predicate.codes & NUMBER_TYPES
        exact = not numbers or predicate.codes >= NUMBER_TYPES
        return self.rows(path, [(f"tclass IN ({_marks(len(classes))})", classes)], exact)

    def element_condition(self, path: str, parts: Path, condition: ValueExpr) -> KeySet:
        if isinstance(condition, ValueAnd):
            return self.intersect([self.element_condition(path, parts, c) for c in condition.items])
        if isinstance(condition, ValueNot):
            return _all(False)
        if isinstance(condition, ElemMatchValue | ElemMatchObject | Size):
            # An element that is an array is a row, but its own elements are not.
            return self.rows(path, _class_rows(TypeClass.ARRAY), False)
        return self.field_condition(path, parts, condition)

    def comparison(self, path: str, predicate: Cmp) -> KeySet:
        value = predicate.value
        if value is None:
            if predicate.op in (CmpOp.GTE, CmpOp.LTE):
                return self.rows(path, _equal_rows(None), True)
            return _NONE
        tclass = type_class(value)
        if tclass in (TypeClass.OBJECT, TypeClass.ARRAY):
            return self.rows(path, _class_rows(tclass), False)
        # A value beyond 64 bits stands as the floats around it; bounding by the outer one
        # keeps every candidate.
        rounded = [v for _, v in sql_values(value)]
        bound = rounded[0] if predicate.op in (CmpOp.GT, CmpOp.GTE) else rounded[-1]
        clause = f"tclass = ? AND value {_SQL_OPS[predicate.op]} ?"
        return self.rows(path, [(clause, [int(tclass), bound])], _exact_number(value))

    def rows(self, path: str, clauses: list[tuple[str, list[Any]]], exact: bool) -> KeySet:
        if not clauses:  # $in: [] matches nothing
            return _NONE
        where = " OR ".join(f"({sql})" for sql, _ in clauses)
        params: list[Any] = [path, *(p for _, ps in clauses for p in ps)]
        sql = f"SELECT key FROM {self.t.values} WHERE field = ? AND ({where})"
        return _select(sql, params, exact)


_ORDERED_CLASSES = (TypeClass.NUMBER, TypeClass.STRING, TypeClass.BOOL, TypeClass.DATE)


def _equal_rows(value: Any) -> list[tuple[str, list[Any]]]:
    if value is None:
        return [("tclass IN (?, ?)", list(_NULLISH))]
    return [("tclass = ? AND value = ?", [tclass, v]) for tclass, v in sql_values(value)]


_TYPE_CLASS = {
    1: TypeClass.NUMBER,
    16: TypeClass.NUMBER,
    18: TypeClass.NUMBER,
    19: TypeClass.NUMBER,
    2: TypeClass.STRING,
    3: TypeClass.OBJECT,
    4: TypeClass.ARRAY,
    8: TypeClass.BOOL,
    9: TypeClass.DATE,
    10: TypeClass.NULL,
}


def _class_rows(tclass: TypeClass) -> list[tuple[str, list[Any]]]:
    return [("tclass = ?", [int(tclass)])]


def _merge_in(clauses: list[tuple[str, list[Any]]]) -> list[tuple[str, list[Any]]]:
    """Equalities of one class grouped into ``value IN (...)``, so a long $in stays one term."""
    by_class: dict[int, list[Any]] = {}
    merged: list[tuple[str, list[Any]]] = []
    for sql, params in clauses:
        if sql.startswith("tclass = ? AND value = ?"):
            by_class.setdefault(params[0], []).append(params[1])
        elif (sql, params) not in merged:
            merged.append((sql, params))
    for tclass, values in by_class.items():
        merged.append((f"tclass = ? AND value IN ({_marks(len(values))})", [tclass, *values]))
    return merged


def _marks(count: int) -> str:
    return ", ".join("?" * count)
