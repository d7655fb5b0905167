"""config: one resolution, flags > environment > config file profile > defaults."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import orjson
import pytest

from s3idx.backends import parse_index_location, parse_store_location
from s3idx.config import SHOWN_OPTIONS, data_dir, redact, redact_location, resolve_settings
from s3idx.errors import ConfigError, ExitStatus, UsageError
from tests.helpers import Run

CONFIG = """
store = "/base/store"
workers = 4
fields = ["task_id"]

[profiles.prod]
store = "s3://prod-bucket/docs"
index = "mongodb://db.example/prod"
aws_profile = "prod"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


def test_defaults_live_in_the_data_directory() -> None:
    settings = resolve_settings({}, env={"S3IDX_HOME": "/data/s3idx"})
    assert settings.store == "/data/s3idx/store"
    assert settings.index == "/data/s3idx/index.sqlite3"
    assert settings.workers == 8
    assert settings.compress == "zlib"
    assert settings.key is None


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="XDG applies to Linux and BSD")
def test_xdg_data_home_is_honoured() -> None:
    assert data_dir({"XDG_DATA_HOME": "/x"}) == Path("/x/s3idx")


def test_file_top_level_then_profile(config_file: Path) -> None:
    base = resolve_settings({}, config_file=config_file, env={})
    assert (base.store, base.workers, base.fields) == ("/base/store", 4, ("task_id",))

    prod = resolve_settings({}, config_file=config_file, profile="prod", env={})
    assert prod.store == "s3://prod-bucket/docs"
    assert prod.index == "mongodb://db.example/prod"
    assert prod.aws_profile == "prod"
    assert prod.workers == 4


def test_environment_beats_file_and_flags_beat_environment(config_file: Path) -> None:
    env = {"S3IDX_STORE": "/env/store", "S3IDX_WORKERS": "16", "S3IDX_FIELDS": "a, b.c"}
    from_env = resolve_settings({}, config_file=config_file, env=env)
    assert (from_env.store, from_env.workers, from_env.fields) == ("/env/store", 16, ("a", "b.c"))

    flagged = resolve_settings(
        {"store": "/flag", "workers": None}, config_file=config_file, env=env
    )
    assert flagged.store == "/flag"
    assert flagged.workers == 16


def test_profile_from_environment(config_file: Path) -> None:
    settings = resolve_settings({}, config_file=config_file, env={"S3IDX_PROFILE": "prod"})
    assert settings.aws_profile == "prod"


def test_config_file_from_environment(config_file: Path) -> None:
    settings = resolve_settings({}, env={"S3IDX_CONFIG": str(config_file)})
    assert settings.store == "/base/store"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stroe = 1", "unknown setting 'stroe'; known: store, index"),
        ("workers = 'many'", "workers: expected a whole number, got 'many'"),
        ("fields = 'a'", "expected a list of strings"),
        ("[profiles]\nx = 1", "[profiles.x]: expected a table"),
        ("store = ", "not valid TOML"),
        ("compress = 'lz4'", "unknown compression 'lz4'; choose one of: zlib, none"),
    ],
)
def test_bad_config_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        resolve_settings({}, config_file=path, profile="x" if "profiles" in text else None, env={})
    assert message in str(excinfo.value)


def test_unknown_profile_lists_the_known_ones(config_file: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        resolve_settings({}, config_file=config_file, profile="dev", env={})
    assert str(excinfo.value) == f"no profile 'dev' in {config_file}; profiles: prod"


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_settings({}, config_file=tmp_path / "nope.toml", env={})


def test_missing_default_config_file_is_fine(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path), "S3IDX_HOME": str(tmp_path)}
    assert resolve_settings({}, env=env).store == str(tmp_path / "store")


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="S3IDX_WORKERS: expected a whole number"):
        resolve_settings({}, env={"S3IDX_WORKERS": "x"})


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("mongodb://bob:s3cret@h1:27017,h2/db", "mongodb://bob:***@h1:27017,h2/db"),
        ("mongodb+srv://bob:p@ss@cluster/db", "mongodb+srv://bob:***@cluster/db"),
        ("mongodb://h/db", "mongodb://h/db"),
        ("mongodb://bob:pa/ss@h/db", "mongodb://bob:***@h/db"),
        ("mongodb://bob:pa@s/s@h/db", "mongodb://bob:***@h/db"),
        (
            "failed at mongodb://a:b@h/x and mongodb://c:d@e",
            "failed at mongodb://a:***@h/x and mongodb://c:***@e",
        ),
    ],
)
def test_redact_hides_every_password(uri: str, shown: str) -> None:
    assert redact(uri) == shown


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        # however the scheme is mistyped, all between it and the last "@" after the user
        ("mongodb:/u:Qx7pZr9KvW2m@h:1/db", "mongodb:/u:***@h:1/db"),
        ("mongodb:u:Qx7pZr9KvW2m@h:1/db", "mongodb:u:***@h:1/db"),
        ("mongodb//u:Qx7pZr9KvW2m@h:1/db", "mongodb//u:***@h:1/db"),
        ("mongodb/u:pw@h:1/db", "mongodb/u:***@h:1/db"),
        ("MONGODB://u:pw@h/db", "MONGODB://u:***@h/db"),
        ("mongdb://u:pw@h/db", "mongdb://u:***@h/db"),
        ("sqlite:/u:pw@x", "sqlite:/u:***@x"),
        (" 'mongodb://u:pw@h/db'", " 'mongodb://u:***@h/db'"),
        ("u:pw@h/db", "u:***@h/db"),  # no scheme: "u" may be the user
        ("mongodb:pw@h/db", "mongodb:***@h/db"),
        ("mongodb://u:Ab3 Cd4 Ef5@h:1/db?w=1", "mongodb://u:***@h:1/db?w=1"),
        ("mongodb://u:p@s/s?x@h/db", "mongodb://u:***@h/db"),
        ("mongodb://u:p%40ss@h/db", "mongodb://u:***@h/db"),
        # a password also found elsewhere in the location is hidden there too, however short
        ("mongodb://u:Zq7W@h:1/Zq7Wdb?w=1", "mongodb://u:***@h:1/***db?w=1"),
        # a secret option's value runs to the next option, whatever it holds
        (
            "mongodb://h/db?w=1&authMechanismProperties=AWS_SESSION_TOKEN:Tok'en 1\"2;x=1",
            "mongodb://h/db?w=1&authMechanismProperties=***;x=***",  # x: no option s3idx shows
        ),
        (
            "mongodb://h/db?AUTHMECHANISMPROPERTIES=T:x&tlsCertificateKeyFilePassword = p w",
            "mongodb://h/db?AUTHMECHANISMPROPERTIES=***&tlsCertificateKeyFilePassword =***",
        ),
        # the user of MONGODB-AWS is an access key id
        (
            "mongodb://AKIAZQXW3EXAMPLE7KEY:s%2Fk@h/db?authMechanism=MONGODB-AWS",
            "mongodb://***:***@h/db?authMechanism=MONGODB-AWS",
        ),
        ("http:/minio:Ab3 Cd4@127.0.0.1:9000", "http:/minio:***@127.0.0.1:9000"),
        ("mongodb://h/db?authMechanismProperties=T0k@x", "mongodb://***"),
        # nothing secret: shown as given
        ("mongodb://bob@h:1,h2/db?authSource=admin", "mongodb://bob@h:1,h2/db?authSource=admin"),
        ("s3://bucket/docs", "s3://bucket/docs"),
        ("./data:2024", "./data:2024"),
        ("/home/me@corp/index.sqlite3", "/home/me@corp/index.sqlite3"),
    ],
)
def test_redact_location_decides_from_the_structure(location: str, shown: str) -> None:
    assert redact_location(location) == shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("index 'mongodb:/u:pw@h/db' failed", "index 'mongodb:/u:***@h/db' failed"),
        ("index 'mongodb//u:pw@h/db' failed", "index 'mongodb//u:***@h/db' failed"),
        ("?authMechanismProperties=T:a'b\"c&w=1", "?authMechanismProperties=***&w=1"),
    ],
)
def test_redact_finds_mistyped_uris_in_free_text(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_store_locations() -> None:
    s3 = parse_store_location("s3://bucket/a/b/")
    assert (s3.kind, s3.bucket, s3.prefix) == ("s3", "bucket", "a/b")
    assert parse_store_location("file:///tmp/x%20y").path == Path("/tmp/x y")
    assert parse_store_location("./rel").path == Path("rel")
    with pytest.raises(UsageError, match="unknown store scheme 'gs://'"):
        parse_store_location("gs://b")
    with pytest.raises(UsageError, match="names no bucket"):
        parse_store_location("s3://")


def test_index_locations() -> None:
    mongo = parse_index_location("mongodb://u:p@h:1/mydb?authSource=admin")
    assert (mongo.kind, mongo.database) == ("mongodb", "mydb")
    assert parse_index_location("sqlite:///tmp/i.db").path == Path("/tmp/i.db")
    assert parse_index_location("i.db").kind == "sqlite"
    with pytest.raises(UsageError) as excinfo:
        parse_index_location("mongodb://u:secret@h/")
    assert "secret" not in str(excinfo.value)
    assert "names no database" in str(excinfo.value)
    with pytest.raises(UsageError, match="three slashes"):
        parse_index_location("sqlite://relative.db")


def test_head_bound_work_has_its_own_default_and_workers_sets_both(config_file: Path) -> None:
    assert resolve_settings({}, env={}).head_workers == 64
    assert resolve_settings({"workers": 16}, env={}).head_workers == 16
    assert resolve_settings({}, env={"S3IDX_WORKERS": "12"}).head_workers == 12
    assert resolve_settings({}, env={"S3IDX_HEAD_WORKERS": "32"}).head_workers == 32
    assert resolve_settings({}, env={"S3IDX_HEAD_WORKERS": "32"}).workers == 8
    # The config file's workers (4) sets both; a flag's workers overrides the file's either.
    from_file = resolve_settings({}, config_file=config_file, env={})
    assert (from_file.workers, from_file.head_workers) == (4, 4)
    flag = resolve_settings(
        {"workers": 2}, config_file=config_file, env={"S3IDX_HEAD_WORKERS": "32"}
    )
    assert (flag.workers, flag.head_workers) == (2, 2)
    with pytest.raises(ConfigError, match=r"^S3IDX_HEAD_WORKERS: must be at least 1, got 0$"):
        resolve_settings({}, env={"S3IDX_HEAD_WORKERS": "0"})


# --- one type check per setting, from the file, the environment and flags --------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workers = 3.5", "workers: expected a whole number, got 3.5"),
        ("workers = 1e400", "workers: expected a whole number, got inf"),
        ("batch_size = 1e3", "batch_size: expected a whole number, got 1000.0"),
        ("workers = true", "workers: expected a whole number, got True"),
        ("timeout = 1" + "0" * 400, "timeout: expected a number of seconds, got 1000"),
        ("timeout = inf", "timeout: expected a positive number of seconds, got inf"),
        ("create_bucket = 1.0", "create_bucket: expected true or false, got 1.0"),
        ("region = 3", "region: expected a string, got 3"),
        ("workers = " + "9" * 5000, "not valid TOML: Exceeds the limit (4300 digits)"),
        ("x = " + "[" * 5000 + "]" * 5000, "not valid TOML: nested too deeply"),
    ],
)
def test_wrong_types_in_the_file_are_configuration_errors(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        resolve_settings({}, config_file=path, env={})
    assert message in str(excinfo.value)
    assert "sys.set_int_max_str_digits" not in str(excinfo.value)


@pytest.mark.parametrize(
    ("name", "file_value", "env_value", "flag_value"),
    [
        ("workers", "3.5", "3.5", 3.5),
        ("workers", "1e3", "1e3", 1e3),
        ("batch_size", "2.0", "2.0", 2.0),
        ("timeout", "'soon'", "soon", "soon"),
        ("create_bucket", "'maybe'", "maybe", "maybe"),
    ],
)
def test_a_value_is_refused_alike_from_file_environment_and_flag(
    tmp_path: Path, name: str, file_value: str, env_value: str, flag_value: object
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"{name} = {file_value}\n")
    with pytest.raises(ConfigError, match=f"{name}: expected"):
        resolve_settings({}, config_file=path, env={})
    with pytest.raises(ConfigError, match=f"S3IDX_{name.upper()}: expected"):
        resolve_settings({}, env={f"S3IDX_{name.upper()}": env_value})
    with pytest.raises(ConfigError, match=f"^{name}: expected"):
        resolve_settings({name: flag_value}, env={})


def test_whole_numbers_are_taken_from_each_layer(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("workers = 3\ntimeout = 2\n")
    settings = resolve_settings({}, config_file=path, env={})
    assert (settings.workers, settings.timeout) == (3, 2.0)
    assert resolve_settings({}, env={"S3IDX_WORKERS": "5"}).workers == 5
    assert resolve_settings({"workers": 7, "store": tmp_path}, env={}).store == str(tmp_path)


def test_a_config_file_that_is_not_utf8_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"workers = 2\n\xff\xfe garbage")
    with pytest.raises(ConfigError) as excinfo:
        resolve_settings({}, config_file=path, env={})
    assert str(excinfo.value) == (
        f"{path}: not UTF-8 text (byte 0xff on line 2)\n"
        "a config file is TOML, which is UTF-8: save it as UTF-8 text"
    )


def test_a_byte_order_mark_is_not_taken_for_a_statement(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xef\xbb\xbfworkers = 2\n")
    assert resolve_settings({}, config_file=path, env={}).workers == 2


@pytest.mark.parametrize("name", ["key", "collection", "region", "aws_profile", "endpoint_url"])
def test_text_that_is_not_utf8_is_refused_from_environment_and_flags(name: str) -> None:
    undecodable = b"a\xffb".decode("utf-8", "surrogateescape")  # as os.environ and argv hold it
    with pytest.raises(ConfigError, match=rf"^S3IDX_{name.upper()}: not valid UTF-8 text"):
        resolve_settings({}, env={f"S3IDX_{name.upper()}": undecodable})
    with pytest.raises(ConfigError, match=rf"^{name}: not valid UTF-8 text: 'a\\udcffb'"):
        resolve_settings({name: undecodable}, env={})
    with pytest.raises(ConfigError, match=r"^fields: not valid UTF-8 text"):
        resolve_settings({"fields": ("ok", undecodable)}, env={})


def test_a_local_path_may_hold_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = str(tmp_path) + "/" + b"st\xff".decode("utf-8", "surrogateescape")
    assert resolve_settings({"store": path}, env={}).store == path


def test_a_broken_default_config_file_is_exit_2_on_every_command(
    run: Run, isolated_env: Path
) -> None:
    path = isolated_env / "config" / "s3idx" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xfe garbage")
    result = run("info", "--json")
    assert result.exit_code == ExitStatus.USAGE
    assert orjson.loads(result.stdout)["error"] == f"{path}: not UTF-8 text (byte 0xff on line 1)"

    path.write_text("workers = 1e400\n")
    result = run("info")
    assert result.exit_code == ExitStatus.USAGE
    assert "workers: expected a whole number, got inf" in result.stderr


def test_a_key_flag_that_is_not_utf8_is_exit_2(run: Run, tmp_path: Path) -> None:
    key = b"id\xff".decode("utf-8", "surrogateescape")
    locations = ["--store", str(tmp_path / "s"), "--index", str(tmp_path / "i.db")]
    result = run("put", "--key", key, *locations, input=b'{"fs_id": "a"}\n')
    assert result.exit_code == ExitStatus.USAGE
    assert "key: not valid UTF-8 text: 'id\\udcff'" in result.stderr


@pytest.mark.parametrize("value", ["a,,b", ",", "a,", " ,a"])
def test_an_empty_field_in_s3idx_fields_is_refused_as_in_the_file_and_flags(
    run: Run, monkeypatch: pytest.MonkeyPatch, isolated_env: Path, value: str
) -> None:
    """`--field ''` and `fields = [""]` are refused; the same empty path between commas is no
    less a mistake (a field meant and lost), so it is refused too, before anything is written."""
    monkeypatch.setenv("S3IDX_FIELDS", value)

    result = run("put", input=b'{"fs_id": "a", "b": 1}\n')

    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        f"s3idx: error: S3IDX_FIELDS: empty field path in {value!r}\n"
        "  hint: give field paths separated by single commas, "
        "e.g. S3IDX_FIELDS=task_id,meta.owner\n"
    )
    assert not (isolated_env / "data").exists()
    monkeypatch.setenv("S3IDX_FIELDS", " a , b ")  # spaces around a path are still fine
    assert run("put", input=b'{"fs_id": "a", "b": 1}\n').exit_code == ExitStatus.OK
    assert '"b":1' in run("query", '{"b": 1}').stdout


def test_the_put_stale_bound_is_a_setting_that_takes_zero(tmp_path: Path) -> None:
    """``put_stale_seconds`` (after how long without a heartbeat sync and verify take a put
    for dead): 0 is a value here (every record at once), unlike the timeout's."""
    assert resolve_settings({}, env={}).put_stale_seconds == 600.0
    path = tmp_path / "c.toml"
    path.write_text("put_stale_seconds = 0\n")
    assert resolve_settings({}, config_file=path, env={}).put_stale_seconds == 0.0
    env = {"S3IDX_PUT_STALE_SECONDS": "90.5"}
    assert resolve_settings({}, config_file=path, env=env).put_stale_seconds == 90.5
    for bad, shown in (("-1", "'-1'"), ("inf", "'inf'"), ("soon", "'soon'"), ("nan", "'nan'")):
        with pytest.raises(ConfigError) as excinfo:
            resolve_settings({}, env={"S3IDX_PUT_STALE_SECONDS": bad})
        assert str(excinfo.value) == (
            f"S3IDX_PUT_STALE_SECONDS: expected a number of seconds, 0 or more, got {shown}"
        )
    path.write_text("put_stale_seconds = -0.5\n")
    with pytest.raises(ConfigError) as excinfo:
        resolve_settings({}, config_file=path, env={})
    assert str(excinfo.value) == (
        f"{path}: put_stale_seconds: expected a number of seconds, 0 or more, got -0.5"
    )


def test_every_uri_option_shown_unhidden_is_one_pymongo_knows() -> None:
    """The options whose values s3idx shows are MongoDB's own, none holding a secret."""
    from pymongo.common import VALIDATORS

    assert set(VALIDATORS) >= SHOWN_OPTIONS
    assert not {n for n in SHOWN_OPTIONS if re.search("pass|secret|token|propert", n)}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("index", "mongodb://127.0.0.1:1", "index 'mongodb://127.0.0.1:1' names no database"),
        ("store", "file://server/data", "store 'file://server/data' names a host"),
        ("endpoint_url", "ftp://x", "invalid S3 endpoint URL 'ftp://x'"),
        ("collection", "a$b", "invalid MongoDB collection name 'a$b': it contains '$'"),
    ],
)
@pytest.mark.parametrize("place", ["environment", "config file", "profile"])
def test_a_refused_location_names_where_it_was_given(
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
    message: str,
    place: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["info"]
    if name == "collection":  # a collection is a MongoDB index's
        args += ["--index", "mongodb://127.0.0.1:1/db?serverSelectionTimeoutMS=100"]
    if name == "endpoint_url":
        args += ["--store", "s3://bucket/docs"]
    config = tmp_path / "config.toml"
    if place == "environment":
        monkeypatch.setenv("S3IDX_" + name.upper(), value)
        source = "S3IDX_" + name.upper()
    elif place == "config file":
        config.write_text(f"{name} = {orjson.dumps(value).decode()}\n")
        source = f"{config}: {name}"
    else:
        config.write_text(f"[profiles.p]\n{name} = {orjson.dumps(value).decode()}\n")
        source = f"{config} [profiles.p]: {name}"
        args += ["--profile", "p"]
    if place != "environment":
        args += ["--config", str(config)]
    result = run(*args)
    assert result.exit_code == ExitStatus.USAGE, result.stdout + result.stderr
    assert result.stderr.startswith(f"s3idx: error: {source}: {message}"), result.stderr
    assert "config file" in result.stdout  # info still shows where things are
    query = run("query", "{}", *args[1:])
    assert query.exit_code == ExitStatus.USAGE
    assert query.stderr.startswith(f"s3idx: error: {source}: {message}"), query.stderr


def test_an_endpoint_url_in_the_environment_is_not_checked_for_a_local_store(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As before: a local store sends no request, so a global S3IDX_ENDPOINT_URL is unused."""
    monkeypatch.setenv("S3IDX_ENDPOINT_URL", "ftp://x")
    where = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "i.sqlite3")]
    put = run("put", *where, input=b'{"fs_id": "a"}\n')
    assert put.exit_code == 0, put.stderr
    assert run("query", "--count", *where).stdout == "1\n"


@pytest.mark.parametrize(
    "flag",
    [
        ["--endpoint-url", "http://127.0.0.1:9000"],
        ["--region", "eu-west-1"],
        ["--aws-profile", "minio"],
    ],
    ids=lambda flag: flag[0],
)
@pytest.mark.parametrize("store", ["flag", "default"])
def test_an_s3_flag_typed_with_a_local_store_is_refused(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str], store: str
) -> None:
    """An S3 setting typed on the command line with a local store is a forgotten s3://: the
    documents would go to the local directory without a word. Given in the environment or
    the config file, it is a default for S3 stores, unused by a local one (test above); and
    --transport and --create-bucket, how to reach a store, a script may pass whatever the
    store (tests/cli/test_combinations.py)."""
    monkeypatch.chdir(tmp_path)
    where = ["--index", str(tmp_path / "i.sqlite3")]
    local = tmp_path / "store"
    if store == "flag":
        where += ["--store", str(local)]
        came_from = "--store"
    else:
        monkeypatch.setenv("S3IDX_HOME", str(tmp_path / "home"))
        local = tmp_path / "home" / "store"
        came_from = "the default store"
    result = run("put", *where, *flag, input=b'{"fs_id": "a"}\n')
    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert result.stderr == (
        f"s3idx: error: {flag[0]} is for an S3 store, and the store is a local directory "
        f"({came_from}: {local})\n"
        f"  hint: give the S3 store with --store s3://BUCKET/PREFIX, or leave out {flag[0]}\n"
    )
    assert not local.exists() and not (tmp_path / "i.sqlite3").exists()


def test_a_library_caller_giving_an_s3_setting_with_a_local_store_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"^region is for an S3 store, and the store is a local"):
        resolve_settings({"store": str(tmp_path / "store"), "region": "eu-west-1"})
    settings = resolve_settings({"store": "s3://bucket/p", "region": "eu-west-1"})
    assert settings.region == "eu-west-1"
