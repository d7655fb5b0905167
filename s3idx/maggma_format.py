"""Objects written by maggma's ``S3Store``: their metadata as index entries, their bodies as JSON.

What maggma (0.77, ``maggma/stores/aws.py``, ``S3Store.write_doc_to_s3``) writes for a document:

- key ``sub_dir + str(doc[key])``, ``sub_dir`` stripped of ``/`` and given one trailing ``/``;
- body ``msgpack.packb(doc, default=monty.msgpack.default)`` (datetimes become
  ``{"@module": "datetime", "@class": "datetime", "string": str(dt)}``), zlib-compressed when
  ``compress=True``; the ``last_updated`` field is popped from the document first, so it lives
  only in maggma's index and, when it is a searchable field, in the metadata;
- metadata for the key field and the searchable fields (top-level names only), plus ``sub_dir``
  when there is one and ``compression: zlib`` when compressed: each name with ``_`` turned into
  ``-`` and lowercased, each value ``str(value)``; and ``s3-to-mongo-keys``, a JSON map from
  every original name to its metadata name, the key field first.

Values come back from ``str(value)`` only where the text is exactly how Python writes a value
of that type (see ``parse_value``); anything else stays the string it is.
"""

from __future__ import annotations

import base64
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Any

import orjson

from s3idx import codec
from s3idx.errors import (
    CorruptObjectError,
    MissingDependencyError,
    UndecodableMetadataError,
    quote_key,
)

MAP_NAME = "s3-to-mongo-keys"
CODEC_MSGPACK = "msgpack"
CODEC_MSGPACK_ZLIB = "msgpack+zlib"
CODECS = (CODEC_MSGPACK, CODEC_MSGPACK_ZLIB)
INSTALL_HINT = "install it with: pip install 's3idx[maggma]'"

# maggma's own bookkeeping in the metadata: never searchable fields.
_SUB_DIR, _COMPRESSION = "sub_dir", "compression"
_BOOKKEEPING = frozenset({_SUB_DIR, _COMPRESSION, MAP_NAME})
# Names an index entry cannot hold as fields: s3idx's own, MongoDB's _id, paths and operators.
_UNINDEXABLE = frozenset({codec.RESERVED_FIELD, "_id"})

_INT = re.compile(r"0|-?[1-9][0-9]*")
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:[+-][0-9]{2}:[0-9]{2})?"
)
_LITERALS: dict[str, Any] = {"None": None, "True": True, "False": False}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def is_maggma_metadata(metadata: Mapping[str, str]) -> bool:
    return MAP_NAME in metadata


# --- values ----------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A metadata value written as ``str(value)``, back as the value where that is certain.

    ``None``, ``True``, ``False``, integers (64-bit), finite floats and datetimes come back
    when the text is exactly how Python writes one (``str(3)``, ``repr(0.1)``,
    ``str(datetime)``); datetimes become UTC with millisecond precision, naive ones taken as
    UTC. Everything else stays a string: lists and dicts (written as Python repr), NaN and
    infinities, and any string, even one that looks like a number.
    """
    if text in _LITERALS:
        return _LITERALS[text]
    if _INT.fullmatch(text):
        number = int(text)
        return number if _INT64_MIN <= number <= _INT64_MAX else text
    as_float = _float(text)
    if as_float is not None:
        return as_float
    if _DATETIME.fullmatch(text):
        try:
            return codec.normalize_datetime(datetime.fromisoformat(text))
        except ValueError:  # e.g. a 13th month: not a datetime Python could have written
            return text
    return text


def _float(text: str) -> float | None:
    """The float whose ``repr`` is ``text``, if there is one."""
    if not text or text[-1] not in "0123456789" or ("." not in text and "e" not in text):
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if repr(value) == text else None


# --- metadata --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MaggmaMetadata:
    """What a maggma object's metadata says, in s3idx's terms."""

    key_field: str
    fields: tuple[str, ...]
    entry: dict[str, Any]  # the key, the searchable fields, last_updated when maggma wrote it
    codec: str
    sub_dir: str


def parse_metadata(metadata: Mapping[str, str], key: str, key_field: str | None) -> MaggmaMetadata:
    """Read a maggma object's metadata; ``key`` is the object's key below the store's prefix.

    maggma does not record which field is its key: it is the field whose value is the object's
    key. ``key_field`` picks it when given and its value is the key; otherwise the first such
    field in ``s3-to-mongo-keys``, where maggma puts its key first.
    """
    originals = _original_values(metadata)
    sub_dir = metadata.get(_SUB_DIR.replace("_", "-"), "")
    chosen = _choose_key_field(originals, key, key_field, sub_dir)
    entry: dict[str, Any] = {chosen: key}
    fields = []
    for name, text in originals.items():
        if name == chosen or name in _BOOKKEEPING or not _indexable(name):
            continue
        if name == codec.LAST_UPDATED:
            value = parse_value(text)
            if isinstance(value, datetime):
                entry[name] = value
            continue
        entry[name] = parse_value(text)
        fields.append(name)
    return MaggmaMetadata(chosen, tuple(fields), entry, codec_of(metadata), sub_dir)


def codec_of(metadata: Mapping[str, str]) -> str:
    compression = metadata.get(_COMPRESSION)
    if compression is None:
        return CODEC_MSGPACK
    if compression == "zlib":
        return CODEC_MSGPACK_ZLIB
    raise UndecodableMetadataError(f"maggma metadata names an unknown compression {compression!r}")


def _original_values(metadata: Mapping[str, str]) -> dict[str, str]:
    """Original field name -> metadata value, in the order of maggma's map (key first)."""
    try:
        names = orjson.loads(metadata[MAP_NAME])
    except orjson.JSONDecodeError:
        names = None
    if not isinstance(names, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in names.items()
    ):
        raise UndecodableMetadataError(f"{MAP_NAME} is not a JSON object of field names")
    # S3 and MinIO fold metadata names to lowercase; maggma lowercases them itself too.
    return {
        name: metadata[meta.lower()] for name, meta in names.items() if meta.lower() in metadata
    }


def _choose_key_field(
    originals: Mapping[str, str], key: str, wanted: str | None, sub_dir: str
) -> str:
    candidates = [
        name for name, text in originals.items() if text == key and name not in _BOOKKEEPING
    ]
    if wanted in candidates:
        return wanted
    if candidates:
        return candidates[0]
    hint = f" (maggma wrote it with sub_dir {sub_dir!r}: is that the store's prefix?)"
    raise UndecodableMetadataError(
        f"no field of its maggma metadata holds its key {quote_key(key)}"
        + (hint if sub_dir else "")
    )


def _indexable(name: str) -> bool:
    return bool(name) and "." not in name and not name.startswith("$") and name not in _UNINDEXABLE


# --- bodies ----------------------------------------------------------------------------------


def decode_document(body: bytes, codec_name: str, metadata: Mapping[str, str]) -> dict[str, Any]:
    """The document maggma stored, as s3idx values (datetimes as datetimes).

    maggma takes ``last_updated`` out of the body; it is put back from the metadata when maggma
    wrote it there (as maggma's own ``query`` puts it back from its index).
    """
    msgpack = require_msgpack()
    if codec_name == CODEC_MSGPACK_ZLIB:
        try:
            body = zlib.decompress(body)
        except zlib.error as exc:
            raise CorruptObjectError(f"body cannot be decompressed ({codec_name}): {exc}") from None
    elif codec_name != CODEC_MSGPACK:
        raise CorruptObjectError(f"unknown codec {codec_name!r}")
    try:
        # timestamp=3: msgpack's own timestamp type comes back as a datetime.
        raw = msgpack.unpackb(body, raw=False, strict_map_key=False, timestamp=3)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CorruptObjectError(f"body is not msgpack: {exc}") from None
    document = _plain(raw, msgpack)
    if not isinstance(document, dict):
        raise CorruptObjectError("body is not a msgpack map (a document)")
    last_updated = _last_updated(metadata)
    if last_updated is not None and codec.LAST_UPDATED not in document:
        document[codec.LAST_UPDATED] = last_updated
    return document


def document_json(body: bytes, codec_name: str, metadata: Mapping[str, str]) -> bytes:
    """The document as s3idx's JSON (datetimes as ``{"$date": ...}``)."""
    document = decode_document(body, codec_name, metadata)
    try:
        return codec.dumps(document)
    except ValueError as exc:  # NaN or Infinity: msgpack carries them, JSON does not
        raise CorruptObjectError(f"document cannot be written as JSON: {exc}") from None


def require_msgpack() -> ModuleType:
    """The msgpack module, or MissingDependencyError saying how to install it."""
    try:
        import msgpack
    except ImportError:
        raise MissingDependencyError(
            "reading objects written by maggma needs the msgpack package", hint=INSTALL_HINT
        ) from None
    module: ModuleType = msgpack  # untyped package (no stubs): Any until named a module here
    return module


def _last_updated(metadata: Mapping[str, str]) -> datetime | None:
    try:
        originals = _original_values(metadata)
    except CorruptObjectError:
        return None
    value = parse_value(originals.get(codec.LAST_UPDATED, ""))
    return value if isinstance(value, datetime) else None


def _plain(value: Any, msgpack: ModuleType) -> Any:
    """msgpack's values as s3idx's: monty datetimes and msgpack timestamps to datetimes,
    binary to MongoDB Extended JSON's ``$binary``, map keys to strings."""
    if isinstance(value, dict):
        if _is_monty_datetime(value):
            return _monty_datetime(value["string"])
        return {_name(k): _plain(v, msgpack) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, msgpack) for v in value]
    if isinstance(value, datetime):
        return codec.normalize_datetime(value)
    if isinstance(value, bytes):
        encoded = base64.b64encode(value).decode("ascii")
        return {"$binary": {"base64": encoded, "subType": "00"}}
    if isinstance(value, msgpack.ExtType):
        raise CorruptObjectError(f"body holds msgpack extension type {value.code}, not JSON")
    return value


def _is_monty_datetime(value: Mapping[Any, Any]) -> bool:
    return (
        value.get("@module") == "datetime"
        and value.get("@class") == "datetime"
        and isinstance(value.get("string"), str)
        and set(value) <= {"@module", "@class", "@version", "string"}
    )


def _monty_datetime(text: str) -> datetime:
    try:
        return codec.normalize_datetime(datetime.fromisoformat(text))
    except ValueError:
        raise CorruptObjectError(f"body holds an invalid datetime {text!r}") from None


def _name(key: Any) -> str:
    # msgpack maps may have non-string keys; JSON object names are strings.
    return key if isinstance(key, str) else str(key)
