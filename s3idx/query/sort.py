"""MongoDB sort order, and the CLI's sort syntax.

A document's sort key is found as MongoDB finds it (``SortKeyGenerator``, which reuses the index
key generator ``BtreeKeyGenerator``): the path's values with arrays expanded, a missing value
counting as null and an empty array as ``undefined`` (before null). An ascending sort uses the
smallest of those keys and a descending sort the largest. With several sort fields through the
same array the keys are tuples taken element by element; two fields through two different
arrays ("parallel arrays") are an error in MongoDB and here.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from functools import cmp_to_key
from itertools import islice
from typing import Any

from s3idx.errors import InvalidFilterError
from s3idx.query.paths import Path, is_array_index, split_path
from s3idx.query.values import MISSING, compare

SortSpec = Sequence[tuple[str, int]]


class _Undefined:
    """The key of an empty array: MongoDB's ``undefined``, ordered before null."""

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = _Undefined()


def compare_keys(a: Any, b: Any) -> int:
    if a is UNDEFINED or b is UNDEFINED:
        return (a is not UNDEFINED) - (b is not UNDEFINED)
    return compare(a, b)


def parse_sort(text: str) -> list[tuple[str, int]]:
    """``"a,-b.c"`` -> ``[("a", 1), ("b.c", -1)]``; a leading ``+`` is allowed too."""
    spec: list[tuple[str, int]] = []
    for item in text.split(","):
        name = item.strip()
        direction = 1
        if name[:1] in ("+", "-"):
            direction = -1 if name[0] == "-" else 1
            name = name[1:].strip()
        if not name:
            raise InvalidFilterError(f"invalid sort {text!r}: empty field name")
        spec.append((name, direction))
    return check_sort(spec)


def check_sort(spec: SortSpec) -> list[tuple[str, int]]:
    """Validate a sort specification (as ``find`` takes it) and return it as a list."""
    seen: set[str] = set()
    checked: list[tuple[str, int]] = []
    for item in spec:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise InvalidFilterError(f"a sort item must be (field, direction), got {item!r}")
        path, direction = item
        try:
            split_path(path)
        except InvalidFilterError as exc:
            raise InvalidFilterError(f"invalid sort field: {exc}") from None
        if isinstance(direction, bool) or direction not in (1, -1):
            raise InvalidFilterError(
                f"sort direction of {path!r} must be 1 or -1, got {direction!r}"
            )
        if path in seen:
            raise InvalidFilterError(f"sort field {path!r} is given twice")
        seen.add(path)
        checked.append((path, int(direction)))
    return checked


def sort_entries(
    entries: Iterable[Mapping[str, Any]], sort: SortSpec, *, skip: int = 0, limit: int = 0
) -> list[Any]:
    """Entries in MongoDB's order for ``sort``, then ``skip`` and ``limit`` applied.

    Ties keep their input order. With a limit only ``skip + limit`` entries are ever held.
    """
    spec = check_sort(sort)
    if skip < 0 or limit < 0:
        raise InvalidFilterError("skip and limit must not be negative")
    if not spec:
        return list(islice(entries, skip, skip + limit if limit else None))
    keyed = ((_SortKey(document_sort_key(e, spec), spec), e) for e in entries)
    if limit:
        best = heapq.nsmallest(skip + limit, keyed, key=_first_item)
    else:
        best = sorted(keyed, key=_first_item)
    return [entry for _, entry in best[skip:]]


def _first_item(pair: tuple[_SortKey, Any]) -> _SortKey:
    return pair[0]


class _SortKey:
    __slots__ = ("directions", "values")

    def __init__(self, values: tuple[Any, ...], spec: SortSpec) -> None:
        self.values = values
        self.directions = tuple(direction for _, direction in spec)

    def __lt__(self, other: _SortKey) -> bool:
        return _compare_tuples(self.values, other.values, self.directions) < 0

    # heapq compares (key, position, entry) tuples, which asks == before <; without this,
    # equal keys would never reach the position that keeps ties in input order.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _SortKey):
            return NotImplemented
        return _compare_tuples(self.values, other.values, self.directions) == 0

    # Unhashable, as a class defining __eq__ is; typeshed types __hash__ as a method only.
    __hash__ = None  # type: ignore[assignment]


def _compare_tuples(a: tuple[Any, ...], b: tuple[Any, ...], directions: Sequence[int]) -> int:
    for left, right, direction in zip(a, b, directions, strict=True):
        order = compare_keys(left, right)
        if order:
            return order * direction
    return 0


def document_sort_key(document: Mapping[str, Any], spec: SortSpec) -> tuple[Any, ...]:
    """The key tuple MongoDB sorts ``document`` by: the first of its keys in sort order."""
    directions = [direction for _, direction in spec]
    keys = generate_keys(document, [split_path(path) for path, _ in spec])
    if len(keys) == 1:
        return keys[0]

    def compare(a: tuple[Any, ...], b: tuple[Any, ...]) -> int:
        return _compare_tuples(a, b, directions)

    return min(keys, key=cmp_to_key(compare))


def generate_keys(document: Mapping[str, Any], paths: Sequence[Path]) -> list[tuple[Any, ...]]:
    """Index keys of ``document`` for the compound pattern ``paths`` (BtreeKeyGenerator)."""
    out: list[tuple[Any, ...]] = []
    _generate(document, [p for p in paths], [None] * len(paths), out)
    return out


def _generate(
    document: Mapping[str, Any],
    remaining: list[Path | None],
    fixed: list[Any],
    out: list[tuple[Any, ...]],
) -> None:
    # ``remaining[i]`` is what is left of path i (None once its value is fixed). Paths are
    # followed through documents until one reaches an array; all paths that reach an array
    # must reach the same one, which is then expanded element by element.
    remaining, fixed = list(remaining), list(fixed)
    array: list[Any] | None = None
    through_array: list[int] = []
    for i, parts in enumerate(remaining):
        if parts is None:
            continue
        value, rest = _extract(document, parts)
        if rest is None:
            fixed[i] = None if value is MISSING else value
            remaining[i] = None
            continue
        if array is None:
            array = value
        elif value is not array:
            raise InvalidFilterError("cannot sort with keys that are parallel arrays")
        through_array.append(i)
        remaining[i] = rest
    if array is None:
        out.append(tuple(fixed))
        return
    for element in array if array else [UNDEFINED]:
        next_remaining, next_fixed = list(remaining), list(fixed)
        for i in through_array:
            if not remaining[i]:
                next_fixed[i] = element
                next_remaining[i] = None
        _generate(element if isinstance(element, dict) else {}, next_remaining, next_fixed, out)


def _extract(document: Mapping[str, Any], parts: Path) -> tuple[Any, Path | None]:
    """``(value, None)`` for a value to use as it is; ``(array, rest)`` for one to expand."""
    current: Any = document
    for n, part in enumerate(parts):
        if not isinstance(current, dict):
            return MISSING, None
        current = current.get(part, MISSING)
        if isinstance(current, list):
            return _at_array(current, parts[n + 1 :])
    return current, None


def _at_array(array: list[Any], rest: Path) -> tuple[Any, Path | None]:
    # A numeric step after an array selects that element (MongoDB's positional key patterns,
    # "a.0.b"); the element is then not expanded along this step. Out of range, the step is a
    # field name looked up in each element instead.
    if not rest or not is_array_index(rest[0]) or int(rest[0]) >= len(array):
        return array, rest
    element = array[int(rest[0])]
    if len(rest) == 1:
        return element, None
    if isinstance(element, dict):
        return _extract(element, rest[1:])
    if isinstance(element, list):
        return _at_array(element, rest[1:])
    return MISSING, None
