"""MongoDB query filters: validation and matching in pure Python.

``parse_filter`` turns a filter object into a tree of expressions; ``Filter.matches`` evaluates it
on a document with MongoDB's semantics (the classic matcher in ``src/mongo/db/matcher``):

- a condition on a path holds if it holds for *any* value the path yields (see
  ``paths.iter_path_values``: array elements and the array itself);
- ``$ne``, ``$nin``, ``$not`` and ``$exists: false`` negate the whole condition on the path, so
  ``{"a": {"$ne": 5}}`` means "no value of a is 5" and matches a document without ``a``;
- equality with null also matches a missing value, and so do ``$gte``/``$lte`` null and ``$in``
  with a null;
- comparisons only hold between values of the same type class ("type bracketing"); int and
  float compare by value; booleans are not numbers; datetimes compare with datetimes only;
- several conditions on one path each pick their own value: ``{"a": {"$gt": 1, "$lt": 5}}``
  matches ``{"a": [0, 9]}``; ``$elemMatch`` asks one element to satisfy them all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any

from s3idx.codec import is_date_tag, normalize_datetime, parse_date_tag
from s3idx.errors import InvalidFilterError
from s3idx.frozen import Frozen, init_field
from s3idx.limits import MAX_NESTING, NESTING_MESSAGE, json_depth
from s3idx.query.paths import Path, iter_path_values, split_path
from s3idx.query.values import MISSING, canonical, compare, type_class

SUPPORTED_OPERATORS = (
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$exists",
    "$and",
    "$or",
    "$nor",
    "$not",
    "$regex",
    "$options",
    "$all",
    "$size",
    "$type",
    "$elemMatch",
)
LOGICAL_OPERATORS = ("$and", "$or", "$nor")
# $options flag -> the name of regex's flag; MongoDB accepts "u" and ignores it (it always
# matches in UTF mode), as drivers may send it. "i" is none of regex's: its case folding is not
# PCRE2's, so the translation writes out PCRE2's caseless sets itself (s3idx.query.pcre).
REGEX_FLAGS = {"i": None, "m": "MULTILINE", "s": "DOTALL", "x": "VERBOSE", "u": None}
# Seconds one $regex may spend on one value, as MongoDB's PCRE has a match limit.
REGEX_TIME_LIMIT = 1.0


class CmpOp(Enum):
    GT = "$gt"
    GTE = "$gte"
    LT = "$lt"
    LTE = "$lte"

    def holds(self, order: int) -> bool:
        if self is CmpOp.GT:
            return order > 0
        if self is CmpOp.GTE:
            return order >= 0
        if self is CmpOp.LT:
            return order < 0
        return order <= 0


# --- conditions on one value (MongoDB's matchesSingleElement) -------------------------------
# Each has ``test(value)``, where MISSING stands for "nothing there", and says whether the
# path is to be walked with arrays at its end expanded (``traverse_leaf_arrays``).


class Eq(Frozen):
    __slots__ = ("value",)
    _fields = __slots__
    traverse_leaf_arrays = True
    value: Any

    def __init__(self, value: Any) -> None:
        init_field(self, "value", value)

    def test(self, value: Any) -> bool:
        if self.value is None:
            return value is None or value is MISSING
        # Values of different type classes never compare equal (MISSING has a class of its own).
        return compare(value, self.value) == 0


class Cmp(Frozen):
    __slots__ = ("op", "value")
    _fields = ("op", "value")
    traverse_leaf_arrays = True
    op: CmpOp
    value: Any

    def __init__(self, op: CmpOp, value: Any) -> None:
        init_field(self, "op", op)
        init_field(self, "value", value)

    def test(self, value: Any) -> bool:
        if self.value is None or value is None or value is MISSING:
            # null and missing form one class here: $gte/$lte null match both, $gt/$lt nothing.
            nullish = value is None or value is MISSING
            return nullish and self.value is None and self.op in (CmpOp.GTE, CmpOp.LTE)
        if type_class(value) != type_class(self.value):
            return False
        return self.op.holds(compare(value, self.value))


class In(Frozen):
    __slots__ = ("has_null", "keys", "values")
    _fields = ("values",)
    traverse_leaf_arrays = True
    values: tuple[Any, ...]
    has_null: bool
    keys: frozenset[str]

    def __init__(self, values: tuple[Any, ...]) -> None:
        init_field(self, "values", values)
        init_field(self, "has_null", any(v is None for v in values))
        init_field(self, "keys", frozenset(canonical(v) for v in values if v is not None))

    def test(self, value: Any) -> bool:
        if value is None or value is MISSING:
            return self.has_null
        return canonical(value) in self.keys


class Exists(Frozen):
    __slots__ = ()
    traverse_leaf_arrays = True

    def test(self, value: Any) -> bool:
        return value is not MISSING


class Regex(Frozen):
    __slots__ = ("compiled", "options", "pattern")
    _fields = ("pattern", "options")
    traverse_leaf_arrays = True
    pattern: str
    options: str
    compiled: Any

    def __init__(self, pattern: str, options: str) -> None:
        init_field(self, "pattern", pattern)
        init_field(self, "options", options)
        # Not the standard library's re: its matching cannot be bounded in time, and a Ctrl-C
        # waits until a catastrophic backtrack ends (never, in practice). regex takes a timeout
        # and checks for signals while it matches. Imported here: ~25 ms that a query without
        # $regex does not need (start-up time, issue 17).
        import regex

        from s3idx.query.pcre import translate  # its patterns: ~1 ms a query need not pay

        flags = 0
        for flag in self.options:
            name = REGEX_FLAGS[flag]
            flags |= getattr(regex, name) if name else 0
        try:
            # MongoDB's meaning (PCRE2), in regex's syntax: see s3idx.query.pcre.
            translated = translate(self.pattern, self.options)
            compiled = regex.compile(translated, flags)
        except InvalidFilterError as exc:
            raise InvalidFilterError(f"invalid $regex {self.pattern!r}: {exc}") from None
        except (MemoryError, RecursionError):
            # regex's compiler gives up on some patterns so (recursion such as (?R)): the
            # pattern's doing, not the machine's memory.
            raise InvalidFilterError(
                f"invalid $regex {self.pattern!r}: too large or too deeply recursive to compile"
            ) from None
        except regex.error as exc:
            # A position in the translated pattern would point the user at the wrong place.
            reason = str(exc) if translated == self.pattern else getattr(exc, "msg", str(exc))
            raise InvalidFilterError(f"invalid $regex {self.pattern!r}: {reason}") from None
        init_field(self, "compiled", compiled)

    def test(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:
            return self.compiled.search(value, timeout=REGEX_TIME_LIMIT) is not None
        except (MemoryError, RecursionError):
            raise InvalidFilterError(
                f"$regex {self.pattern!r} recursed too deeply on one value (PCRE2 limits it too)",
                hint="a pattern that calls itself, such as (?R), needs a way to stop",
            ) from None
        except TimeoutError:
            raise InvalidFilterError(
                f"$regex {self.pattern!r} took more than {REGEX_TIME_LIMIT:g} s on one value "
                "(matching is limited, as MongoDB limits it)",
                hint="the pattern backtracks without end, typically a repetition inside a "
                "repetition such as (a+)+ or (a|aa)+; rewrite it without the nesting",
            ) from None


class Size(Frozen):
    __slots__ = ("size",)
    _fields = __slots__
    traverse_leaf_arrays = False
    size: int

    def __init__(self, size: int) -> None:
        init_field(self, "size", size)

    def test(self, value: Any) -> bool:
        return isinstance(value, list) and len(value) == self.size


# BSON type aliases and numbers that entries can hold (``$type``), as MongoDB names them.
BSON_TYPES = {
    "double": 1,
    "string": 2,
    "object": 3,
    "array": 4,
    "bool": 8,
    "date": 9,
    "null": 10,
    "int": 16,
    "long": 18,
    "decimal": 19,
}
# The other aliases MongoDB takes: types no entry can hold (JSON has none of them), so they
# match nothing, as their codes do.
ABSENT_BSON_TYPES = {
    "binData": 5,
    "undefined": 6,
    "objectId": 7,
    "regex": 11,
    "dbPointer": 12,
    "javascript": 13,
    "symbol": 14,
    "javascriptWithScope": 15,
    "timestamp": 17,
    "minKey": -1,
    "maxKey": 127,
}
NUMBER_TYPES = frozenset({1, 16, 18, 19})
# The codes MongoDB's $type accepts (isValidBSONType, without 0, end of object): minKey, the
# types 1 to 19 and maxKey; entries hold some of them only, the rest match nothing.
TYPE_CODES = frozenset({-1, *range(1, 20), 127})
TYPE_CODES_TEXT = "MongoDB's type codes are -1 (minKey), 1 to 19 and 127 (maxKey)"
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def bson_type(value: Any) -> int:
    """The BSON type number pymongo gives a value (an int that fits 32 bits is "int")."""
    if value is None:
        return 10
    if isinstance(value, bool):
        return 8
    if isinstance(value, int):
        return 16 if INT32_MIN <= value <= INT32_MAX else 18
    if isinstance(value, float):
        return 1
    if isinstance(value, str):
        return 2
    if isinstance(value, dict):
        return 3
    if isinstance(value, list | tuple):
        return 4
    if isinstance(value, datetime):
        return 9
    return 0


class Type(Frozen):
    """``$type``: the value's BSON type is one of ``codes``; an array matches "array"."""

    __slots__ = ("codes",)
    _fields = __slots__
    traverse_leaf_arrays = True
    codes: frozenset[int]

    def __init__(self, codes: frozenset[int]) -> None:
        init_field(self, "codes", codes)

    def test(self, value: Any) -> bool:
        return value is not MISSING and bson_type(value) in self.codes


class Never(Frozen):
    """``$all: []``, which MongoDB defines to match nothing."""

    __slots__ = ()
    traverse_leaf_arrays = True

    def test(self, value: Any) -> bool:
        return False


class ValueAnd(Frozen):
    """Several operators on one value, inside ``$elemMatch``."""

    __slots__ = ("items",)
    _fields = __slots__
    items: tuple[ValueExpr, ...]

    def __init__(self, items: tuple[ValueExpr, ...]) -> None:
        init_field(self, "items", items)

    def test(self, value: Any) -> bool:
        return all(item.test(value) for item in self.items)


class ValueNot(Frozen):
    __slots__ = ("item",)
    _fields = __slots__
    item: ValueExpr

    def __init__(self, item: ValueExpr) -> None:
        init_field(self, "item", item)

    def test(self, value: Any) -> bool:
        return not self.item.test(value)


class ElemMatchValue(Frozen):
    """``{"$elemMatch": {"$gt": 1, "$lt": 5}}``: one element satisfies every operator."""

    __slots__ = ("condition",)
    _fields = __slots__
    traverse_leaf_arrays = False
    condition: ValueExpr

    def __init__(self, condition: ValueExpr) -> None:
        init_field(self, "condition", condition)

    def test(self, value: Any) -> bool:
        return isinstance(value, list) and any(self.condition.test(item) for item in value)


class ElemMatchObject(Frozen):
    """``{"$elemMatch": {"x": 1}}``: one element, as a document, matches the filter.

    MongoDB tries elements that are arrays too, as documents with fields "0", "1", ...
    """

    __slots__ = ("filter",)
    _fields = __slots__
    traverse_leaf_arrays = False
    filter: Expr

    def __init__(self, filter: Expr) -> None:
        init_field(self, "filter", filter)

    def test(self, value: Any) -> bool:
        if not isinstance(value, list):
            return False
        return any(
            self.filter.matches(as_document(item))
            for item in value
            if isinstance(item, dict | list)
        )


Predicate = Eq | Cmp | In | Exists | Regex | Size | Type | Never | ElemMatchValue | ElemMatchObject
ValueExpr = Predicate | ValueAnd | ValueNot


def as_document(value: dict[str, Any] | list[Any]) -> dict[str, Any]:
    if isinstance(value, list):
        return {str(n): item for n, item in enumerate(value)}
    return value


# --- conditions on documents -----------------------------------------------------------------


class PathCondition(Frozen):
    """A predicate on a path: true if any value the path yields satisfies it."""

    __slots__ = ("parts", "path", "predicate")
    _fields = ("path", "parts", "predicate")
    path: str
    parts: Path
    predicate: Predicate

    def __init__(self, path: str, parts: Path, predicate: Predicate) -> None:
        init_field(self, "path", path)
        init_field(self, "parts", parts)
        init_field(self, "predicate", predicate)

    def matches(self, document: Mapping[str, Any]) -> bool:
        values = iter_path_values(
            document, self.parts, traverse_leaf_arrays=self.predicate.traverse_leaf_arrays
        )
        return any(self.predicate.test(value) for value in values)


class And(Frozen):
    __slots__ = ("children",)
    _fields = __slots__
    children: tuple[Expr, ...]

    def __init__(self, children: tuple[Expr, ...]) -> None:
        init_field(self, "children", children)

    def matches(self, document: Mapping[str, Any]) -> bool:
        return all(child.matches(document) for child in self.children)


class Or(Frozen):
    __slots__ = ("children",)
    _fields = __slots__
    children: tuple[Expr, ...]

    def __init__(self, children: tuple[Expr, ...]) -> None:
        init_field(self, "children", children)

    def matches(self, document: Mapping[str, Any]) -> bool:
        return any(child.matches(document) for child in self.children)


class Not(Frozen):
    __slots__ = ("child",)
    _fields = __slots__
    child: Expr

    def __init__(self, child: Expr) -> None:
        init_field(self, "child", child)

    def matches(self, document: Mapping[str, Any]) -> bool:
        return not self.child.matches(document)


Expr = PathCondition | And | Or | Not


class Filter(Frozen):
    """A validated filter; ``matches`` applies MongoDB's semantics to one document."""

    __slots__ = ("expr",)
    _fields = __slots__
    expr: Expr

    def __init__(self, expr: Expr) -> None:
        init_field(self, "expr", expr)

    def matches(self, document: Mapping[str, Any]) -> bool:
        return self.expr.matches(document)

    def matches_everything(self) -> bool:
        """Whether it matches every document whatever the document holds, by its form alone:
        empty documents (``{}``, ``{"$and": [{}]}``, ``{"$or": [{}, …]}``), or conditions
        that can match nothing, negated (``{"$nor": [{"a": {"$in": []}}]}``). A condition
        that happens to hold for every stored document is not seen."""
        return _everything(self.expr)


def _everything(expr: Expr) -> bool:
    if isinstance(expr, And):
        return all(_everything(child) for child in expr.children)
    if isinstance(expr, Or):
        return any(_everything(child) for child in expr.children)
    if isinstance(expr, Not):
        return _nothing(expr.child)
    return False


def _nothing(expr: Expr) -> bool:
    if isinstance(expr, And):
        return any(_nothing(child) for child in expr.children)
    if isinstance(expr, Or):
        return all(_nothing(child) for child in expr.children)
    if isinstance(expr, Not):
        return _everything(expr.child)
    predicate = expr.predicate
    return isinstance(predicate, Never) or (isinstance(predicate, In) and not predicate.values)


# --- parsing ---------------------------------------------------------------------------------


def parse_filter(obj: Any) -> Filter:
    """Validate a MongoDB filter; InvalidFilterError says what is wrong and where.

    As in MongoDB, operators ($and, $or, $nor, $not, $elemMatch) nest at most MAX_NESTING
    levels deep, and so do documents inside the filter.
    """
    return Filter(_parse_document(obj, "filter", 0))


def check_filter_object(obj: Any) -> None:
    """Refuse a filter that is not a mapping, as ``parse_filter`` does, on every backend."""
    if not isinstance(obj, Mapping):
        raise InvalidFilterError(f"filter must be a JSON object, got {_kind(obj)}")


def check_nesting(obj: Any) -> None:
    """Refuse a filter nested deeper than ``parse_filter`` allows, without parsing it.

    For checks above the backends (``query.indexed.check_query_paths`` walks the filter
    recursively; every index then validates it with ``parse_filter``): the same limit, counted
    the same way (a level per $and, $or, $nor, $not and $elemMatch, and the depth of literal
    values), with no recursion, so any depth is refused cleanly. ``$type`` arguments are checked
    on the way as ``parse_filter`` checks them.
    """
    # (a filter document or an object of operators, its level)
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, Mapping):
            continue
        for name, value in node.items():
            if name in LOGICAL_OPERATORS and isinstance(value, list | tuple):
                stack.extend((item, _deeper(depth)) for item in value)
            elif name in ("$not", "$elemMatch"):
                stack.append((value, _deeper(depth)))
            elif name == "$type":
                _type_codes(value)
            elif _is_operator_object(value):
                stack.append((value, depth))
            elif depth + json_depth(value) > MAX_NESTING:
                raise InvalidFilterError(NESTING_MESSAGE)


def _deeper(depth: int) -> int:
    if depth >= MAX_NESTING:
        raise InvalidFilterError(NESTING_MESSAGE)
    return depth + 1


def _parse_document(obj: Any, where: str, depth: int) -> Expr:
    if not isinstance(obj, Mapping):
        raise InvalidFilterError(f"{where} must be a JSON object, got {_kind(obj)}")
    children: list[Expr] = []
    for name, value in obj.items():
        if not isinstance(name, str):
            raise InvalidFilterError(f"{where} has a non-string field name {name!r}")
        if name.startswith("$"):
            children.append(_parse_top_operator(name, value, depth))
        else:
            children.append(_parse_field(name, value, depth))
    return children[0] if len(children) == 1 else And(tuple(children))


def _parse_top_operator(name: str, value: Any, depth: int) -> Expr:
    if name not in LOGICAL_OPERATORS:
        if name in SUPPORTED_OPERATORS:
            raise InvalidFilterError(
                f'{name} applies to a field, as in {{"field": {{"{name}": ...}}}}; '
                "it cannot stand at the top level of a filter"
            )
        raise _unknown_operator(name)
    if not isinstance(value, list | tuple) or not value:
        raise InvalidFilterError(
            f"{name} needs a non-empty array of filter objects, got {_kind(value)}"
        )
    inner = _deeper(depth)
    children = tuple(_parse_document(item, f"each element of {name}", inner) for item in value)
    if name == "$and":
        return And(_flatten(And, children))
    if name == "$or":
        return Or(_flatten(Or, children))
    return Not(Or(_flatten(Or, children)))


def _flatten(kind: type[And] | type[Or], children: tuple[Expr, ...]) -> tuple[Expr, ...]:
    """$and inside $and is one $and (the same for $or): nesting need not be evaluated deeply."""
    flat: list[Expr] = []
    for child in children:
        if isinstance(child, kind):
            flat.extend(child.children)
        else:
            flat.append(child)
    return tuple(flat)


def _parse_field(path: str, value: Any, depth: int) -> Expr:
    parts = split_path(path)
    if _is_operator_object(value):
        return _field_expr(path, parts, _parse_operators(path, value, depth))
    return PathCondition(path, parts, Eq(_literal(value, depth)))


def _is_operator_object(value: Any) -> bool:
    # MongoDB decides by the first name only: {"$gt": 1} is an operator object, {"b": 1} and
    # {} are literal documents to compare with.
    if not isinstance(value, Mapping) or not value or is_date_tag(value):
        return False
    first = next(iter(value))
    return isinstance(first, str) and first.startswith("$")


def _field_expr(path: str, parts: Path, condition: ValueExpr) -> Expr:
    """The document-level form: every operator walks the path on its own."""
    if isinstance(condition, ValueAnd):
        items = tuple(_field_expr(path, parts, item) for item in condition.items)
        return items[0] if len(items) == 1 else And(items)
    if isinstance(condition, ValueNot):
        return Not(_field_expr(path, parts, condition.item))
    return PathCondition(path, parts, condition)


def _type_codes(argument: Any) -> frozenset[int]:
    items = argument if isinstance(argument, list | tuple) else [argument]
    if not items:
        raise InvalidFilterError("$type needs at least one type")
    codes: set[int] = set()
    for item in items:
        if item == "number":
            codes |= NUMBER_TYPES
        elif isinstance(item, str) and item in BSON_TYPES:
            codes.add(BSON_TYPES[item])
        elif isinstance(item, str) and item in ABSENT_BSON_TYPES:
            codes.add(ABSENT_BSON_TYPES[item])
        elif isinstance(item, int | float) and not isinstance(item, bool) and _whole(item):
            if int(item) not in TYPE_CODES:
                raise InvalidFilterError(
                    f"invalid $type code {item}: {TYPE_CODES_TEXT}",
                    hint='to match a missing field, use {"$exists": false}' if item == 0 else None,
                )
            codes.add(int(item))
        else:
            known = ", ".join(["number", *BSON_TYPES, *ABSENT_BSON_TYPES])
            raise InvalidFilterError(f"unknown $type {item!r}; known types: {known}")
    return frozenset(codes)


def _whole(number: int | float) -> bool:
    return isinstance(number, int) or (math.isfinite(number) and number == int(number))


def _parse_operators(path: str, operators: Mapping[str, Any], depth: int) -> ValueExpr:
    items: list[ValueExpr] = []
    for name, argument in operators.items():
        if not isinstance(name, str) or not name.startswith("$"):
            raise InvalidFilterError(
                f"the condition on {path!r} mixes operators with the field {name!r}; "
                'to compare with a document, use {"$eq": {...}}'
            )
        if name == "$options":
            if "$regex" not in operators:
                raise InvalidFilterError(f"$options on {path!r} needs a $regex beside it")
            continue
        items.append(_parse_operator(path, name, argument, operators, depth))
    return items[0] if len(items) == 1 else ValueAnd(tuple(items))


def _parse_operator(
    path: str, name: str, argument: Any, operators: Mapping[str, Any], depth: int
) -> ValueExpr:
    if name == "$eq":
        return Eq(_literal(argument, depth))
    if name == "$ne":
        return ValueNot(Eq(_literal(argument, depth)))
    if name in ("$gt", "$gte", "$lt", "$lte"):
        return Cmp(CmpOp(name), _literal(argument, depth))
    if name == "$in":
        return In(_plain_values(name, argument, depth))
    if name == "$nin":
        return ValueNot(In(_plain_values(name, argument, depth)))
    if name == "$all":
        values = _plain_values(name, argument, depth)
        if not values:
            return Never()
        eqs = tuple(Eq(v) for v in values)
        return eqs[0] if len(eqs) == 1 else ValueAnd(eqs)
    if name == "$exists":
        return Exists() if _exists_argument(argument) else ValueNot(Exists())
    if name == "$size":
        return Size(_size_argument(argument))
    if name == "$type":
        return Type(_type_codes(argument))
    if name == "$regex":
        return _parse_regex(argument, operators.get("$options", ""))
    if name == "$not":
        return ValueNot(_parse_not(path, argument, _deeper(depth)))
    if name == "$elemMatch":
        return _parse_elem_match(path, argument, _deeper(depth))
    if name in LOGICAL_OPERATORS:
        raise InvalidFilterError(
            f"{name} cannot be applied to the field {path!r}; "
            f'use it at the top level: {{"{name}": [{{"{path}": ...}}, ...]}}'
        )
    raise _unknown_operator(name)


def _parse_regex(pattern: Any, options: Any) -> Regex:
    if not isinstance(pattern, str):
        raise InvalidFilterError(f"$regex needs a string, got {_kind(pattern)}")
    if not isinstance(options, str):
        raise InvalidFilterError(f"$options needs a string, got {_kind(options)}")
    for flag in options:
        if flag not in REGEX_FLAGS:
            raise InvalidFilterError(
                f"invalid $options flag {flag!r}; supported: {', '.join(REGEX_FLAGS)}"
            )
    return Regex(pattern, options)


def _parse_not(path: str, argument: Any, depth: int) -> ValueExpr:
    if not _is_operator_object(argument):
        raise InvalidFilterError(
            '$not needs an object of operators, such as {"$gt": 5} or {"$regex": "^a"}, '
            f"got {_kind(argument)}"
        )
    return _parse_operators(path, argument, depth)


def _parse_elem_match(path: str, argument: Any, depth: int) -> Predicate:
    if not isinstance(argument, Mapping):
        raise InvalidFilterError(f"$elemMatch needs an object, got {_kind(argument)}")
    first = next(iter(argument), None)
    if _is_operator_object(argument) and first not in LOGICAL_OPERATORS:
        return ElemMatchValue(_parse_operators(path, argument, depth))
    return ElemMatchObject(_parse_document(argument, "$elemMatch", depth))


def _plain_values(name: str, argument: Any, depth: int) -> tuple[Any, ...]:
    if not isinstance(argument, list | tuple):
        raise InvalidFilterError(f"{name} needs an array, got {_kind(argument)}")
    values = []
    for item in argument:
        if _is_operator_object(item):
            raise InvalidFilterError(
                f"{name} takes plain values only, not operator objects such as {item!r}"
            )
        values.append(_literal(item, depth))
    return tuple(values)


def _exists_argument(argument: Any) -> bool:
    # MongoDB takes any value by its truth; numbers are common ($exists: 1), other kinds are
    # almost always a mistake, so they are refused.
    if isinstance(argument, bool | int | float):
        return bool(argument)
    raise InvalidFilterError(f"$exists needs true or false, got {_kind(argument)}")


def _size_argument(argument: Any) -> int:
    if isinstance(argument, bool) or not isinstance(argument, int | float):
        raise InvalidFilterError(f"$size needs a non-negative integer, got {_kind(argument)}")
    if isinstance(argument, float) and not argument.is_integer():
        raise InvalidFilterError(f"$size needs a non-negative integer, got {argument!r}")
    if argument < 0:
        raise InvalidFilterError(f"$size needs a non-negative integer, got {argument!r}")
    return int(argument)


def _literal(value: Any, depth: int = 0) -> Any:
    """A value to compare with: ``$date`` tags become datetimes, datetimes get ms precision."""
    if value is None or type(value) in (str, int, bool):  # the common case, first: a long $in
        return value
    if depth >= 0 and isinstance(value, Mapping | list | tuple):
        # Checked once, without recursion, before the recursive conversion below.
        if depth + json_depth(value) > MAX_NESTING:
            raise InvalidFilterError(NESTING_MESSAGE)
        depth = -1
    if isinstance(value, Mapping):
        if is_date_tag(value):
            try:
                return parse_date_tag(value["$date"])
            except ValueError as exc:
                raise InvalidFilterError(str(exc)) from None
        return {_field_name(k): _literal(v, depth) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_literal(v, depth) for v in value]
    if isinstance(value, datetime):
        return normalize_datetime(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidFilterError(f"{value} is not a JSON number and cannot be compared")
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise InvalidFilterError(f"a filter cannot hold a {type(value).__name__} value")


def _field_name(name: Any) -> str:
    if not isinstance(name, str):
        raise InvalidFilterError(f"a document in a filter has a non-string field name {name!r}")
    return name


def _unknown_operator(name: str) -> InvalidFilterError:
    return InvalidFilterError(
        f"unknown query operator {name!r}; supported: {', '.join(SUPPORTED_OPERATORS)}"
    )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, datetime):
        return "a datetime"
    return f"a {type(value).__name__}"
