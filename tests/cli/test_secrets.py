"""No credential, token or URI secret is ever printed, not even a piece of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from s3idx import config
from s3idx.config import SECRET_FRAGMENT
from tests.helpers import Run, jsonl, main_status, memory_environment, written

ACCESS_KEY_ID = "AKIAZQXW3EXAMPLE7KEY"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzqEXAMPLEKEY"
SESSION_TOKEN = (  # a JWT: dots split it into segments shorter than the old 40-character rule
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzM2lkeC10ZXN0IiwiaWF0IjoxfQ.c2lnbmF0dXJlLXNlZ21lbnQtMTIz"
)
MONGO_PASSWORD = "Pa55w0rd-VerySecret"
MONGO_AWS_TOKEN = "IQoJb3JpZ2luX2VjEMongoSessionToken"
CERT_PASSWORD = "CertKeyPassw0rdSecret"
SPACED_PASSWORD = "Ab3 Cd4 Ef5"  # pymongo takes spaces in a password unescaped
QUOTED_TOKENS = ["Tok'en12345678rest", 'Tok"en 1234 5678 rest']
HOST = "127.0.0.1:9/db?serverSelectionTimeoutMS=100"
MONGO_URIS = [
    f"mongodb://s3idx:{MONGO_PASSWORD}@{HOST}&tlsCertificateKeyFilePassword={CERT_PASSWORD}",
    f"mongodb://s3idx:{MONGO_PASSWORD}@{HOST}"
    f"&authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:{MONGO_AWS_TOKEN}",
    f"mongodb://s3idx:{MONGO_PASSWORD}@{HOST}&authMechanismProperties=AWS_SESSION_TOKEN:{MONGO_AWS_TOKEN}",
]
# The same secrets in every spelling a user could mistype: each is refused or fails somewhere,
# and no message, hint, info line or --json field may quote them.
MISTYPED_URIS = [
    f"mongodb:/s3idx:{MONGO_PASSWORD}@{HOST}",
    f"mongodb:s3idx:{MONGO_PASSWORD}@{HOST}",
    f"mongodb//s3idx:{MONGO_PASSWORD}@{HOST}",
    f"mongodb/s3idx:{MONGO_PASSWORD}@{HOST}",  # a relative SQLite path, as far as s3idx can tell
    f"mongodb+srv:/s3idx:{MONGO_PASSWORD}@h/db",
    f"MONGODB://s3idx:{MONGO_PASSWORD}@{HOST}",
    f"mongdb://s3idx:{MONGO_PASSWORD}@{HOST}",
    f"s3idx:{MONGO_PASSWORD}@{HOST}",
    f"sqlite:/s3idx:{MONGO_PASSWORD}@x",
    f"sqlite://s3idx:{MONGO_PASSWORD}@x",
    f" 'mongodb://s3idx:{MONGO_PASSWORD}@{HOST}'",
    f"mongodb://s3idx:{SPACED_PASSWORD}@{HOST}",
    f"mongodb:/s3idx:{SPACED_PASSWORD}@{HOST}",
    f"mongodb://s3idx:{MONGO_PASSWORD.replace('-', '%2D')}@{HOST}",
    *(f"mongodb://{HOST};authMechanismProperties=AWS_SESSION_TOKEN:{t}" for t in QUOTED_TOKENS),
    f"mongodb://{HOST}&AUTHMECHANISMPROPERTIES=AWS_SESSION_TOKEN:{MONGO_AWS_TOKEN}",
    f"mongodb://{HOST}&tlsCertificateKeyFilePassword = {CERT_PASSWORD}",
    f"mongodb://{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY.replace('/', '%2F')}@{HOST}"
    "&authMechanism=MONGODB-AWS",
]
MONGO_SECRETS = [
    MONGO_PASSWORD,
    MONGO_PASSWORD.replace("-", "%2D"),
    MONGO_AWS_TOKEN,
    CERT_PASSWORD,
    SPACED_PASSWORD,
    *QUOTED_TOKENS,
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    SECRET_ACCESS_KEY.replace("/", "%2F"),
]
STRAYS = ["", "\r", "\r\n", " "]  # as read from a CRLF file, or pasted with spaces

DOC = jsonl({"fs_id": "a", "v": 1})


def _assert_nothing_shown(output: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in output, f"{secret!r} is shown in:\n{output}"
        for start in range(len(secret) - SECRET_FRAGMENT + 1):
            piece = secret[start : start + SECRET_FRAGMENT]
            assert piece not in output, f"{piece!r} of a secret is shown in:\n{output}"


def _commands(store: list[str], index: list[str]) -> Iterator[tuple[list[str], bytes | None]]:
    for json in ([], ["--json"]):
        yield ["put", "--field", "v", *store, *index, *json], DOC
        yield ["get", "a", *store, *index], None
        yield ["query", "{}", "--full", *store, *index], None
        yield ["delete", "a", *store, *index, *json], None
        yield ["sync", *store, *index, *json], None
        yield ["sync", "--check", *store, *index, *json], None
        yield ["rebuild-index", *store, *index, *json], None
        yield ["info", *store, *index, *json], None


@pytest.mark.parametrize(
    ("transport", "stray"),
    [("boto3", stray) for stray in STRAYS] + [("obstore", ""), ("obstore", "\r")],
    ids=lambda value: repr(value) if value in STRAYS else value,
)
def test_aws_credentials_never_appear(
    run: Run,
    s3_endpoint: str,
    s3_bucket: str,
    moto_auth: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
    stray: str,
    transport: str,
) -> None:
    # moto checks them now: every request fails, and its answers name what it was sent.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID + stray)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY + stray)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN + stray)
    store = ["--store", f"s3://{s3_bucket}/docs", "--endpoint-url", s3_endpoint]
    store += ["--transport", transport]
    index = ["--index", f"{tmp_path}/index.sqlite3"]
    failures = 0
    for args, stdin in _commands(store, index):
        result = run(*args, input=stdin)
        failures += result.exit_code != 0
        _assert_nothing_shown(
            result.stdout + result.stderr, ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN
        )
        if "\r" in stray and result.exit_code != 0 and "put" in args:
            assert "contains a line break" in result.stderr, result.stderr
            assert "cannot reach S3" not in result.stderr
    assert failures >= 10  # the failing paths were taken


def _assert_no_mongo_secret_in_any_command(
    run: Run, fresh_process: Callable[[], None], store: list[str], index: list[str]
) -> None:
    """Every command, each as a new process, shows no piece of a secret, and at least ten of
    them fail (the failing paths were taken)."""
    failures = 0
    for args, stdin in _commands(store, index):
        fresh_process()
        result = run(*args, input=stdin)
        failures += result.exit_code != 0
        _assert_nothing_shown(result.stdout + result.stderr, *MONGO_SECRETS)
    assert failures >= 10


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Each run starts with no secret remembered, as a new s3idx process does: what an earlier
    run of the same test made known must not hide what this one shows."""

    def forget() -> None:
        monkeypatch.setattr(config, "_secret_fragments", set())
        monkeypatch.setattr(config, "_location_masks", {})

    return forget


@pytest.mark.parametrize("uri", MONGO_URIS + MISTYPED_URIS)
def test_mongodb_uri_secrets_never_appear(
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_process: Callable[[], None],
    uri: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # a location taken for a relative path is created here
    store = ["--store", f"{tmp_path}/store"]
    _assert_no_mongo_secret_in_any_command(run, fresh_process, store, ["--index", uri])


@pytest.mark.parametrize(
    "uri",
    [
        f"mongodb//s3idx:{MONGO_PASSWORD}@{HOST}",
        f"mongodb:s3idx:{SPACED_PASSWORD}@{HOST}",
        f"mongodb://{HOST};authMechanismProperties=AWS_SESSION_TOKEN:{QUOTED_TOKENS[1]}",
    ],
)
@pytest.mark.parametrize("given", ["environment", "config file"])
def test_mongodb_uri_secrets_from_the_environment_or_a_config_file_never_appear(
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_process: Callable[[], None],
    uri: str,
    given: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    if given == "environment":
        monkeypatch.setenv("S3IDX_INDEX", uri)
    else:
        config = tmp_path / "config.toml"
        config.write_text(f"index = {orjson.dumps(uri).decode()}\n")
        monkeypatch.setenv("S3IDX_CONFIG", str(config))
    store = ["--store", f"{tmp_path}/store"]
    _assert_no_mongo_secret_in_any_command(run, fresh_process, store, [])


@pytest.mark.parametrize(
    "store",
    [
        ["--store", f"s3://s3idx:{SPACED_PASSWORD}@bucket/docs"],
        ["--store", f"s3:/s3idx:{SPACED_PASSWORD}@bucket/docs"],
        ["--store", f"S3://s3idx:{MONGO_PASSWORD}@bucket/docs"],
        # Under a file, where no store can be made: every command fails.
        ["--store", f"file://s3idx:{SPACED_PASSWORD}@host{{tmp}}/a-file/docs"],
        [
            "--store",
            "s3://bucket/docs",
            "--endpoint-url",
            f"http://s3idx:{SPACED_PASSWORD}@127.0.0.1:9",
        ],
        [
            "--store",
            "s3://bucket/docs",
            "--endpoint-url",
            f"http:/s3idx:{SPACED_PASSWORD}@127.0.0.1:9",
        ],
    ],
    ids=["s3", "s3-one-slash", "S3", "file", "endpoint", "endpoint-one-slash"],
)
def test_store_and_endpoint_secrets_never_appear(
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_process: Callable[[], None],
    store: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    (tmp_path / "a-file").write_text("")
    store = [arg.replace("{tmp}", str(tmp_path)) for arg in store]
    index = ["--index", f"{tmp_path}/index.sqlite3"]
    _assert_no_mongo_secret_in_any_command(run, fresh_process, store, index)


def test_a_short_password_is_hidden_alike_in_every_place(run: Run, tmp_path: Path) -> None:
    # Shorter than the 8 characters hidden anywhere: hidden wherever the location is shown,
    # also where it is part of the database name, the same in the info line and the hint.
    uri = "mongodb://u:Zq7W@127.0.0.1:1/Zq7Wdb?serverSelectionTimeoutMS=100"
    shown = "mongodb://u:***@127.0.0.1:1/***db"

    text = run("info", "--store", str(tmp_path), "--index", uri)
    as_json = run("info", "--json", "--store", str(tmp_path), "--index", uri)

    assert "Zq7W" not in text.stdout + text.stderr + as_json.stdout + as_json.stderr
    assert f"index         {shown}?serverSelectionTimeoutMS=100\n" in text.stdout
    assert f"hint: while reading the settings of {shown} (collection s3idx);" in text.stderr
    assert orjson.loads(as_json.stdout)["index"] == f"{shown}?serverSelectionTimeoutMS=100"


# A password holding an unescaped '/', '?' or '#' ends the host part where a URI parser ends
# it: the rest of the password reads as the database, an option, a fragment or a port, and was
# quoted in messages (its short pieces escape the 8-character rule).
DELIMITED = [
    "mongodb://alice:hunter2/zQx9@127.0.0.1:1/db",
    "mongodb://alice:pa55/w?zQx9@127.0.0.1:1/db",
    "mongodb://alice:pa55?w=zQx9@127.0.0.1:1/db",
    "mongodb://alice:pa55#zQx9@127.0.0.1:1/db",
    "mongodb://alice:12345/zQx9@127.0.0.1:1/db",
    "mongodb+srv://alice:hunter2/zQx9@cluster.example/db",
]
ENDPOINTS = [
    "http://user:hunter2/zQx9@127.0.0.1:9",
    "http://user:hunter2?zQx9@127.0.0.1:9",
    "http://user:hunter2#zQx9@127.0.0.1:9",
    "http://user:12345/zQx9@127.0.0.1:9",
]


@pytest.mark.parametrize("uri", DELIMITED)
def test_a_password_with_an_unescaped_delimiter_is_refused_and_never_shown(
    run: Run, tmp_path: Path, uri: str
) -> None:
    where = ["--store", str(tmp_path / "store"), "--index", uri]
    for command in (["query", "{}"], ["info", "--json"], ["put", "--json"]):
        result = run(*command, *where, input=DOC)
        output = result.stdout + result.stderr
        assert result.exit_code == 2, (command, output)
        for piece in ("zQx9", "hunter2", "pa55", "12345"):
            assert piece not in output, (command, output)
        assert "percent-escape" in output, (command, output)
        assert "Traceback" not in output


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_endpoint_password_with_an_unescaped_delimiter_is_never_shown(
    run: Run, tmp_path: Path, endpoint: str
) -> None:
    where = ["--store", "s3://bucket/docs", "--endpoint-url", endpoint]
    where += ["--index", str(tmp_path / "i.sqlite3")]
    for command in (["get", "a"], ["info", "--json"], ["put", "--json"]):
        result = run(*command, *where, input=DOC)
        output = result.stdout + result.stderr
        assert result.exit_code == 2, (command, output)
        for piece in ("zQx9", "hunter2", "12345"):
            assert piece not in output, (command, output)
        assert "Traceback" not in output


@pytest.mark.parametrize(
    "option",
    [
        "tlsCertificateKeyFilePasword=KFPZQX",  # misspelled: an unknown option all the same
        "tlsCertificateKeyFilePassowrd=KFPZQX",
        "sslPEMKeyPassword=KFPZQX",
        "myApiKey=KFPZQX",
        "authSecrt=KFPZQX",
        "accessTokn=KFPZQX",
    ],
)
def test_a_misspelled_secret_option_is_never_shown(run: Run, tmp_path: Path, option: str) -> None:
    uri = f"mongodb://alice:pw@127.0.0.1:1/db?serverSelectionTimeoutMS=100&{option}"
    where = ["--store", str(tmp_path / "store"), "--index", uri]
    for command in (["info"], ["info", "--json"], ["query", "{}"]):
        result = run(*command, *where)
        assert result.exit_code != 0, (command, result.stdout)
        assert "KFPZQX" not in result.stdout + result.stderr, command


@pytest.mark.parametrize(
    "args",
    [
        ["info", "{uri}"],  # --index forgotten: a stray argument
        ["sync", "--json", "{uri}"],
        ["{uri}"],  # taken for a command
        ["put", "--json", "--compress", "{uri}"],
        ["put", "--transport", "{uri}"],
        ["query", "{{}}", "--limit", "{uri}"],
        ["put", "--transport", SECRET_ACCESS_KEY],  # a secret the environment holds
        ["get", "--workers", SESSION_TOKEN],
    ],
    ids=lambda args: " ".join(a[:20] for a in args),
)
@pytest.mark.parametrize("uri", MONGO_URIS[:1] + MISTYPED_URIS[:1])
def test_a_secret_in_a_command_line_parsing_refuses_is_never_shown(
    monkeypatch: pytest.MonkeyPatch, fresh_process: Callable[[], None], args: list[str], uri: str
) -> None:
    fresh_process()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    env = memory_environment()  # through cli.main, the entry point, as a user's shell runs it
    assert main_status(env, *(a.format(uri=uri) for a in args)) == 2
    shown = written(env.stdout) + written(env.stderr)
    assert "Error: " in shown  # the refusal is said
    _assert_nothing_shown(shown, *MONGO_SECRETS, SESSION_TOKEN)
