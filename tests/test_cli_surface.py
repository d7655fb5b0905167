"""What the user reads of the command tree: completions, help and hints agree with the app.

Every expectation is read from the Typer app itself, so commands added later are covered too.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from s3idx import completions
from s3idx.cli import app
from s3idx.query.filter import SUPPORTED_OPERATORS

ROOT = Path(__file__).resolve().parent.parent
COMPLETIONS = ROOT / "completions"
GROUP: Any = typer.main.get_command(app)
COMMANDS: dict[str, Any] = dict(GROUP.commands)
FLAG = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def _options(command: Any) -> list[tuple[list[str], list[str]]]:
    """(names, choices) of every visible option, ``--no-x`` forms and ``-h/--help`` included."""
    found = [(["-h", "--help"], [])]
    for param in command.params:
        if param.param_type_name != "option" or param.hidden:
            continue
        names = [*param.opts, *param.secondary_opts]
        descriptor = getattr(param, "type_descriptor", None)
        click_type = getattr(param, "type", None)
        raw = getattr(descriptor, "choices", None) or getattr(click_type, "choices", None) or ()
        choices = [str(getattr(c, "value", c)) for c in raw]
        found.append((names, choices))
    return found


def _all_flags() -> dict[str, set[str]]:
    flags = {name: {n for names, _ in _options(c) for n in names} for name, c in COMMANDS.items()}
    flags["s3idx"] = {n for names, _ in _options(GROUP) for n in names}
    return flags


# --- completions ------------------------------------------------------------------------------


def _bash(words: list[str]) -> set[str]:
    line = " ".join(f"'{w}'" for w in words)
    probe = (
        f"source {COMPLETIONS / 's3idx.bash'}\n"
        f'COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _s3idx; echo "${{COMPREPLY[*]}}"\n'
    )
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_bash_completes_every_option_and_choice(name: str) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    offered = _bash(["s3idx", name, "-"])
    for names, choices in _options(COMMANDS[name]):
        assert set(names) <= offered, f"bash: s3idx {name} does not offer {names}"
        for option in names if choices else ():
            assert _bash(["s3idx", name, option, ""]) == set(choices), (name, option)


def test_bash_completes_every_command_and_top_level_option() -> None:
    offered = _bash(["s3idx", ""])
    assert set(COMMANDS) <= offered
    assert {n for names, _ in _options(GROUP) for n in names} <= offered


def _zsh_block(name: str) -> str:
    text = (COMPLETIONS / "_s3idx").read_text(encoding="utf-8")
    match = re.search(rf"^ +{re.escape(name)}\) _arguments \\\n(.*?) ;;$", text, re.M | re.S)
    assert match, f"zsh: no block for {name}"
    return match.group(1)


def _fish_lines(name: str) -> list[str]:
    text = (COMPLETIONS / "s3idx.fish").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if f"__fish_seen_subcommand_from {name}'" in line]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_zsh_and_fish_complete_every_option_and_choice(name: str) -> None:
    block = _zsh_block(name)
    fish = _fish_lines(name)
    for names, choices in _options(COMMANDS[name]):
        zsh_lines = [line for line in block.splitlines() if FLAG.findall(line)]
        zsh_line = next((line for line in zsh_lines if names[0] in FLAG.findall(line)), None)
        assert zsh_line is not None, f"zsh: {name} lacks {names[0]}"
        assert set(names) <= set(FLAG.findall(zsh_line)), f"zsh: {name} {names}"
        fish_flags = {f"--{n}" for n in re.findall(r"-l (\S+)", "\n".join(fish))}
        fish_flags |= {f"-{n}" for n in re.findall(r"-s (\S+)", "\n".join(fish))}
        assert set(names) <= fish_flags, f"fish: {name} lacks {names}"
        if choices:
            assert f"({' '.join(choices)})" in zsh_line, f"zsh: {name} {names[0]} choices"
            fish_line = next(line for line in fish if f"-l {names[-1][2:]} " in line)
            assert f"-a '{' '.join(choices)}'" in fish_line, f"fish: {name} {names[0]} choices"


def test_zsh_and_fish_list_every_command() -> None:
    zsh = (COMPLETIONS / "_s3idx").read_text(encoding="utf-8")
    fish = (COMPLETIONS / "s3idx.fish").read_text(encoding="utf-8")
    for name in COMMANDS:
        assert f"        '{name}:" in zsh
        assert f"-n '__fish_use_subcommand' -a {name} " in fish


# --- help -------------------------------------------------------------------------------------

PYTHON_IN_HELP = [
    r"<(?:list|tuple|dict|set|str|int|float|bool|path|Path|enum|class)\b[^>]*>",  # <list[str]>
    r"\{[A-Z][A-Z_]*\}",  # {KEY}
    r"\[default: None\]",
    r"NoneType|typing\.|Optional\[|\| None",
]


@pytest.mark.parametrize("words", [[], *([name] for name in sorted(COMMANDS))])
def test_help_shows_no_python_types(words: list[str]) -> None:
    result = CliRunner().invoke(app, [*words, "--help"])
    assert result.exit_code == 0, result.output
    for pattern in PYTHON_IN_HELP:
        found = re.search(pattern, result.stdout)
        assert found is None, f"s3idx {' '.join(words)} --help shows {found.group(0)!r}"


def test_usage_names_arguments_as_users_type_them() -> None:
    usage = {
        name: CliRunner().invoke(app, [name, "--help"]).stdout.splitlines()[0]
        for name in ("get", "put")
    }
    assert usage["get"] == "Usage: s3idx get [OPTIONS] KEY..."
    assert usage["put"] == "Usage: s3idx put [OPTIONS] [FILE]..."


# --- flags named in messages ------------------------------------------------------------------


def _message_strings() -> list[tuple[str, str]]:
    """Every string literal in s3idx/ outside docstrings, with the file it is in."""
    found = []
    for path in sorted((ROOT / "s3idx").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                text = "".join(
                    v.value if isinstance(v, ast.Constant) else "{}" for v in node.values
                )
                found.append((path.relative_to(ROOT).as_posix(), text))
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
            ):
                found.append((path.relative_to(ROOT).as_posix(), node.value))
    return found


def test_every_flag_a_message_names_exists() -> None:
    flags = _all_flags()
    every = set().union(*flags.values())
    wrong = []
    for where, text in _message_strings():
        if "Error: " in text or text.startswith("#"):
            continue
        for clause in re.split(r"[;:(]|, or ", text):
            named = re.search(r"\bs3idx ([a-z][a-z-]*)", clause)
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", clause):
                if named and named.group(1) in flags:
                    if flag not in flags[named.group(1)]:
                        wrong.append(f"{where}: {text!r}: s3idx {named.group(1)} has no {flag}")
                elif flag not in every:
                    wrong.append(f"{where}: {text!r}: no command has {flag}")
    assert not wrong, "\n".join(wrong)


def test_missing_bucket_hint_names_only_flags_of_the_command(
    run: Any, s3_endpoint: str, tmp_path: Path
) -> None:
    index = str(tmp_path / "index.sqlite3")  # an index that exists: only the bucket is missing
    made = run(
        "put", "--store", str(tmp_path / "store"), "--index", index, input='{"fs_id": "k"}\n'
    )
    assert made.exit_code == 0, made.stderr
    args = ["--store", "s3://no-such-bucket/docs", "--endpoint-url", s3_endpoint, "--index", index]
    flags = _all_flags()
    for command in (["get", "k"], ["rebuild-index"], ["sync", "--check"], ["delete", "k"]):
        result = run(*command, *args)
        assert "bucket 'no-such-bucket' does not exist" in result.stderr, result.stderr
        hint = next(line for line in result.stderr.splitlines() if "hint:" in line)
        for clause in hint.split(";"):
            # A flag after "s3idx OTHER" is OTHER's; any other flag must be this command's.
            named = re.search(r"\bs3idx ([a-z][a-z-]*)", clause)
            owner = named.group(1) if named and named.group(1) in flags else command[0]
            after = clause[named.end() :] if owner != command[0] and named else clause
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", after):
                assert flag in flags[owner], f"{command[0]}: {hint}"


# --- README -----------------------------------------------------------------------------------


def test_readme_lists_exactly_the_supported_operators() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"Supported operators, on every index: `([^`]*)`", readme)
    assert match, "README: no operator list"
    listed = match.group(1).split()
    assert sorted(listed) == sorted(SUPPORTED_OPERATORS), (
        f"README lacks {set(SUPPORTED_OPERATORS) - set(listed)}, "
        f"names unsupported {set(listed) - set(SUPPORTED_OPERATORS)}"
    )


# --- commands added later ---------------------------------------------------------------------


class _Speed(StrEnum):
    slow = "slow"
    fast = "fast"


@pytest.fixture
def extra_command() -> Any:
    """A command registered the way a new one would be, removed afterwards."""
    before = list(app.registered_commands)

    @app.command("frobnicate")
    def frobnicate(
        names: Annotated[list[str], typer.Argument(metavar="NAME")],
        speed: Annotated[_Speed, typer.Option("--speed")] = _Speed.slow,
        verify: Annotated[bool, typer.Option("--verify/--no-verify")] = True,
    ) -> None:
        """Frobnicate.

        Example: s3idx frobnicate a
        """

    yield
    app.registered_commands[:] = before


def test_a_new_command_gets_completions_and_plain_help(extra_command: Any) -> None:
    scripts = completions.render_all()
    for name, text in scripts.items():
        assert "frobnicate" in text
        assert ("-l no-verify" if name.endswith(".fish") else "--no-verify") in text
        assert "slow fast" in text
    help_text = CliRunner().invoke(app, ["frobnicate", "--help"]).stdout
    assert help_text.splitlines()[0] == "Usage: s3idx frobnicate [OPTIONS] NAME..."
    assert "<list[str]>" not in help_text
