"""Every integer option and setting is range-checked before use: out of range is exit 2 naming
it, never an overflow deep in a backend (``internal error: OverflowError``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3idx import open_engine
from s3idx.config import MAX_BATCH_SIZE, MAX_TIMEOUT, MAX_WORKERS
from s3idx.engine.core import Engine
from s3idx.errors import ConfigError, ExitStatus, UsageError
from s3idx.index.sqlite import SqliteIndex
from s3idx.limits import INT64_MAX
from s3idx.store.local import LocalStore
from tests.helpers import Run, jsonl

HUGE = "99999999999999999999"  # beyond 64 bits


@pytest.fixture
def loaded(run: Run) -> Run:
    documents = jsonl({"fs_id": "q1", "n": 1}, {"fs_id": "q2", "n": 2})
    result = run("put", "--field", "n", input=documents)
    assert result.exit_code == 0, result.stderr
    return run


@pytest.mark.parametrize(
    ("args", "option", "bound"),
    [
        (["query", "--limit", HUGE], "--limit", f"less than or equal to {INT64_MAX}"),
        (["query", "--skip", HUGE], "--skip", f"less than or equal to {INT64_MAX}"),
        (["query", "--full", "--limit", HUGE], "--limit", f"less than or equal to {INT64_MAX}"),
        (["query", "--count", "--skip", HUGE], "--skip", f"less than or equal to {INT64_MAX}"),
        (["query", "--workers", HUGE], "--workers", f"less than or equal to {MAX_WORKERS}"),
        (["get", "q1", "--workers", "1025"], "--workers", f"less than or equal to {MAX_WORKERS}"),
        (["sync", "--workers", HUGE], "--workers", f"less than or equal to {MAX_WORKERS}"),
        (["verify", "--workers", HUGE], "--workers", f"less than or equal to {MAX_WORKERS}"),
        (["reindex", "--workers", HUGE], "--workers", f"less than or equal to {MAX_WORKERS}"),
        (["rebuild-index", "--workers", HUGE], "--workers", f"less than or equal to {MAX_WORKERS}"),
        (["put", "--batch-size", HUGE], "--batch-size", f"less than or equal to {MAX_BATCH_SIZE}"),
        (["put", "--max-errors", HUGE], "--max-errors", f"less than or equal to {INT64_MAX}"),
        (["put", "--workers", HUGE], "--workers", f"less than or equal to {MAX_WORKERS}"),
    ],
)
def test_an_integer_option_beyond_its_range_is_a_usage_error_naming_it(
    loaded: Run, args: list[str], option: str, bound: str
) -> None:
    result = loaded(*args, input=jsonl({"fs_id": "q3"}))
    assert (result.exit_code, result.stdout) == (ExitStatus.USAGE, "")
    assert result.stderr.endswith(f"Error: Invalid value for '{option}': Input should be {bound}\n")


@pytest.mark.parametrize("args", [["--limit", str(INT64_MAX)], ["--skip", str(INT64_MAX)]])
def test_the_largest_limit_and_skip_are_answered(loaded: Run, args: list[str]) -> None:
    for extra in ([], ["--full"], ["--count"], ["--sort", "-n"]):
        result = loaded("query", *args, *extra)
        assert result.exit_code == 0, result.stderr
        skipped = args[0] == "--skip"
        if "--count" in extra:
            assert result.stdout == ("0\n" if skipped else "2\n")
        else:
            assert len(result.stdout.splitlines()) == (0 if skipped else 2)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "S3IDX_BATCH_SIZE",
            HUGE,
            f"S3IDX_BATCH_SIZE: must be at most {MAX_BATCH_SIZE}, got {HUGE}",
        ),
        ("S3IDX_BATCH_SIZE", "0", "S3IDX_BATCH_SIZE: must be at least 1, got 0"),
        ("S3IDX_WORKERS", HUGE, f"S3IDX_WORKERS: must be at most {MAX_WORKERS}, got {HUGE}"),
        (
            "S3IDX_TIMEOUT",
            "1e300",
            f"S3IDX_TIMEOUT: must be at most {MAX_TIMEOUT} seconds (a day), got 1e+300",
        ),
    ],
)
def test_an_integer_setting_beyond_its_range_is_a_usage_error(
    loaded: Run, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    result = loaded("put", input=jsonl({"fs_id": "q3"}))
    assert (result.exit_code, result.stdout) == (ExitStatus.USAGE, "")
    assert result.stderr == f"s3idx: error: {message}\n"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": 10**20}, f"batch_size: must be at most {MAX_BATCH_SIZE}, got {10**20}"),
        ({"workers": 0}, "workers: must be at least 1, got 0"),
        ({"workers": "eight"}, "workers: expected a whole number, got 'eight'"),
        ({"batch_size": 2.5}, "batch_size: expected a whole number, got 2.5"),
        ({"timeout": 0}, "timeout: expected a positive number of seconds, got 0"),
        ({"timeout": 1e300}, f"timeout: must be at most {MAX_TIMEOUT} seconds (a day), got 1e+300"),
    ],
)
def test_open_engine_refuses_settings_out_of_range(
    tmp_path: Path, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        open_engine(store=str(tmp_path / "s"), index=str(tmp_path / "i.sqlite3"), **settings)
    assert raised.value.message == message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": 0}, "workers must be from 1 to 1,024, got 0"),
        ({"head_workers": 10**20}, f"head_workers must be from 1 to 1,024, got {10**20}"),
        ({"batch_size": 0}, f"batch_size must be from 1 to {MAX_BATCH_SIZE:,}, got 0"),
        ({"batch_size": True}, "batch_size must be a whole number, got True"),
    ],
)
def test_engine_refuses_counts_out_of_range(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    index = SqliteIndex(tmp_path / "i.sqlite3")
    with pytest.raises(UsageError) as raised:
        Engine(LocalStore(tmp_path / "s"), index, **options)  # type: ignore[arg-type]
    index.close()
    assert raised.value.message == message


@pytest.mark.parametrize(
    ("max_errors", "message"),
    [
        (0, f"max_errors must be from 1 to {INT64_MAX:,}, got 0"),
        (2**64, f"max_errors must be from 1 to {INT64_MAX:,}, got {2**64}"),
    ],
)
def test_put_refuses_max_errors_out_of_range_before_anything_is_recorded(
    tmp_path: Path, max_errors: int, message: str
) -> None:
    with open_engine(store=str(tmp_path / "s"), index=str(tmp_path / "i.sqlite3")) as engine:
        with pytest.raises(UsageError) as raised:
            engine.put_documents([{"fs_id": "a"}], max_errors=max_errors)
        assert engine.index.settings() is None
    assert raised.value.message == message


@pytest.mark.parametrize("sample", [-0.1, 1.5, float("nan")])
def test_verify_refuses_a_sample_out_of_range(tmp_path: Path, sample: float) -> None:
    with open_engine(store=str(tmp_path / "s"), index=str(tmp_path / "i.sqlite3")) as engine:
        engine.put_documents([{"fs_id": "a"}])
        with pytest.raises(UsageError) as raised:
            engine.verify(sample=sample)
    assert raised.value.message == f"sample must be a fraction from 0 to 1, got {sample}"


# --- a value out of range or not among the choices names where it was given -------------------

OUT_OF_RANGE = {
    # setting: (value in TOML and the environment, message after "WHERE: ")
    "workers": ("0", "must be at least 1, got 0"),
    "head_workers": ("0", "must be at least 1, got 0"),
    "batch_size": ("0", "must be at least 1, got 0"),
    "compress": ("'lz4'", "unknown compression 'lz4'; choose one of: zlib, none, zstd"),
    "transport": ("'curl'", "unknown transport 'curl'; choose one of: boto3, obstore, http"),
    "timeout": ("1e300", f"must be at most {MAX_TIMEOUT} seconds (a day), got 1e+300"),
}


@pytest.mark.parametrize("where", ["top level", "profile", "environment"])
@pytest.mark.parametrize("setting", sorted(OUT_OF_RANGE))
def test_a_setting_out_of_range_names_where_it_was_given(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str, where: str
) -> None:
    value, message = OUT_OF_RANGE[setting]
    config = tmp_path / "config.toml"
    if where == "top level":
        config.write_text(f"{setting} = {value}\n[profiles.prod]\nkey = 'k'\n")
        source = f"{config}: {setting}"
    elif where == "profile":
        config.write_text(f"workers = 4\n[profiles.prod]\n{setting} = {value}\n")
        source = f"{config} [profiles.prod]: {setting}"
    else:
        config.write_text("[profiles.prod]\nkey = 'k'\n")
        monkeypatch.setenv(f"S3IDX_{setting.upper()}", value.strip("'"))
        source = f"S3IDX_{setting.upper()}"

    result = run("put", "--config", str(config), "--profile", "prod", input=jsonl({"k": "a"}))

    assert (result.exit_code, result.stdout) == (ExitStatus.USAGE, "")
    assert result.stderr == f"s3idx: error: {source}: {message}\n"


def test_head_workers_set_by_an_out_of_range_workers_names_the_workers_given(
    run: Run, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[profiles.prod]\nworkers = 5000\n")
    result = run("sync", "--config", str(config), "--profile", "prod")
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        f"s3idx: error: {config} [profiles.prod]: workers: must be at most 1024, got 5000\n"
    )


def test_a_flag_out_of_range_is_named_as_the_flag_from_python_too(tmp_path: Path) -> None:
    """A library caller's keyword is named as given; the CLI's flags are named as flags (Typer
    bounds them first, but the settings' own check names them alike)."""
    from s3idx.config import resolve_settings

    with pytest.raises(ConfigError) as raised:
        resolve_settings({"batch_size": 0}, env={}, flag_names={"batch_size": "--batch-size"})
    assert raised.value.message == "--batch-size: must be at least 1, got 0"
    with pytest.raises(ConfigError) as raised:
        resolve_settings({"compress": "gz"}, env={})
    assert (
        raised.value.message
        == "compress: unknown compression 'gz'; choose one of: zlib, none, zstd"
    )


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf"])
@pytest.mark.parametrize("command", [["put", "-q"], ["query", "--count"]])
def test_a_bad_progress_interval_is_refused_like_other_settings(
    loaded: Run, monkeypatch: pytest.MonkeyPatch, value: str, command: list[str]
) -> None:
    monkeypatch.setenv("S3IDX_PROGRESS_INTERVAL", value)
    result = loaded(*command, input=jsonl({"fs_id": "z"}))
    assert (result.exit_code, result.stdout) == (ExitStatus.USAGE, "")
    assert result.stderr == (
        "s3idx: error: S3IDX_PROGRESS_INTERVAL: expected a number of seconds, 0 or more, "
        f"got {value!r}\n"
    )
    monkeypatch.delenv("S3IDX_PROGRESS_INTERVAL")
    assert loaded("get", "z").exit_code == ExitStatus.NOT_FOUND  # nothing was stored
