"""BSON comparison order over the values an entry can hold.

Values are what JSON decodes to plus UTC datetimes: None, bool, int, float, str, list, dict and
datetime. MongoDB orders different types by a fixed *type class* and compares numbers across
int/float by value; booleans are not numbers. The class numbers are MongoDB's canonical type
numbers, so they read the same as in the server's source and can be stored as they are.
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from typing import Any, Final

import orjson

from s3idx.codec import format_datetime


class _Missing:
    """A path that leads nowhere; MongoDB's EOO. Distinct from None (a JSON null)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


class TypeClass(IntEnum):
    """MongoDB's canonical type numbers for the types entries hold, in comparison order."""

    MISSING = 0  # EOO; also "undefined", which MongoDB treats alike
    NULL = 5
    NUMBER = 10
    STRING = 15
    OBJECT = 20
    ARRAY = 25
    BOOL = 40
    DATE = 45


def type_class(value: Any) -> TypeClass:
    # bool before int: True is an int to Python but a boolean to BSON.
    if value is None:
        return TypeClass.NULL
    if isinstance(value, bool):
        return TypeClass.BOOL
    if isinstance(value, int | float):
        return TypeClass.NUMBER
    if isinstance(value, str):
        return TypeClass.STRING
    if isinstance(value, dict):
        return TypeClass.OBJECT
    if isinstance(value, list | tuple):
        return TypeClass.ARRAY
    if isinstance(value, datetime):
        return TypeClass.DATE
    if value is MISSING:
        return TypeClass.MISSING
    raise TypeError(f"{type(value).__name__} is not a value an index entry can hold")


def compare(a: Any, b: Any) -> int:
    """-1, 0 or 1 as MongoDB orders ``a`` and ``b`` (``BSONElement::woCompare``)."""
    class_a, class_b = type_class(a), type_class(b)
    if class_a != class_b:
        return -1 if class_a < class_b else 1
    if class_a is TypeClass.OBJECT:
        return _compare_items(list(a.items()), list(b.items()))
    if class_a is TypeClass.ARRAY:
        return _compare_items(list(enumerate(a)), list(enumerate(b)))
    if class_a in (TypeClass.NULL, TypeClass.MISSING):
        return 0
    # Python compares int with float exactly, str by code point (= UTF-8 byte order, which is
    # what MongoDB uses without a collation), and aware datetimes by instant.
    order: int = (a > b) - (a < b)
    return order


def _compare_items(left: list[tuple[Any, Any]], right: list[tuple[Any, Any]]) -> int:
    # MongoDB compares each pair of fields by type class first, then by name, then by value;
    # that an integer field sorts before a string field whatever their names is deliberate.
    for (name_a, value_a), (name_b, value_b) in zip(left, right, strict=False):
        class_a, class_b = type_class(value_a), type_class(value_b)
        if class_a != class_b:
            return -1 if class_a < class_b else 1
        if name_a != name_b:
            return -1 if str(name_a) < str(name_b) else 1
        result = compare(value_a, value_b)
        if result:
            return result
    return (len(left) > len(right)) - (len(left) < len(right))


def canonical(value: Any) -> str:
    """Text that is equal for two values exactly when MongoDB considers them equal.

    Numbers equal in value get one spelling (``1``, ``1.0`` and ``1e0`` all become ``1``), fields
    keep their order (MongoDB's object equality depends on it) and datetimes become their
    ``$date`` tag, so the result is still tagged JSON.
    """
    parts: list[str] = []
    _write_canonical(value, parts)
    return "".join(parts)


def _write_canonical(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_canonical_float(value))
    elif isinstance(value, str):
        out.append(orjson.dumps(value).decode())
    elif isinstance(value, datetime):
        out.append('{"$date":"' + format_datetime(value) + '"}')
    elif isinstance(value, dict):
        out.append("{")
        for n, (name, item) in enumerate(value.items()):
            if n:
                out.append(",")
            out.append(orjson.dumps(name).decode() + ":")
            _write_canonical(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for n, item in enumerate(value):
            if n:
                out.append(",")
            _write_canonical(item, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not a value an index entry can hold")


def _canonical_float(value: float) -> str:
    # An integral float equals the int of the same value, so both must read the same; int() of
    # a finite float is exact. Other floats never equal an int, and repr() round-trips.
    if value.is_integer():
        return str(int(value))
    return repr(value)
