"""Dotted paths with MongoDB's array semantics, and inclusion projection.

``iter_path_values`` follows MongoDB's query matcher (``BSONElementIterator`` in
``src/mongo/db/matcher/path.cpp``): it yields every value a query condition on the path is tried
against. Walking down, a step into an array goes into each element that is a document, and a
numeric step also selects the element at that position. An array at the end of the path yields
each element and then the array itself. A path that leads nowhere yields ``MISSING`` (which
equality with null matches); a path through an array whose elements lead nowhere may yield
nothing at all.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from s3idx.errors import InvalidFilterError
from s3idx.query.values import MISSING

Path = tuple[str, ...]


def split_path(path: str) -> Path:
    """The components of a dotted path; InvalidFilterError for an empty one."""
    if not isinstance(path, str):
        raise InvalidFilterError(f"a field path must be a string, got {path!r}")
    parts = tuple(path.split("."))
    if not path or any(not part for part in parts):
        raise InvalidFilterError(f"invalid field path {path!r}: empty part")
    return parts


def is_array_index(part: str) -> bool:
    # MongoDB's isAllDigits: ASCII digits only ("²" is a digit to str.isdigit, not to MongoDB).
    return part.isascii() and part.isdigit()


def iter_path_values(
    document: Mapping[str, Any], parts: Path, *, traverse_leaf_arrays: bool = True
) -> Iterator[Any]:
    """Each value at ``parts`` in ``document``, as the matcher sees them (may yield MISSING).

    With ``traverse_leaf_arrays=False`` an array at the end of the path is yielded whole and not
    element by element; ``$size`` and ``$elemMatch`` look at paths that way.
    """
    yield from _iter_from(document, parts, 0, traverse_leaf_arrays)


def _iter_from(document: Mapping[str, Any], parts: Path, start: int, leaf: bool) -> Iterator[Any]:
    value, index = _walk_to_array(document, parts, start)
    if isinstance(value, list):
        yield from _iter_array(value, parts, index + 1, leaf)
    else:
        yield value


def _walk_to_array(document: Mapping[str, Any], parts: Path, start: int) -> tuple[Any, int]:
    """Follow ``parts`` through documents; stop at the end, at an array or at a dead end.

    MongoDB's ``getFieldDottedOrArray``: a scalar before the last step is a dead end (MISSING).
    """
    current: Any = document
    last = len(parts) - 1
    for index in range(start, len(parts)):
        value = current.get(parts[index], MISSING)
        if isinstance(value, list):
            return value, index
        if index == last:
            return value, index
        if not isinstance(value, dict):
            return MISSING, index
        current = value
    return MISSING, last


def _iter_array(array: list[Any], parts: Path, rest: int, leaf: bool) -> Iterator[Any]:
    if rest == len(parts):
        if leaf:
            yield from array
        yield array
        return
    step = parts[rest]
    position = int(step) if is_array_index(step) else -1
    path_ends_at_position = rest + 1 == len(parts)
    for n, element in enumerate(array):
        if isinstance(element, dict):
            yield from _iter_from(element, parts, rest, leaf)
            if n == position:
                if path_ends_at_position:
                    yield element
                else:
                    yield from _iter_from(element, parts, rest + 1, leaf)
        elif n == position:
            if path_ends_at_position:
                # Reached by position, so the matcher does not expand it even if it is an array.
                yield element
            elif isinstance(element, list):
                yield from _iter_array(element, parts, rest + 1, leaf)


# --- projection ------------------------------------------------------------------------------

_Tree = dict[str, "_Tree | None"]  # None marks a path's last component: keep the whole value


def project(document: Mapping[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """MongoDB's inclusion projection (``find(filter, {p: 1, ...})``, 4.4+, without ``_id``).

    Fields keep the document's order and nesting. Through an array the projection applies to each
    element that is a document; other elements (scalars, nested arrays) are dropped. A path that
    stops at a scalar before its end contributes nothing. MongoDB rejects overlapping paths such
    as ``a`` with ``a.b`` as a collision; here the shorter path wins, since it includes the other.
    """
    return _project_document(document, _cached_tree(tuple(paths)))


@functools.lru_cache(maxsize=64)
def _cached_tree(paths: tuple[str, ...]) -> _Tree:
    # put projects every document on the same paths: build their tree once (never mutated).
    return _path_tree(paths)


def _path_tree(paths: Sequence[str]) -> _Tree:
    tree: _Tree = {}
    for path in paths:
        node = tree
        parts = split_path(path)
        for n, part in enumerate(parts):
            if n == len(parts) - 1:
                node[part] = None
                break
            child = node.get(part, {})
            if child is None:  # a shorter path already keeps all of this
                break
            node[part] = child
            node = child
    return tree


def _project_document(document: Mapping[str, Any], tree: _Tree) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in document.items():
        if name not in tree:
            continue
        subtree = tree[name]
        if subtree is None:
            out[name] = value
        elif isinstance(value, dict):
            out[name] = _project_document(value, subtree)
        elif isinstance(value, list):
            out[name] = _project_array(value, subtree)
    return out


def _project_array(array: list[Any], tree: _Tree) -> list[Any]:
    # find() does not descend into arrays nested in arrays; they are dropped like scalars.
    return [_project_document(item, tree) for item in array if isinstance(item, dict)]
