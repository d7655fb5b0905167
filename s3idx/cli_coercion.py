"""Coercion of the command line's plain values without pydantic, for start-up time.

Typer (0.2x) coerces each parameter through a pydantic ``TypeAdapter`` built on first use, so
any command with one non-flag parameter imports pydantic: ~60 ms of a 250 ms ``query``
(issue 17). s3idx's parameters are plain: strings, lists of strings, bounded integers and
floats, ``StrEnum`` choices. ``install`` gives each Typer parameter a coercer that returns
what Typer would for those, and hands everything else to Typer's own coercion, built only
then: every value it would refuse (so the error message stays Typer's), paths (whose checks
are Typer's), and any type it does not know. ``tests/cli/test_coercion.py`` compares both.

With a Typer that has no such parameters (``type_descriptor`` and ``_runtime_param``) this
does nothing, and Typer coerces as it always did.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, get_args, get_origin

_SLOW = object()  # "not a plain value: ask Typer"


class _PlainCoercion:
    """Stands in for Typer's ``RuntimeParam`` of one parameter: ``coerce(value, param, ctx)``."""

    def __init__(self, param: Any) -> None:
        self._param = param
        self._typer: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:  # as Typer's RuntimeParam.coerce: nothing given, no default
            return () if param.multiple or param.nargs == -1 else None
        descriptor = param.type_descriptor
        fast = _plain(descriptor.annotation, descriptor.parameter_info, value, ctx)
        if fast is not _SLOW:
            return fast
        if self._typer is None:
            from typer._coercion import build_runtime_param

            self._typer = build_runtime_param(descriptor)
        return self._typer.coerce(value, param=param, ctx=ctx)


def install(params: Iterable[Any]) -> None:
    """Give every Typer parameter among ``params`` that has no coercion yet the plain one."""
    for param in params:
        if hasattr(param, "type_descriptor") and getattr(param, "_runtime_param", False) is None:
            param._runtime_param = _PlainCoercion(param)


def _plain(annotation: Any, info: Any, value: Any, ctx: Any) -> Any:
    """``value`` coerced to ``annotation`` as Typer would, or ``_SLOW``."""
    if getattr(info, "parser", None) is not None or getattr(info, "clamp", False):
        return _SLOW
    if annotation is str:
        return value if isinstance(value, str) else _SLOW
    if get_origin(annotation) is list and get_args(annotation) == (str,):
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        return _SLOW
    if annotation is bool:
        return value if isinstance(value, bool) else _SLOW
    if annotation is int:
        return _bounded(_int(value), info)
    if annotation is float:
        return _bounded(_float(value), info)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _choice(annotation, info, value, ctx)
    return _SLOW


def _int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    # Digits only: signs, spaces and underscores are left to Typer, whose rules they follow.
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return _SLOW


def _float(value: Any) -> Any:
    if isinstance(value, float):
        return value
    if isinstance(value, str) and value.isascii():
        whole, _, fraction = value.partition(".")
        digits = (whole == "" or whole.isdigit()) and (fraction == "" or fraction.isdigit())
        if digits and whole + fraction:
            return float(value)
    return _SLOW


def _bounded(number: Any, info: Any) -> Any:
    if number is _SLOW:
        return _SLOW
    low, high = getattr(info, "min", None), getattr(info, "max", None)
    if (low is not None and number < low) or (high is not None and number > high):
        return _SLOW  # Typer's message names the bound
    return number


def _choice(annotation: type[enum.Enum], info: Any, value: Any, ctx: Any) -> Any:
    if isinstance(value, annotation):
        return value
    if not isinstance(value, str) or not getattr(info, "case_sensitive", False):
        return _SLOW
    if getattr(ctx, "token_normalize_func", None) is not None:
        return _SLOW
    for member in annotation:
        if member.value == value:
            return member
    return _SLOW
