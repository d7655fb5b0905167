"""``Frozen``: the base of s3idx's small immutable value types, in place of frozen dataclasses.

A dataclass is built at import time by writing its methods' source and running ``exec`` on
it, ~0.5 ms a class: the thirty-odd that a query imported were ~15% of its start-up (issue 17).
A ``Frozen`` subclass writes its ``__slots__`` and its ``__init__`` (which sets each field
with ``init_field``, as a frozen dataclass's does) and names its ``_fields``, in the order of
``__init__``'s parameters; this base gives what the dataclass did: equality and hash by those
fields (with an instance of the same class only), a dataclass's repr, no assignment or
deletion after ``__init__``, and copies and pickles (made again through ``__init__``).
"""

from __future__ import annotations

from typing import Any, ClassVar

# Sets a field of a record being initialised, past Frozen's refusal (a frozen dataclass's
# __init__ does the same); object's own method, so no Python call is added per field.
init_field = object.__setattr__


class Frozen:
    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()  # compared, hashed and shown, in this order
    # Taken by __init__ after _fields and kept by copies and pickles, but not compared, hashed
    # nor shown: what says how a value came about, not what it is.
    _uncompared: ClassVar[tuple[str, ...]] = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of {type(self).__name__}")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__ or not isinstance(other, Frozen):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __reduce__(self) -> tuple[Any, ...]:
        extra = tuple(getattr(self, name) for name in self._uncompared)
        return (type(self), self._values() + extra)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__qualname__}({fields})"
