"""Turning an input record into what is stored: key, index entry, body bytes and metadata."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from s3idx import codec
from s3idx.engine.inputs import Record
from s3idx.errors import RecordError, UsageError
from s3idx.query.paths import project
from s3idx.store.base import ObjectStore

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
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
        self,
        store: ObjectStore,
        key_field: str,
        fields: Sequence[str],
        codec_name: str,
        check_entry: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._store = store
        self._check_entry = check_entry
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
        entry = self._entry(document)
        if self._check_entry is not None:
            self._check_entry(key, entry)
        body = record.raw if record.raw else _dumps(document)
        sha256 = hashlib.sha256(body).hexdigest()
        metadata = codec.build_metadata(entry, self.key_field, self.fields, self.codec, sha256)
        codec.check_metadata_size(metadata, key, entry)
        return Prepared(record, key, entry, body, sha256, metadata)

    def _entry(self, document: Mapping[str, Any]) -> dict[str, Any]:
        try:
            entry = codec.untag(project(document, self._paths))
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


def _check_values(value: Any, path: str = "") -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise RecordError(f"indexed field {path!r} holds {value}, beyond 64-bit integers")
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
