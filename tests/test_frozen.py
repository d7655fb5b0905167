"""The small value types (``s3idx.frozen.Frozen``) behave as the frozen dataclasses they
replaced: equal and hashed by their fields, shown with them, unchangeable, copied and pickled."""

from __future__ import annotations

import copy
import importlib
import inspect
import pickle
import pkgutil
from datetime import UTC, datetime

import pytest

import s3idx
from s3idx.frozen import Frozen
from s3idx.index.base import Bookkeeping
from s3idx.query.filter import parse_filter
from s3idx.store.base import DeleteFailure, ObjectInfo


def test_records_are_values() -> None:
    when = datetime(2026, 1, 2, tzinfo=UTC)
    info = ObjectInfo("a", "etag", 3, last_modified=when)
    assert info == ObjectInfo(key="a", etag="etag", size=3, last_modified=when)
    assert hash(info) == hash(ObjectInfo("a", "etag", 3, when))
    assert info != ObjectInfo("a", "etag", 3)
    assert info != ("a", "etag", 3, when)  # another type is never equal
    assert (
        repr(DeleteFailure("k", "gone"))
        == "DeleteFailure(key='k', reason='gone', changed=False, transient=False, denied=False, "
        "timed_out=False, hint=None)"
    )
    assert {info, ObjectInfo("a", "etag", 3, when)} == {info}


def test_records_cannot_be_changed() -> None:
    info = ObjectInfo("a", "etag", 3)
    with pytest.raises(AttributeError):
        info.size = 4
    with pytest.raises(AttributeError):
        del info.key
    with pytest.raises(AttributeError):
        info.other = 1
    assert info.size == 3


def test_records_copy_and_pickle() -> None:
    info = ObjectInfo("a", "etag", 3, datetime(2026, 1, 2, tzinfo=UTC))
    for again in (copy.copy(info), copy.deepcopy(info), pickle.loads(pickle.dumps(info))):
        assert again == info and again is not info
    # Fields derived in __init__ (a compiled $regex, $in's lookup set) are made again too.
    flt = parse_filter({"a": {"$in": [1, None]}, "b": {"$regex": "^x", "$options": "i"}})
    again = pickle.loads(pickle.dumps(flt))
    assert again == flt
    assert again.matches({"b": "XY"}) and not again.matches({"a": 2, "b": "XY"})


def test_an_uncompared_field_is_kept_by_copies_but_not_compared() -> None:
    kept = Bookkeeping('"e"', 3, None, "json", stamp="s1")
    for again in (copy.copy(kept), copy.deepcopy(kept), pickle.loads(pickle.dumps(kept))):
        assert again == kept and again.stamp == "s1"
    other = Bookkeeping('"e"', 3, None, "json", stamp="s2")
    assert other == kept and hash(other) == hash(kept) and repr(other) == repr(kept)
    assert other.version != kept.version


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.extend([sub, *_subclasses(sub)])
    return found


def test_every_frozen_type_names_its_fields_as_its_init_takes_them() -> None:
    """A field left out of ``_fields`` would be ignored by ==, hash and repr, silently; one
    out of ``__init__``'s order would make copies and pickles swap values."""
    for module in pkgutil.walk_packages(s3idx.__path__, "s3idx."):
        if module.name not in ("s3idx.maggma", "s3idx.__main__"):  # an extra; runs the CLI
            importlib.import_module(module.name)
    types = [t for t in _subclasses(Frozen) if t.__module__.startswith("s3idx.")]
    assert len(types) >= 20
    for kind in types:
        init = kind.__init__
        parameters = (
            () if init is object.__init__ else tuple(inspect.signature(init).parameters)[1:]
        )
        assert kind._fields + kind._uncompared == parameters, kind
        slots = {s for k in kind.__mro__ for s in getattr(k, "__slots__", ())}
        assert set(kind._fields + kind._uncompared) <= slots, kind
