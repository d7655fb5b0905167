"""The arguments of ``Index.find`` (sort, skip, limit, fields), checked once for every backend.

Each backend calls :func:`check_find_arguments` at the start of ``find``, so a mistake is
refused at the call, the same way (``InvalidFilterError``, same message) on every backend, and
before anything is asked of a database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from s3idx.errors import InvalidFilterError
from s3idx.frozen import Frozen, init_field
from s3idx.limits import INT64_MAX
from s3idx.query.paths import split_path
from s3idx.query.sort import check_sort


class FindArguments(Frozen):
    """``find``'s arguments once checked: ``sort`` as a list, ``fields`` as a list or None."""

    __slots__ = ("fields", "limit", "skip", "sort")
    _fields = ("sort", "skip", "limit", "fields")
    sort: list[tuple[str, int]]
    skip: int
    limit: int
    fields: list[str] | None

    def __init__(
        self, sort: list[tuple[str, int]], skip: int, limit: int, fields: list[str] | None
    ) -> None:
        init_field(self, "sort", sort)
        init_field(self, "skip", skip)
        init_field(self, "limit", limit)
        init_field(self, "fields", fields)


def check_find_arguments(
    *, sort: Any = None, skip: Any = 0, limit: Any = 0, fields: Any = None
) -> FindArguments:
    """``find``'s sort, skip, limit and fields, checked; InvalidFilterError for a bad one."""
    if isinstance(sort, str | bytes):
        raise InvalidFilterError(f"sort must be a list of (field, direction), got {sort!r}")
    spec = check_sort(sort or ())
    for path, _ in spec:
        _check_path(path, "sort field")
    for name, value in (("skip", skip), ("limit", limit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidFilterError(f"{name} must be a non-negative integer, got {value!r}")
        if value > INT64_MAX:  # neither SQLite nor MongoDB can take a bigger one
            raise InvalidFilterError(f"{name} must be at most {INT64_MAX} (64 bits), got {value}")
    if limit and skip + limit > INT64_MAX:
        # The same answer (no index holds 2^63 entries) without a sum no backend can hold;
        # 0 (no limit) when skip is the largest, which leaves nothing anyway.
        limit = INT64_MAX - skip
    return FindArguments(spec, skip, limit, _check_fields(fields))


def _check_fields(fields: Any) -> list[str] | None:
    if fields is None:
        return None
    if isinstance(fields, str):
        raise InvalidFilterError(f"fields must be a list of paths, got the string {fields!r}")
    if isinstance(fields, bytes) or not isinstance(fields, Sequence):
        raise InvalidFilterError(f"fields must be a list of paths, got {fields!r}")
    projection = [*fields]
    for path in projection:
        _check_path(path, "field")
    return projection


def _check_path(path: str, what: str) -> None:
    parts = split_path(path)  # not a string, empty, or with an empty part
    if any(part.startswith("$") for part in parts):
        raise InvalidFilterError(f"invalid {what} {path!r}: a part must not start with '$'")
