"""s3idx.cli_coercion gives every parameter of every command the value Typer's own coercion
gives, and Typer's own error for a value either refuses."""

from __future__ import annotations

import enum
from typing import Any

import pytest
import typer.main

from s3idx import cli_coercion
from s3idx.cli import app

# Typer's coercion layer (0.2x: its own copy of click, pydantic adapters); older Typers have
# none, and s3idx.cli_coercion then leaves their coercion alone.
_coercion = pytest.importorskip("typer._coercion")
Context = pytest.importorskip("typer._click").Context
build_runtime_param = _coercion.build_runtime_param

SAMPLES = [
    None,
    "",
    "0",
    "1",
    "7",
    "-1",
    "+3",
    " 4",
    "1_000",
    "0.5",
    ".5",
    "1.",
    "1.5",
    "2.0",
    "1e-3",
    "nan",
    "x",
    "zlib",
    "ZLIB",
    "zstd",
    "obstore",
    "none",
    "a/b.jsonl",
    ["a", "b"],
    ("a",),
    [],
    True,
    False,
    3,
    0.25,
]


def _params() -> list[tuple[str, Any, Any]]:
    group = typer.main.get_command(app)
    found = [("s3idx", group, p) for p in group.params]
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        found += [(name, command, p) for p in command.params]
    return [(n, c, p) for n, c, p in found if hasattr(p, "type_descriptor")]


def _outcome(coercion: Any, value: Any, param: Any, ctx: Any) -> tuple[str, Any]:
    try:
        return "value", coercion.coerce(value, param=param, ctx=ctx)
    except Exception as exc:  # both must refuse alike, whatever the class
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize(
    ("command", "param"), [(n, p) for n, _, p in _params()], ids=lambda x: getattr(x, "name", x)
)
def test_plain_coercion_agrees_with_typer(command: str, param: Any) -> None:
    ctx = Context(typer.main.get_command(app))
    typer_own = build_runtime_param(param.type_descriptor)
    plain = cli_coercion._PlainCoercion(param)
    for value in SAMPLES:
        expected = _outcome(typer_own, value, param, ctx)
        got = _outcome(plain, value, param, ctx)
        assert got == expected, (command, param.name, value)
        assert type(got[1]) is type(expected[1]), (command, param.name, value)


def test_the_plain_values_of_every_command_need_no_typer_adapter() -> None:
    """The commands' parameters are of the kinds the plain coercion knows (else pydantic is
    imported again, silently): each takes one sample value without asking Typer."""
    kinds = {str: "x", int: "1", float: "0.5", bool: True}
    for command, _, param in _params():
        annotation = param.type_descriptor.annotation
        if getattr(annotation, "__origin__", None) is list:
            sample: Any = ["x"]
        elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            sample = next(iter(annotation)).value
        else:
            sample = kinds.get(annotation)
        if sample is None:
            continue  # a path: Typer checks it, only when one is given
        info = param.type_descriptor.parameter_info
        got = cli_coercion._plain(annotation, info, sample, None)
        assert got is not cli_coercion._SLOW, (command, param.name)
