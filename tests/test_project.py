"""The project keeps its promises about itself: help, README, completions, layering."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from s3idx import completions
from s3idx._version import __version__
from s3idx.cli import app
from s3idx.errors import EXIT_STATUS_MEANINGS, ExitStatus

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands() -> dict[str, Any]:
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_has_help_with_an_example(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    example = text.split("Example: ", 1)[1]
    assert f"s3idx {name} " in example


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_and_flag_is_in_the_readme(name: str) -> None:
    assert f"s3idx {name}" in README
    for param in _commands()[name].params:
        for opt in getattr(param, "opts", []):
            if opt.startswith("--"):
                assert f"`{opt}" in README or f"{opt} " in README, f"{name} {opt} not in README"


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.stdout == f"s3idx {__version__}\n"


def test_help_names_the_default_locations(tmp_path: Path) -> None:
    env = {**os.environ, "S3IDX_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-m", "s3idx", "--help"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    text = "".join(result.stdout.split())
    assert str(tmp_path / "home" / "store") in text
    assert str(tmp_path / "home" / "index.sqlite3") in text


def test_readme_exit_code_table_matches_the_code() -> None:
    rows = re.findall(r"^\| (\d+) \| (\w+) \| (.+?) \|$", README, flags=re.MULTILINE)
    assert rows == [(str(int(s)), s.name, EXIT_STATUS_MEANINGS[s]) for s in ExitStatus]


def test_completions_are_current() -> None:
    rendered = completions.render_all()
    for name, text in rendered.items():
        path = ROOT / "completions" / name
        assert path.is_file(), f"missing {path}; run python -m s3idx.completions completions/"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path} is stale; run python -m s3idx.completions completions/"
        )


@pytest.mark.parametrize(
    ("shell", "name"), [("bash", "s3idx.bash"), ("zsh", "_s3idx"), ("fish", "s3idx.fish")]
)
def test_completion_scripts_parse_in_their_shell(shell: str, name: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    result = subprocess.run([shell, "-n", str(ROOT / "completions" / name)], capture_output=True)
    assert result.returncode == 0, result.stderr


def test_bash_completion_completes_commands_flags_and_choices() -> None:
    script = ROOT / "completions" / "s3idx.bash"
    probe = f"""
source {script}
COMP_WORDS=(s3idx qu); COMP_CWORD=1; _s3idx; echo "${{COMPREPLY[*]}}"
COMP_WORDS=(s3idx put --skip); COMP_CWORD=2; _s3idx; echo "${{COMPREPLY[*]}}"
COMP_WORDS=(s3idx put --compress ""); COMP_CWORD=3; _s3idx; echo "${{COMPREPLY[*]}}"
"""
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
    assert result.stdout.splitlines() == ["query", "--skip-unchanged", "zlib none zstd"]


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "s3idx", "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.stdout == f"s3idx {__version__}\n"


# Backend libraries stay inside their backend modules; the engine never prints.
ALLOWED_IMPORTS = {
    "boto3": {"s3idx/store/s3.py"},
    "botocore": {"s3idx/store/s3.py", "s3idx/store/s3_errors.py", "s3idx/store/obstore_s3.py"},
    "obstore": {"s3idx/store/obstore_s3.py"},
    "pymongo": {"s3idx/index/mongo.py", "s3idx/index/mongo_errors.py"},
    "bson": {"s3idx/index/mongo.py", "s3idx/index/mongo_errors.py"},
    "typer": {"s3idx/cli.py", "s3idx/completions.py"},
    "rich": {"s3idx/output.py"},
    "sqlite3": {"s3idx/index/sqlite.py", "s3idx/engine/seen.py", "s3idx/engine/manifest_index.py"},
    "msgpack": {"s3idx/maggma_format.py"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "path", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "s3idx").rglob("*.py"))
)
def test_layering(path: str) -> None:
    imported = _imports(ROOT / path)
    for library, allowed in ALLOWED_IMPORTS.items():
        if library in imported:
            assert path in allowed, f"{path} imports {library}"
    if path.startswith(("s3idx/engine/", "s3idx/store/", "s3idx/index/", "s3idx/query/")):
        source = (ROOT / path).read_text(encoding="utf-8")
        assert "print(" not in source, f"{path} prints"
        presentation = _s3idx_modules(ROOT / path) & {"s3idx.cli", "s3idx.output"}
        assert not presentation, f"{path} imports {presentation}"
        assert "s3idx.output" not in source


def _s3idx_modules(path: Path) -> set[str]:
    """Full names of the s3idx modules a file imports (``from s3idx import cli`` included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names
