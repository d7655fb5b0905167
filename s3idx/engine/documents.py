"""Turning an input record into what is stored: key, index entry, body bytes and metadata."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from s3idx import codec
from s3idx.codec import MAX_FIELD_PATH_CHARS
from s3idx.engine.inputs import Record
from s3idx.errors import RecordError, UsageError
from s3idx.limits import INT64_MAX, INT64_MIN, MAX_NESTING, big_integer_message, json_depth
from s3idx.query.paths import project
from s3idx.store.base import ObjectStore

RESERVED_FIELDS = (codec.RESERVED_FIELD, codec.LAST_UPDATED)
# Field paths are written twice into each object's 2 KB of metadata: room is kept for values.
VALUE_ROOM_BYTES = 512  # for the key and the values, within MAX_METADATA_BYTES
_SHOWN_PATH_CHARS = 40


@dataclass(slots=True)
class Prepared:
    """A valid document, ready to upload: ``body`` is the uncompressed JSON."""

    record: Record
    key: str
    entry: dict[str, Any]
    body: bytes
    sha256: str
    metadata: dict[str, str]
    # Its key was stored earlier in the same run (a later batch stores it again, the last line
    # winning): counted as a duplicate, not again as stored or unchanged.
    again: bool = False
    # The stored body when it is encoded already (put's ``_unlike`` encodes some to compare,
    # and some as other bytes than ``codec.encode_raw``'s); None: encoded at upload.
    encoded: bytes | None = None


def shown_path(path: str) -> str:
    """A field path for a message: quoted, and cut short (with its length) when long."""
    if len(path) <= _SHOWN_PATH_CHARS:
        return repr(path)
    return f"{path[:_SHOWN_PATH_CHARS]!r}... ({len(path):,} characters)"


def check_field_paths(paths: Sequence[str], key_field: str) -> tuple[str, ...]:
    """Validate ``--field`` paths; the key field and duplicates are dropped.

    Refuses what no document could be stored with, before anything is recorded: a path too
    long, or so many fields that their names alone fill the metadata an object may carry.
    """
    checked: list[str] = []
    for path in paths:
        check_field_path(path)
        if path.split(".", 1)[0] == "_id" and path != key_field:
            raise UsageError(
                f"field {path!r} cannot be indexed: MongoDB keeps its own _id",
                hint="to use _id as the key, pass --key _id",
            )
        if path != key_field and path not in checked:
            checked.append(path)
    _check_names_fit(key_field, checked)
    return tuple(checked)


def check_field_path(path: Any) -> str:
    """One searchable field's path, checked alone (the rules that need no key field)."""
    if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
        raise UsageError(f"invalid field path {shown_path(str(path))}: empty part")
    if len(path) > MAX_FIELD_PATH_CHARS:
        raise UsageError(
            f"field path {shown_path(path)} is too long: at most {MAX_FIELD_PATH_CHARS} characters",
            hint="each object's metadata (2 KB) holds every indexed path twice; "
            "index a shorter path",
        )
    if any(part.startswith("$") for part in path.split(".")):
        raise UsageError(f"invalid field path {shown_path(path)}: parts may not start with '$'")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise UsageError(f"invalid field path {shown_path(path)}: control character")
    root = path.split(".", 1)[0]
    if root in RESERVED_FIELDS:
        raise UsageError(f"field {path!r} is reserved: s3idx sets {root!r} itself")
    return path


def check_new_field_path(path: Any) -> str:
    """A path about to be recorded: ``check_field_path``, and one every list can name."""
    check_field_path(path)
    reason = codec.unlisted_problem(path)
    if reason is not None:
        raise UsageError(
            f"invalid field path {shown_path(path)}: {reason}",
            hint="index a field whose path has no ',' and no blanks at its ends",
        )
    _check_no_position(path)
    return str(path)


def _check_no_position(path: str) -> None:
    """A numeric part selects an array element in a filter, while an entry keeps what a
    projection keeps (an array's elements by their own fields, never one by position): such a
    field would be indexed empty and every query on it would miss."""
    parts = path.split(".")
    for n, part in enumerate(parts):
        if part.isascii() and part.isdigit():
            above = ".".join(parts[:n])
            raise UsageError(
                f"invalid field path {shown_path(path)}: {part!r} is a number, which MongoDB "
                "reads as a position in an array; an index entry keeps no single element",
                hint=f'index "{above}": a query such as {{"{path}": ...}} then matches '
                "by its position",
            )


def check_new_fields(paths: Sequence[str], key_field: str) -> None:
    """Fields about to be recorded: each one a list can name, and none inside the key field,
    whose value is a string (such a path never holds a value). Not asked of fields an index
    already records."""
    for path in paths:
        check_new_field_path(path)
        if path.startswith(key_field + "."):
            raise UsageError(
                f"field {path!r} lies inside the key field {key_field!r}, whose value is a string",
                hint=f"index another field; the key itself is always indexed as {key_field!r}",
            )


def _check_names_fit(key_field: str, fields: Sequence[str]) -> None:
    """Refuse fields whose names alone leave too little metadata room for any document."""
    skeleton = project({key_field: "", **_nulls(fields)}, [key_field, *fields])
    skeleton[codec.LAST_UPDATED] = codec.utc_now()
    metadata = codec.build_metadata(skeleton, key_field, fields, "json+zlib", "0" * 64)
    used = codec.metadata_size(metadata)
    if used + VALUE_ROOM_BYTES > codec.MAX_METADATA_BYTES:
        raise UsageError(
            f"{len(fields)} indexed fields need {used:,} bytes of metadata before any value: "
            f"each object may carry {codec.MAX_METADATA_BYTES:,} bytes (S3's limit), and "
            f"{VALUE_ROOM_BYTES} of them are kept for the key and the values",
            hint="index fewer fields, or fields with shorter paths",
        )


def _nulls(fields: Sequence[str]) -> dict[str, Any]:
    """A document with null at every path (nested, as the entry stores them)."""
    document: dict[str, Any] = {}
    for path in fields:
        *parents, leaf = path.split(".")
        node = document
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node.setdefault(leaf, None)
    return document


def document_key(document: Any, key_field: str) -> str:
    """The key of a parsed document, or the RecordError saying why it has none.

    The first checks of ``DocumentPreparer.prepare``, alone: ``put --processes`` routes each
    document by its key before any process prepares it.
    """
    if not isinstance(document, dict):
        raise RecordError(f"expected a JSON object, got {codec.json_kind(document)}")
    _check_top_level_names(document)
    if key_field not in document:
        raise RecordError(
            f"missing key field {key_field!r}",
            hint="every document needs its key; choose the key field with --key",
        )
    return codec.check_key(document[key_field], key_field)


class DocumentPreparer:
    """Validates documents and builds their entries; shared by ``put`` and the Python API."""

    def __init__(
        self,
        store: ObjectStore,
        key_field: str,
        fields: Sequence[str],
        codec_name: str,
        check_entry: Callable[[str, dict[str, Any]], None] | None = None,
        *,
        last_updated_from_document: bool = False,
    ) -> None:
        self._store = store
        self._check_entry = check_entry
        self._last_updated_from_document = last_updated_from_document
        self.key_field = key_field
        self.fields = tuple(fields)
        self.codec = codec_name
        self._paths = [key_field, *self.fields]

    def prepare(self, record: Record) -> Prepared:
        document = record.document
        key = document_key(document, self.key_field)
        self._store.check_key(key)
        entry = self._entry(document, record.raw)
        if self._last_updated_from_document and codec.LAST_UPDATED in document:
            entry[codec.LAST_UPDATED] = _document_last_updated(document[codec.LAST_UPDATED])
        if self._check_entry is not None:
            self._check_entry(key, entry)
        body = record.raw if record.raw else _dumps(document)
        sha256 = hashlib.sha256(body).hexdigest()
        metadata = codec.build_metadata(entry, self.key_field, self.fields, self.codec, sha256)
        codec.check_metadata_size(metadata, key, entry)
        return Prepared(record, key, entry, body, sha256, metadata)

    def _entry(self, document: Mapping[str, Any], raw: bytes = b"") -> dict[str, Any]:
        projected = project(document, self._paths)
        _check_nesting(projected)  # before anything recursive walks it
        if raw and _has_rounded_integer(projected):
            # orjson reads an integer beyond 64 bits as a float: read the line again, exactly.
            projected = project(_exact_document(raw), self._paths)
        try:
            # A dict, never a lone date: no indexed path is "$date" (check_field_paths).
            entry: dict[str, Any] = codec.untag(projected)
        except ValueError as exc:
            raise RecordError(f"in an indexed field: {exc}") from None
        _check_values(entry)
        entry[codec.LAST_UPDATED] = codec.utc_now()
        return entry


def _document_last_updated(value: Any) -> datetime:
    try:
        untagged = codec.untag(value)
    except ValueError as exc:
        raise RecordError(f"field {codec.LAST_UPDATED!r}: {exc}") from None
    if not isinstance(untagged, datetime):
        raise RecordError(
            f"field {codec.LAST_UPDATED!r} must be a date and time, got {codec.json_kind(value)}",
            hint='give a datetime (in JSON: {"$date": "2026-01-01T00:00:00Z"}), or leave '
            "the field out to have the time of storing",
        )
    return untagged


def _dumps(document: Mapping[str, Any]) -> bytes:
    try:
        return codec.dumps(document)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"document cannot be stored as JSON: {exc}") from None


def _check_top_level_names(document: Mapping[str, Any]) -> None:
    for name in document:
        if name.startswith("$"):
            raise RecordError(
                f"top-level field name {name!r} starts with '$' (MongoDB reserves it)",
                hint="rename the field",
            )
        if "." in name:
            raise RecordError(
                f"top-level field name {name!r} contains '.' (it would read as a path)",
                hint="rename the field",
            )


class _BigInteger(str):
    """An integer literal beyond 64 bits, kept as its digits (it may be too long for int())."""


def _exact_int(digits: str) -> int | str:
    if len(digits) <= 20:
        number = int(digits)
        if INT64_MIN <= number <= INT64_MAX:
            return number
    return _BigInteger(digits)


def _exact_document(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_int=_exact_int)
    except RecursionError:  # deeper than Python's parser goes; orjson's reading stands
        return orjson.loads(raw)


def _has_rounded_integer(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and item.is_integer() and abs(item) >= 2**63:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _check_nesting(entry: Mapping[str, Any]) -> None:
    for name, value in entry.items():
        if 1 + json_depth(value) > MAX_NESTING:
            raise RecordError(
                f"indexed field {name!r} is nested deeper than {MAX_NESTING} levels "
                "(MongoDB's limit)"
            )


def _check_values(value: Any, path: str = "") -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, _BigInteger):
        raise RecordError(f"indexed field {path!r} {big_integer_message(value)}")
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise RecordError(f"indexed field {path!r} {big_integer_message(str(value))}")
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise RecordError(f"indexed field {path!r} holds {value}, which JSON cannot carry")
    elif isinstance(value, dict):
        for name, item in value.items():
            _check_values(item, f"{path}.{name}" if path else name)
    elif isinstance(value, list):
        for item in value:
            _check_values(item, path)
