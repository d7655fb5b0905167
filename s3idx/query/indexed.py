"""Which paths a query may use: only what the index holds for every entry.

An entry holds the key field, the searchable fields (``--field``, nested as in the document),
``last_updated`` and the ``_s3idx`` bookkeeping, nothing else. A condition, sort or projection on
any other path would be answered from nothing (no match, an ignored sort, an empty column), so it
is refused before any backend sees the query. This lives above the backends so that SQLite and
MongoDB refuse exactly the same queries.

A path is held when it is one of those fields or lies inside one (``a.b`` when ``a`` is indexed).
A path that only *contains* indexed fields (``a`` when only ``a.b`` is indexed) is refused: the
entry holds a cut-down copy of ``a``, and comparing it would give wrong answers.

A searchable field added while documents were already stored is *pending* until ``reindex`` has
backfilled it: the older documents' entries lack it, so queries on it are refused too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from s3idx.codec import LAST_UPDATED, MAX_FIELD_PATH_CHARS, RESERVED_FIELD
from s3idx.errors import InvalidFilterError, UsageError
from s3idx.index.base import IndexSettings
from s3idx.query.filter import SUPPORTED_OPERATORS, check_nesting

LOGICAL_OPERATORS = ("$and", "$or", "$nor")
REINDEX_COMMAND = "s3idx reindex"
_SHOWN_FIELDS = 20


class FieldNotIndexedError(UsageError):
    """A query names a path the index does not hold."""


class FieldPendingError(UsageError):
    """A query names a field the index holds only for documents stored after it was added."""


def filter_paths(filter: Mapping[str, Any]) -> list[str]:
    """The field paths a MongoDB-style filter tests, in order, without duplicates.

    Field names only appear as keys of the filter itself and of the filters inside
    ``$and``/``$or``/``$nor``; names inside a condition (``$elemMatch``, ``$not``) are relative
    to its field. Any other operator at that level (``$expr``, ``$where``, ``$text``, ...) could
    read any field unseen, so it is refused here for every backend, as SQLite's parser does.
    Other malformed filters are left for the backend to refuse with its own message.
    """
    found: list[str] = []
    _collect(filter, found)
    return list(dict.fromkeys(found))


def _collect(filter: Any, found: list[str]) -> None:
    if not isinstance(filter, Mapping):
        return
    for name, value in filter.items():
        if not isinstance(name, str):
            continue
        if name in LOGICAL_OPERATORS:
            for clause in value if isinstance(value, list | tuple) else ():
                _collect(clause, found)
        elif name.startswith("$"):
            raise InvalidFilterError(
                f"unknown query operator {name!r}; supported: {', '.join(SUPPORTED_OPERATORS)}"
            )
        else:
            found.append(name)


def check_query_paths(
    settings: IndexSettings | None,
    *,
    filter: Mapping[str, Any] | None = None,
    sort: Iterable[tuple[str, int]] | None = None,
    fields: Sequence[str] | None = None,
) -> None:
    """Refuse a filter, sort or projection naming a path the index does not hold in full.

    An index never written (``settings`` None) holds nothing and answers nothing; it is not
    refused here, so that a first query on a fresh store simply finds no entries.
    """
    if isinstance(filter, Mapping):
        check_nesting(filter)  # before filter_paths walks it, recursively
    if settings is None:
        return
    uses = [(path, "filter") for path in filter_paths(filter or {})]
    # Malformed sort items and projections are left for the backend's own message.
    uses += [
        (item[0], "--sort")
        for item in sort or ()
        if isinstance(item, tuple | list) and item and isinstance(item[0], str)
    ]
    if fields is not None and not isinstance(fields, str):
        uses += [(path, "--fields") for path in fields if isinstance(path, str)]
    for path, where in uses:
        _check_path(settings, path, where)


def _check_path(settings: IndexSettings, path: str, where: str) -> None:
    pending = dict(settings.pending)
    complete = [f for f in settings.fields if f not in pending]
    held = [settings.key_field, *complete, LAST_UPDATED, RESERVED_FIELD]
    if any(_inside(path, field) for field in held):
        return
    waiting = next((f for f in pending if _inside(path, f)), None)
    if waiting is not None:
        count = pending[waiting]
        noun = "document" if count == 1 else "documents"
        documents = f"the {count:,} {noun}" if count else "the documents"
        raise FieldPendingError(
            f"{where}: field {waiting!r} is not yet indexed for {documents} stored before it "
            "was added, so the answer would be wrong",
            hint=f"run `{REINDEX_COMMAND}` to backfill it, then query again",
        )
    raise FieldNotIndexedError(
        f"{where}: field {_shown(path)} is not indexed, so the index cannot answer for it; "
        f"indexed fields: {_describe(settings)}",
        hint=_hint(settings, path),
    )


def _shown(path: str) -> str:
    return repr(path) if len(path) <= 60 else f"{path[:60]!r}... ({len(path):,} characters)"


def _inside(path: str, field: str) -> bool:
    return path == field or path.startswith(field + ".")


def _unindexable(path: str) -> str | None:
    """Why ``put``/``reindex --field`` would refuse ``path``, or None."""
    parts = path.split(".")
    if not all(parts):
        return "a field path has no empty part"
    if any(part.startswith("$") for part in parts):
        return "no part of a field path starts with '$'"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "a field path has no control characters"
    return None


def _describe(settings: IndexSettings) -> str:
    names = [settings.key_field, *settings.fields, LAST_UPDATED]
    shown = ", ".join(names[:_SHOWN_FIELDS])
    more = len(names) - _SHOWN_FIELDS
    return shown + (f" and {more} more" if more > 0 else "")


def _hint(settings: IndexSettings, path: str) -> str:
    inner = [f for f in settings.fields if f.startswith(path + ".")]
    if inner:
        return (
            f"only {', '.join(inner)} inside {path!r} is indexed; query that path, "
            f"or index {path!r} itself"
        )
    if path == "_id" or path.startswith("_id."):
        return f"the key field is {settings.key_field!r}; query it by that name"
    if len(path) > MAX_FIELD_PATH_CHARS:
        return f"a path this long cannot be indexed (at most {MAX_FIELD_PATH_CHARS} characters)"
    unindexable = _unindexable(path)
    if unindexable is not None:  # `reindex --field` would refuse it: suggest nothing
        return f"no field can be indexed at this path: {unindexable}"
    return (
        f"to index it, run `{REINDEX_COMMAND} --field {path}`: it records the field and "
        "backfills it for the documents already stored"
    )
