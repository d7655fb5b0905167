"""Turning an input record into what is stored: key, index entry, body bytes and metadata."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from s3idx import codec
from s3idx.engine.inputs import Record
from s3idx.errors import RecordError, UsageError
from s3idx.limits import INT64_MAX, INT64_MIN, MAX_NESTING, big_integer_message, json_depth
from s3idx.query.paths import project
from s3idx.store.base import ObjectStore

RESERVED_FIELDS = (codec.RESERVED_FIELD, codec.LAST_UPDATED)


@dataclass(slots=True)
class Prepared:
    """A valid document, ready to upload: ``body`` is the uncompressed JSON."""

    record: Record
    key: str
    entry: dict[str, Any]
    body: bytes
    sha256: str
    metadata: dict[str, str]


def check_field_paths(paths: Sequence[str], key_field: str) -> tuple[str, ...]:
    """Validate ``--field`` paths; the key field and duplicates are dropped."""
    checked: list[str] = []
    for path in paths:
        if not path or any(not part for part in path.split(".")):
            raise UsageError(f"invalid field path {path!r}: empty part")
        if path.startswith("$") or any(part.startswith("$") for part in path.split(".")):
            raise UsageError(f"invalid field path {path!r}: parts may not start with '$'")
        root = path.split(".", 1)[0]
        if root == "_id" and path != key_field:
            raise UsageError(
                f"field {path!r} cannot be indexed: MongoDB keeps its own _id",
                hint="to use _id as the key, pass --key _id",
            )
        if root in RESERVED_FIELDS:
            raise UsageError(
                f"field {path!r} is reserved: s3idx sets {root!r} itself",
            )
        if path != key_field and path not in checked:
            checked.append(path)
    return tuple(checked)


class DocumentPreparer:
    """Validates documents and builds their entries; shared by ``put`` and the Python API."""

    def __init__(
        self, store: ObjectStore, key_field: str, fields: Sequence[str], codec_name: str
    ) -> None:
        self._store = store
        self.key_field = key_field
        self.fields = tuple(fields)
        self.codec = codec_name
        self._paths = [key_field, *self.fields]

    def prepare(self, record: Record) -> Prepared:
        document = record.document
        if not isinstance(document, dict):
            raise RecordError(f"expected a JSON object, got {_json_kind(document)}")
        _check_top_level_names(document)
        if self.key_field not in document:
            raise RecordError(
                f"missing key field {self.key_field!r}",
                hint="every document needs its key; choose the key field with --key",
            )
        key = codec.check_key(document[self.key_field], self.key_field)
        self._store.check_key(key)
        entry = self._entry(document, record.raw)
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
            entry = codec.untag(projected)
        except ValueError as exc:
            raise RecordError(f"in an indexed field: {exc}") from None
        _check_values(entry)
        entry[codec.LAST_UPDATED] = codec.utc_now()
        return entry


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


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
