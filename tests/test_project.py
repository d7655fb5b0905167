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
from s3idx.environment import Environment
from s3idx.errors import EXIT_STATUS_MEANINGS, ExitStatus
from tests.helpers import subprocess_env

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


def _readme_section(name: str) -> str:
    """The README text of command ``name``: from its ``### `s3idx NAME`` heading to the next."""
    heading = re.search(rf"^### `s3idx {re.escape(name)}\b.*$", README, flags=re.MULTILINE)
    assert heading is not None, f"README has no section for s3idx {name}"
    after = README[heading.end() :]
    following = re.search(r"^#{2,3} ", after, flags=re.MULTILINE)
    return after if following is None else after[: following.start()]


# The options every command takes, in their one table under "## Commands".
_COMMON_OPTIONS = README[
    README.index("these location\noptions") : README.index("### `s3idx put [FILE]...`")
]


def _options(name: str) -> set[str]:
    return {
        opt
        for param in _commands()[name].params
        for opt in (*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ()))
        if opt.startswith("-") and opt not in ("-h", "--help")
    }


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_and_flag_is_in_the_readme(name: str) -> None:
    """Each flag is described where a reader of that command looks: its own section, or the
    table of the location options every command takes; and no flag is described there that
    the command does not take."""
    section = _readme_section(name)
    for opt in _options(name):
        described = f"`{opt}" in section or f"{opt}`" in section or f"`{opt}" in _COMMON_OPTIONS
        assert described, f"s3idx {name} {opt} is not in its README section"
    for row in re.findall(r"^\| (`-.*?) \|", section, flags=re.MULTILINE):
        for flag in re.findall(r"`(-[-\w]+)", row):
            assert flag in _options(name), f"README lists {flag} for s3idx {name}, which lacks it"


def test_the_readme_names_every_command_whose_json_is_one_document() -> None:
    """query's --json means JSON lines; every other --json is one document whatever happens."""
    listed = re.search(r"With `--json` \(([^)]*)\) stdout holds exactly one JSON document", README)
    assert listed is not None
    named = set(re.findall(r"`([\w-]+)`", listed.group(1)))
    with_json = {name for name in _commands() if "--json" in _options(name)} - {"query"}
    assert named == with_json


def test_every_module_is_in_the_architecture_module_map() -> None:
    """docs/ARCHITECTURE.md's module map names each module of s3idx/ under its package, and
    names no module that does not exist."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    start = text.index("## Module map")
    module_map = text[start : text.index("\n## ", start + 1)]
    package, named = None, set()
    for line in module_map.splitlines():
        heading = re.match(r"(Top level|`(\w+)/`)", line)
        if heading:
            package = heading.group(2) or ""
        listed = re.match(r"- (`[\w.]+\.py`(?:, `[\w.]+\.py`)*)", line)
        if listed and package is not None:
            prefix = f"{package}/" if package else ""
            named.update(prefix + m for m in re.findall(r"`([\w.]+\.py)`", listed.group(1)))
    modules = {p.relative_to(ROOT / "s3idx").as_posix() for p in (ROOT / "s3idx").rglob("*.py")}
    packages = {m for m in modules if m.endswith("/__init__.py")}
    assert modules - packages - named == set()
    assert named - modules == set()


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
    "typer": {"s3idx/cli.py", "s3idx/cli_coercion.py", "s3idx/completions.py"},
    "rich": {"s3idx/output.py"},
    "sqlite3": {"s3idx/index/sqlite.py", "s3idx/engine/seen.py", "s3idx/engine/manifest_index.py"},
    "msgpack": {"s3idx/maggma_format.py"},
    # s3idx.maggma, the maggma Store adapter (presentation level, like cli.py): s3idx[maggma].
    "maggma": {"s3idx/maggma.py"},
    "monty": {"s3idx/maggma.py"},
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
    # The maggma adapter sits on top: nothing of s3idx imports it, so s3idx never needs maggma.
    assert not {m for m in _s3idx_modules(ROOT / path) if m.startswith("s3idx.maggma")} - {
        "s3idx.maggma_format"
    }, f"{path} imports s3idx.maggma"


def test_importing_s3idx_and_its_cli_never_imports_maggma_or_monty() -> None:
    probe = (
        "import sys, s3idx, s3idx.cli, s3idx.engine.core; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('maggma', 'monty')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout == "[]\n"
    # The probe can fail: importing the adapter does import maggma.
    adapter = probe.replace("s3idx.engine.core;", "s3idx.maggma;")
    result = subprocess.run(
        [sys.executable, "-c", adapter], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert "maggma.core" in result.stdout


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


# Start-up time (issue 17): what a command imports is what it needs. A fact about imports,
# not a timing: tests/bench/bench_startup.py measures the time.
HEAVY = ("boto3", "botocore", "pymongo", "bson", "obstore", "pydantic", "rich")
_REPORT_IMPORTS = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('IMPORTED ' + ' '.join(sorted(m for m in {names}"
    " if m in sys.modules)) + '\\n'))\n"
)


def _imported_by(code: str, tmp_path: Path, names: tuple[str, ...] = HEAVY) -> list[str]:
    return _reported("IMPORTED", _REPORT_IMPORTS.format(names=names) + code, tmp_path)


def _reported(tag: str, code: str, tmp_path: Path) -> list[str]:
    """The words of the one ``tag`` line that ``code``, run in a fresh interpreter with no
    location of the caller's, wrote to stderr."""
    env = {**os.environ, "S3IDX_HOME": str(tmp_path / "home")}
    for name in ("S3IDX_STORE", "S3IDX_INDEX", "S3IDX_TRANSPORT"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT
    )
    report = [line for line in result.stderr.splitlines() if line.startswith(tag + " ")]
    assert len(report) == 1, result.stderr
    return report[0].split()[1:]


def test_importing_the_cli_imports_no_backend_library_and_not_the_engine(tmp_path: Path) -> None:
    names = (*HEAVY, "typer._adapters", "s3idx.engine.core", "s3idx.store.local")
    assert _imported_by("import s3idx.cli", tmp_path, names) == []


def test_importing_s3idx_imports_only_its_version(tmp_path: Path) -> None:
    names = ("s3idx.engine", "s3idx.engine.core", "s3idx.config", "s3idx.errors")
    assert _imported_by("import s3idx", tmp_path, names) == []
    assert _imported_by("from s3idx import Engine", tmp_path, names) == [
        "s3idx.config",
        "s3idx.engine",
        "s3idx.engine.core",
        "s3idx.errors",
    ]


def test_version_imports_neither_typer_nor_the_engine(tmp_path: Path) -> None:
    code = (
        "import runpy\nsys.argv[1:] = ['--version']\nrunpy.run_module('s3idx', run_name='__main__')"
    )
    # Nor typing: without the editable install's import hook, typing was most of its time.
    names = ("typer", "click", "s3idx.cli", "s3idx.engine", "typing")
    assert _imported_by(code, tmp_path, names) == []


def test_what_never_uses_the_s3_store_never_opens_it(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    """A query of the index alone, and the parent of a put split over processes (its workers
    open their own), import no botocore and build no client: ~0.3 s each."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(f'{{"fs_id": "k{i}"}}\n' for i in range(20)))
    where = ["--store", f"s3://{s3_bucket}/d", "--endpoint-url", s3_endpoint]
    where += ["--index", str(tmp_path / "i.sqlite3")]

    def command(*args: str) -> str:
        return f"from s3idx.cli import main\nmain({[*args, *where]!r})"

    assert _imported_by(command("put", "-q", "--processes", "2", str(docs)), tmp_path) == []
    assert _imported_by(command("query", "--count"), tmp_path) == []
    # Reading a body opens the store; the workers stored every document.
    assert _imported_by(command("get", "k7"), tmp_path, ("botocore",)) == ["botocore"]
    count = subprocess.run(
        [sys.executable, "-m", "s3idx", "query", "--count", *where],
        capture_output=True,
        text=True,
        env=subprocess_env(tmp_path / "home"),
        check=True,
    )
    assert count.stdout == "20\n"


def test_a_query_on_a_local_store_and_sqlite_imports_no_backend_library(tmp_path: Path) -> None:
    """pydantic (through Typer's parameter coercion), rich (not a terminal), boto3, pymongo and
    obstore: none is needed to query a SQLite index."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"fs_id": "a"}\n')
    put = f"from s3idx.cli import main\nmain(['put', '-q', {str(docs)!r}])"
    assert _imported_by(put, tmp_path, ("boto3", "pymongo", "obstore", "pydantic")) == []
    query = "from s3idx.cli import main\nmain(['query', '{}', '--limit', '1'])"
    assert _imported_by(query, tmp_path) == []
    # Nor the result types of the commands that return one (a query returns none), nor the
    # reading of bodies (hashlib's OpenSSL with it), nor what only a config file or --shard need.
    unused = ("s3idx.engine.results", "s3idx.engine.read", "hashlib", "tomllib", "socket")
    assert _imported_by(query, tmp_path, unused) == []
    assert _imported_by(put, tmp_path, ("s3idx.engine.results",)) == ["s3idx.engine.results"]
    full = query.replace("'--limit'", "'--full', '--limit'")
    assert _imported_by(full, tmp_path, unused) == ["hashlib", "s3idx.engine.read"]
    config = tmp_path / "s3idx.toml"
    config.write_text("workers = 2\n")
    with_config = f"import os\nos.environ['S3IDX_CONFIG'] = {str(config)!r}\n{query}"
    assert _imported_by(with_config, tmp_path, unused) == ["tomllib"]


_REPORT_BUILT = (
    "import sys, typer.main\n"
    "built = []\n"
    "build = typer.main.get_command_from_info\n"
    "def recording(info, **kwargs):\n"
    "    built.append(info.name or info.callback.__name__)\n"
    "    return build(info, **kwargs)\n"
    "typer.main.get_command_from_info = recording\n"
    "from s3idx.cli import main\n"
    "try:\n"
    "    main({args!r})\n"
    "finally:\n"
    "    sys.stderr.write('BUILT ' + ' '.join(built) + '\\n')\n"
)


def _commands_built(args: list[str], tmp_path: Path) -> list[str]:
    return _reported("BUILT", _REPORT_BUILT.format(args=args), tmp_path)


def test_a_command_builds_only_its_own_parameters(tmp_path: Path) -> None:
    """Start-up (issue 17): running a command builds that command's click parameters, not
    every command's; help and an unknown command's suggestions still see them all."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"fs_id": "a"}\n')
    assert _commands_built(["put", "-q", str(docs)], tmp_path) == ["put"]
    assert _commands_built(["query", "{}", "--limit", "1"], tmp_path) == ["query"]
    assert _commands_built(["rebuild-index", "--help"], tmp_path) == ["rebuild-index"]
    assert sorted(_commands_built(["--help"], tmp_path)) == sorted(_commands())
    assert _commands_built(["qurey"], tmp_path) == []


_REPORT_SIGNATURES = (
    "import inspect, sys\n"
    "read = []\n"
    "signature = inspect.signature\n"
    "def recording(obj, *args, **kwargs):\n"
    "    if getattr(obj, '__module__', None) == 's3idx.cli' and kwargs.get('eval_str'):\n"
    "        read.append(obj.__name__)\n"
    "    return signature(obj, *args, **kwargs)\n"
    "inspect.signature = recording\n"
    "from s3idx.cli import main\n"
    "try:\n"
    "    main({args!r})\n"
    "finally:\n"
    "    sys.stderr.write('READ ' + ' '.join(sorted(set(read))) + '\\n')\n"
)


def test_a_command_resolves_only_its_own_annotations(tmp_path: Path) -> None:
    """Start-up (issue 17): a command's signature, its string annotations evaluated one by one
    (~0.6 ms a command), is read when that command is built, not for all nine at import."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"fs_id": "a"}\n')
    commands = sorted(c.replace("-", "_") for c in _commands())

    def read(args: list[str]) -> list[str]:  # the group's own callbacks are always read
        got = _reported("READ", _REPORT_SIGNATURES.format(args=args), tmp_path)
        return [name for name in got if name in commands]

    assert read(["put", "-q", str(docs)]) == ["put"]
    assert read(["query", "{}", "--limit", "1"]) == ["query"]
    assert read(["--help"]) == commands


_REPORT_COMPILES = (
    "import re, sys\n"
    "compiled = []\n"
    "compile = re.compile\n"
    "def recording(pattern, flags=0):\n"
    "    caller = sys._getframe(1)\n"
    "    module = caller.f_globals.get('__name__', '')\n"
    "    if module.startswith('s3idx') and caller.f_code.co_name == '<module>':\n"
    "        compiled.append(module)\n"
    "    return compile(pattern, flags)\n"
    "re.compile = recording\n"
    "from s3idx.cli import main\n"
    "try:\n"
    "    main({args!r})\n"
    "finally:\n"
    "    sys.stderr.write('COMPILED ' + ' '.join(sorted(set(compiled))) + '\\n')\n"
)


def test_a_query_imports_no_module_that_compiles_patterns_it_may_not_use(tmp_path: Path) -> None:
    """Start-up (issue 17): compiling a regular expression costs 0.05-0.3 ms; the patterns of
    secret redaction, $regex translation, bucket names and terminal escaping are compiled when
    first used, not when their module is imported by a command that may never use them."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"fs_id": "a"}\n')
    report = _REPORT_COMPILES.format
    _reported("COMPILED", report(args=["put", "-q", str(docs)]), tmp_path)  # one to query
    at_import = _reported("COMPILED", report(args=["query", "{}", "--limit", "1"]), tmp_path)
    lazy = ("s3idx.config", "s3idx.query.pcre", "s3idx.output", "s3idx.backends")
    assert [module for module in at_import if module in lazy] == []
    # A $regex filter imports the translation, whose patterns are compiled as it is imported.
    regex = _reported("COMPILED", report(args=["query", '{"fs_id": {"$regex": "^a"}}']), tmp_path)
    assert "s3idx.query.pcre" in regex


def test_a_command_line_reads_as_typers_own(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """main() answers with its commands built on first use as with every command built by
    Typer up front: help, a command's help, no command, an unknown command refused with its
    suggestion, a bad flag."""
    from s3idx import cli

    def run(args: list[str]) -> tuple[Any, str, str]:
        with pytest.raises(SystemExit) as exited:
            cli.main(args, env=Environment.from_process())
        got = capsys.readouterr()
        return exited.value.code, got.out, got.err

    cases = (["--help"], ["qurey"], ["query", "--help"], ["nonsense", "x"], [], ["get", "--x"])
    lazy = [run(args) for args in cases]
    monkeypatch.setattr(cli, "_click_group", typer.main.get_command)
    eager = [run(args) for args in cases]
    assert lazy == eager
    assert "Did you mean 'query'?" in lazy[1][2]


def test_a_query_builds_no_dataclass_but_the_public_types(tmp_path: Path) -> None:
    """Start-up (issue 17): building a dataclass runs exec for each of its methods, ~0.5 ms a
    class. The value types a query needs are Frozen classes (s3idx/frozen.py); only the public
    Settings, Shard and Environment, which users may dataclasses.replace, stay dataclasses."""
    probe = (
        "import dataclasses, sys\n"
        "made = []\n"
        "process = dataclasses._process_class\n"
        "def recording(cls, *args, **kwargs):\n"
        "    if cls.__module__.startswith('s3idx'):\n"
        "        made.append(cls.__qualname__)\n"
        "    return process(cls, *args, **kwargs)\n"
        "dataclasses._process_class = recording\n"
        "from s3idx.cli import main\n"
        "try:\n"
        "    main({args!r})\n"
        "finally:\n"
        "    sys.stderr.write('MADE ' + ' '.join(sorted(made)) + '\\n')\n"
    )
    env = {**os.environ, "S3IDX_HOME": str(tmp_path / "home")}
    for name in ("S3IDX_STORE", "S3IDX_INDEX"):
        env.pop(name, None)

    def made(args: list[str]) -> list[str]:
        result = subprocess.run(
            [sys.executable, "-c", probe.format(args=args)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
        )
        report = [line for line in result.stderr.splitlines() if line.startswith("MADE")]
        assert len(report) == 1, result.stderr
        return report[0].split()[1:]

    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"fs_id": "a"}\n')
    assert "PutResult" in made(["put", "-q", str(docs)])  # the probe sees dataclasses
    assert made(["query", "{}", "--limit", "1"]) == ["Environment", "Settings", "Shard"]


def test_each_flag_help_names_the_environment_variable_the_readme_gives_it() -> None:
    """README's Configuration table pairs each setting's flag with its S3IDX_* variable; the
    flag's --help names the same variable, on every command that takes the flag."""
    table = README[README.index("| setting | flag | environment |") :]
    table = table[: table.index("\n\n")]
    checked = 0
    for row in table.splitlines()[2:]:
        _, flag_cell, env_cell = (cell.strip() for cell in row.strip("|").split("|")[:3])
        flag = re.match(r"`(--[\w-]+)`", flag_cell)
        if flag is None:
            continue
        for variable in re.findall(r"`(S3IDX_\w+)`", env_cell):
            for name, command in _commands().items():
                for param in command.params:
                    if flag.group(1) in getattr(param, "opts", ()):
                        text = " ".join((param.help or "").split())
                        assert variable in text, f"s3idx {name} {flag.group(1)}: no {variable}"
                        checked += 1
    assert checked > 20


def test_rebuild_index_restart_names_the_same_reasons_in_help_and_readme() -> None:
    """--restart's help and its README row list the same rebuilds a shard may not join (the
    reasons of ``index.base.join_refusal``)."""
    (param,) = [p for p in _commands()["rebuild-index"].params if p.name == "restart"]
    help_reasons = re.search(r"\(([^)]*)\)", getattr(param, "help", "") or "")
    row = re.search(r"^\| `--restart` \|[^(]*\(([^)]*)\)", README, flags=re.MULTILINE)
    assert help_reasons is not None and row is not None
    assert help_reasons.group(1) == row.group(1)
    assert "another key field" in row.group(1)
