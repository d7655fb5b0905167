"""Location mistakes: a mistyped URL is refused with the right spelling, reading a store or an
index that does not exist is refused naming it, and ``put`` creates no unexpected directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from s3idx.errors import ExitStatus
from tests.helpers import Run, json_lines

DOC = b'{"fs_id": "a", "n": 1}\n'


@pytest.mark.parametrize(
    ("flag", "typed", "suggested"),
    [
        ("--store", "s3:/bucket/docs", "s3://bucket/docs"),
        ("--store", "s3:bucket", "s3://bucket"),
        ("--store", "S3://bucket/docs", "s3://bucket/docs"),
        ("--store", "s3//bucket/docs", "s3://bucket/docs"),
        ("--store", "file:/tmp/x", "file:///tmp/x"),
        ("--store", "FILE://localhost/tmp/x", "file:///tmp/x"),
        ("--index", "mongodb:/host/db", "mongodb://host/db"),
        ("--index", "mongodb+srv:host/db", "mongodb+srv://host/db"),
        ("--index", "mongdb://host/db", "mongodb://host/db"),
        ("--index", "sqlite:/tmp/i.db", "sqlite:///tmp/i.db"),
        ("--index", "file:///tmp/i.db", "sqlite:///tmp/i.db"),
    ],
)
def test_a_mistyped_url_is_refused_with_the_right_spelling(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str, typed: str, suggested: str
) -> None:
    monkeypatch.chdir(tmp_path)
    role = flag.lstrip("-")

    result = run("put", flag, typed, input=DOC)

    assert result.exit_code == ExitStatus.USAGE
    assert f"{role} {typed!r} is not a valid location; did you mean {suggested!r}?" in (
        result.stderr
    )
    assert list(tmp_path.iterdir()) == []  # no directory named after the typo


@pytest.mark.parametrize(
    ("flag", "typed", "message"),
    [
        ("--store", "gs://bucket", "unknown store scheme 'gs://' in 'gs://bucket'"),
        ("--store", "data:2024", "unknown store scheme 'data:' in 'data:2024'"),
        ("--index", "redis://host/0", "unknown index scheme 'redis://' in 'redis://host/0'"),
        ("--store", "mongodb://host/db", "store 'mongodb://host/db' is an index location"),
        ("--index", "s3://bucket/docs", "index 's3://bucket/docs' is a store location"),
    ],
)
def test_an_unknown_or_misplaced_scheme_is_refused(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str, typed: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("query", flag, typed)
    assert result.exit_code == ExitStatus.USAGE
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "typed",
    [
        "file://tmp/x",  # the first directory read as a host: was the directory /x
        "file://otherhost/tmp/x",
        "file://user@host/tmp/x",
        "file://host:22/tmp/x",
    ],
)
def test_a_file_url_naming_a_host_is_refused(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, typed: str
) -> None:
    monkeypatch.chdir(tmp_path)

    result = run("put", "--store", typed, input=DOC)

    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert result.stderr == (
        f"s3idx: error: store {typed!r} names a host; a file URL names a directory on this "
        "machine: file:///PATH, with three slashes\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("typed", ["file://", "file://localhost"])
def test_a_file_url_without_a_directory_is_refused(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, typed: str
) -> None:
    """It would have been the current directory."""
    monkeypatch.chdir(tmp_path)

    result = run("put", "--store", typed, input=DOC)

    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert f"store {typed!r} names no directory; expected file:///PATH" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_file_url_on_localhost_is_the_local_path(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run("put", "--store", f"file://localhost{tmp_path}/s", input=DOC)

    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "s" / "s3idx-store.json").is_file()


def test_an_http_store_points_at_endpoint_url(run: Run) -> None:
    result = run("get", "a", "--store", "http://localhost:9000/bucket")
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        "s3idx: error: unknown store scheme 'http://' in 'http://localhost:9000/bucket'; use a "
        "directory or s3://BUCKET/PREFIX or file:///PATH\n"
        "  hint: for MinIO or another S3 service: --store s3://BUCKET/PREFIX --endpoint-url URL\n"
    )


def test_a_password_in_a_mistyped_uri_is_not_printed(run: Run) -> None:
    result = run("query", "--index", "mongodb:/ann:s3cret@host/db")
    assert result.exit_code == ExitStatus.USAGE
    assert "s3cret" not in result.stderr
    assert "did you mean 'mongodb://ann:***@host/db'?" in result.stderr


@pytest.mark.parametrize(
    ("flag", "given", "shown"),
    [
        ("--store", " s3://bucket/docs", "s3://bucket/docs"),
        ("--store", "s3://bucket/docs\r", "s3://bucket/docs"),
        ("--store", "\tstore", "store"),
        ("--index", " mongodb://ann:s3cret@host/db", "mongodb://ann:***@host/db"),
        ("--index", "mongodb://ann:s3cret@host/db\r\n", "mongodb://ann:***@host/db"),
        ("--index", "index.sqlite3 ", "index.sqlite3"),
    ],
)
@pytest.mark.parametrize("command", [["put"], ["get", "a"], ["query", "{}"], ["sync"], ["info"]])
def test_a_location_pasted_with_a_blank_at_either_end_is_refused(
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: str,
    given: str,
    shown: str,
    command: list[str],
) -> None:
    """' s3://b/p' would otherwise be a relative directory (put creates one when its parent
    exists), and ' mongodb://…' an index file: refused, password hidden, nothing created."""
    monkeypatch.chdir(tmp_path)  # where a relative location would be created
    result = run(*command, flag, given, input=b'{"fs_id": "a"}\n')
    assert result.exit_code == ExitStatus.USAGE, result.output
    role = flag.removeprefix("--")
    masked = given.replace("s3cret", "***").replace("\r", "\\r").replace("\n", "\\n")
    masked = masked.replace("\t", "\\t")
    assert (
        f"s3idx: error: {role} '{masked}' begins or ends with a blank (a space, tab or line "
        f"end)\n  hint: give it without: '{shown}'\n"
    ) in result.stderr
    assert "s3cret" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_user_and_password_in_an_s3_store_is_refused_without_them(run: Run) -> None:
    result = run("get", "a", "--store", "s3://minio:Ab3 Cd4@bucket/docs")
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        "s3idx: error: store 's3://minio:***@bucket/docs' names a user or password, which S3 "
        "does not take in a location; expected s3://BUCKET[/PREFIX]\n"
        "  hint: S3 credentials come from the environment (AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY) or an AWS profile (--aws-profile)\n"
    )


@pytest.mark.parametrize(
    "bucket", ["bad name", "bad%20name", "a*b", "café", "b" * 256, "a?b", "arn:nope"]
)
@pytest.mark.parametrize("command", [["get", "a"], ["put"], ["query", "--full"], ["sync"]])
def test_a_bucket_name_no_s3_request_can_carry_is_a_usage_error(
    run: Run, tmp_path: Path, bucket: str, command: list[str]
) -> None:
    """Refused before any request (README: an invalid bucket name exits 2), not exit 1 with
    botocore's parameter validation text, and before put records anything in the index."""
    index = tmp_path / "index.db"

    result = run(*command, "--store", f"s3://{bucket}/docs", "--index", str(index), input=DOC)

    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert result.stderr == (
        f"s3idx: error: store 's3://{bucket}/docs': {bucket!r} is not a bucket name; S3 bucket "
        "names hold only letters, digits, '.', '-' and '_', at most 255 of them\n"
        "  hint: bucket names are 3-63 characters: lowercase letters, digits, dots and hyphens\n"
    )
    assert not index.exists()


@pytest.mark.parametrize(
    "bucket",
    [
        "my-bucket",
        "Legacy_Bucket",
        "a.b-c",
        "x" * 63,
        "arn:aws:s3:us-west-2:123456789012:accesspoint:my-ap",
    ],
)
def test_bucket_names_some_s3_services_take_are_not_refused(bucket: str) -> None:
    from s3idx.backends import parse_store_location

    assert parse_store_location(f"s3://{bucket}/docs").bucket == bucket


# Every command that takes a store: a prefix no S3 request can use is refused by each, before any.
STORE_COMMANDS = [
    ["put"],
    ["get", "a"],
    ["query"],
    ["query", "--full"],
    ["delete", "a"],
    ["sync"],
    ["sync", "--check"],
    ["verify"],
    ["reindex"],
    ["rebuild-index"],
    ["info"],
]
PREFIX_HINT = (
    "  hint: a prefix begins every key, so it follows the rule for keys: no empty, '.' or '..' "
    "segment (S3 keys are not paths, and S3 clients do not agree on such keys), no control "
    "character, and no '.s3idx' segment (s3idx's own objects); one '/' at its end is fine, "
    "as in s3://BUCKET/docs/\n"
)
EMPTY = "an empty segment (a leading, trailing or double '/')"


@pytest.mark.parametrize(
    ("location", "prefix", "problem"),
    [
        ("s3://dots/x/..", "x/..", "a '..' segment"),
        ("s3://dots/..", "..", "a '..' segment"),
        ("s3://dots/../x/", "../x/", "a '..' segment"),
        ("s3://pfx/./a", "./a", "a '.' segment"),
        ("s3://pfx/a/./b", "a/./b", "a '.' segment"),
        ("s3://pfx/a//b", "a//b", EMPTY),
        ("s3://pfx//a", "/a", EMPTY),
        ("s3://pfx//", "/", EMPTY),
        ("s3://pfx/a//", "a//", EMPTY),
    ],
)
@pytest.mark.parametrize("command", STORE_COMMANDS, ids=" ".join)
def test_a_store_prefix_with_an_empty_dot_or_dot_dot_segment_is_refused(
    run: Run, tmp_path: Path, command: list[str], location: str, prefix: str, problem: str
) -> None:
    """boto3 would store under such a prefix and obstore then fail to read it (exit 1): keys
    with these segments are refused, and so is a prefix, by every command before any request."""
    index = tmp_path / "index.db"

    result = run(*command, "--store", location, "--index", str(index), input=DOC)

    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert result.stderr == (
        f"s3idx: error: store {location!r}: its prefix {prefix!r} has {problem}\n{PREFIX_HINT}"
    )
    assert not index.exists()


@pytest.mark.parametrize(
    ("location", "prefix", "outer"),
    [
        ("s3://b/.s3idx/manifests", ".s3idx/manifests", "s3://b"),
        ("s3://b/.s3idx", ".s3idx", "s3://b"),
        ("s3://b/.s3idx/", ".s3idx/", "s3://b"),
        ("s3://b/docs/.s3idx/x", "docs/.s3idx/x", "s3://b/docs"),
    ],
)
@pytest.mark.parametrize("command", STORE_COMMANDS, ids=" ".join)
def test_a_store_prefix_inside_another_stores_manifests_is_refused(
    run: Run, tmp_path: Path, command: list[str], location: str, prefix: str, outer: str
) -> None:
    """A store under .s3idx/ of another would have its documents taken for that store's
    manifests, and deleted by its sync."""
    index = tmp_path / "index.db"

    result = run(*command, "--store", location, "--index", str(index), input=DOC)

    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert result.stderr == (
        f"s3idx: error: store {location!r}: its prefix {prefix!r} has a '.s3idx' segment: "
        f"the store {outer} keeps its own objects (manifests) there, and its sync would delete "
        f"this store's\n{PREFIX_HINT}"
    )
    assert not index.exists()


@pytest.mark.parametrize(
    ("location", "prefix", "problem"),
    [
        ("s3://b/a\nb", "a\nb", "contains a control character (U+000A)"),
        ("s3://b/a\x7fb", "a\x7fb", "contains a control character (U+007F)"),
        ("s3://b/a\udcffb", "a\udcffb", "contains a lone surrogate (not valid UTF-8)"),
        (
            "s3://b/" + "p" * 1023,
            "p" * 1023,
            "is 1023 bytes (UTF-8): with the '/' after it, no key fits in S3's 1024",
        ),
    ],
    ids=["newline", "delete", "surrogate", "too-long"],
)
def test_a_store_prefix_no_key_can_follow_is_refused(
    location: str, prefix: str, problem: str
) -> None:
    from s3idx.backends import parse_store_location
    from s3idx.errors import UsageError

    with pytest.raises(UsageError) as excinfo:
        parse_store_location(location)
    assert excinfo.value.message == f"store {location!r}: its prefix {prefix!r} {problem}"


@pytest.mark.parametrize(
    ("location", "prefix"),
    [
        ("s3://b", ""),
        ("s3://b/", ""),
        ("s3://b/docs", "docs"),
        ("s3://b/docs/", "docs"),
        ("s3://b/a/b.c/..d/.e/", "a/b.c/..d/.e"),
        ("s3://b/a/.s3idxx/s3idx", "a/.s3idxx/s3idx"),
        ("s3://b/" + "p" * 1022, "p" * 1022),
    ],
)
def test_store_prefixes_every_client_reads_alike_are_taken(location: str, prefix: str) -> None:
    from s3idx.backends import parse_store_location

    assert parse_store_location(location).prefix == prefix


def test_the_python_api_refuses_such_a_prefix_too(tmp_path: Path) -> None:
    from s3idx import open_engine
    from s3idx.errors import UsageError
    from s3idx.store.s3 import S3Store

    with pytest.raises(UsageError, match=r"^store 's3://dots/x/\.\.': its prefix 'x/\.\.' has"):
        open_engine(store="s3://dots/x/..", index=str(tmp_path / "index.db"))
    with pytest.raises(UsageError, match=r"^store 's3://b/\.s3idx/m': its prefix '\.s3idx/m' has"):
        S3Store("b", ".s3idx/m")
    with pytest.raises(UsageError, match=r"^store 's3://b/a//b': its prefix 'a//b' has an empty"):
        S3Store("b", "a//b")
    assert S3Store("b", "a/b/").prefix == "a/b"
    assert not (tmp_path / "index.db").exists()


def test_a_suggestion_shows_no_more_than_the_location_as_typed(run: Run) -> None:
    # "pw" is no user here: the suggested spelling must not show it as one.
    result = run("query", "--index", "mongodb:pw@host/db")
    assert result.exit_code == ExitStatus.USAGE
    assert "pw" not in result.stderr
    assert "did you mean 'mongodb://***@host/db'?" in result.stderr


def test_a_local_path_with_a_colon_can_be_written_with_dot_slash(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("put", "--store", "./data:2024", input=DOC)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "data:2024" / "s3idx-store.json").is_file()


@pytest.fixture
def stored(run: Run, tmp_path: Path) -> tuple[Path, Path]:
    store, index = tmp_path / "store", tmp_path / "index.db"
    put = run("put", "--store", str(store), "--index", str(index), "--field", "n", input=DOC)
    assert put.exit_code == 0, put.stderr
    return store, index


READERS = {
    "query": ["query", '{"n": 1}'],
    "query --count": ["query", "--count"],
    "query --full": ["query", "--full"],
    "get": ["get", "a"],
    "delete": ["delete", "a"],
    "delete --filter": ["delete", "--filter", '{"n": 1}'],
    "sync": ["sync"],
    "sync --check": ["sync", "--check"],
    "verify": ["verify"],
}
USES_STORE = {"query --full", "get", "delete", "delete --filter", "sync", "sync --check", "verify"}
# sync fills a new index, as rebuild-index does: only its store must exist. sync --check and
# verify change nothing, so a new index there is a mistyped one, not every object drifted.
USES_INDEX = set(READERS) - {"get", "sync"}


@pytest.mark.parametrize("command", sorted(USES_INDEX))
def test_reading_a_mistyped_index_is_refused_naming_it(
    run: Run, stored: tuple[Path, Path], command: str
) -> None:
    store, index = stored
    typo = index.with_name("indx.db")

    result = run(*READERS[command], "--store", str(store), "--index", str(typo))

    assert result.exit_code == ExitStatus.NOT_FOUND
    assert f"s3idx: error: no s3idx index at {typo} (nothing was ever put there)" in result.stderr
    assert not typo.exists()
    assert run("get", "a", "--store", str(store)).exit_code == 0  # nothing was deleted


@pytest.mark.parametrize("command", ["sync --check", "verify", "query"])
def test_a_mistyped_mongodb_collection_is_refused_not_drift(
    run: Run, tmp_path: Path, mongomock_server: Any, command: str
) -> None:
    store, index = str(tmp_path / "store"), "mongodb://localhost/db"
    put = run("put", "--store", store, "--index", index, "--field", "n", input=DOC)
    assert put.exit_code == 0, put.stderr

    result = run(*READERS[command], "--store", store, "--index", index, "--collection", "s3ixd")

    assert result.exit_code == ExitStatus.NOT_FOUND, result.stdout
    assert "s3idx: error: no s3idx index at mongodb://localhost/db" in result.stderr
    assert "(nothing was ever put there)" in result.stderr
    assert result.stdout == ""  # no drift line: the objects did not drift, the name is wrong
    assert "s3ixd" not in mongomock_server["db"].list_collection_names()


@pytest.mark.parametrize("command", sorted(USES_STORE | {"rebuild-index"}))
def test_reading_a_mistyped_store_is_refused_naming_it(
    run: Run, stored: tuple[Path, Path], command: str
) -> None:
    store, index = stored
    typo = store.with_name("stor")
    args = READERS.get(command, [command])

    result = run(*args, "--store", str(typo), "--index", str(index))

    assert result.exit_code == ExitStatus.NOT_FOUND
    expected = f"s3idx: error: no s3idx store at {typo} (the directory does not exist)"
    assert expected in result.stderr
    assert not typo.exists()
    assert run("query", "--count", "--store", str(store), "--index", str(index)).stdout == "1\n"


@pytest.mark.parametrize("under", [False, True], ids=["the file", "under the file"])
@pytest.mark.parametrize(
    "command",
    [["put"], ["info"], ["verify"], ["rebuild-index"], ["reindex"]]
    + [READERS[c] for c in sorted(USES_STORE)],
)
def test_a_store_that_is_a_file_is_a_usage_error_naming_it(
    run: Run, stored: tuple[Path, Path], command: list[str], under: bool
) -> None:
    """A file given as --store (the input file, by a slip) is a mistake to correct, exit 2, as
    a directory given as --index is: not a store that cannot be used (exit 5, ENOTDIR's text)."""
    kept, index = stored
    data = index.with_name("docs.jsonl")
    data.write_bytes(DOC)
    store = data / "store" if under else data

    result = run(*command, "--store", str(store), "--index", str(index), input=DOC)

    assert result.exit_code == ExitStatus.USAGE, result.stderr
    where = f"lies under {data}, a file" if under else "is a file"
    assert (
        f"s3idx: error: store {store} {where}, not a directory\n"
        "  hint: a local store is a directory: give a new or empty one, or an s3idx store\n"
    ) in result.stderr
    assert data.read_bytes() == DOC
    assert run("query", "--count", "--store", str(kept), "--index", str(index)).stdout == "1\n"


@pytest.mark.parametrize("command", [["sync"], ["sync", "--rewrite"]])
def test_sync_into_an_index_it_cannot_create_fails_before_reading_the_store(
    run: Run, stored: tuple[Path, Path], command: list[str]
) -> None:
    """A mistyped --index fails at once, not after listing and HEADing the whole store (hours
    on a large bucket) and writing manifests of what it read."""
    store, _ = stored
    manifests = sorted((store / "objects").rglob("*"))
    typo = store.parent / "typo" / "index.db"

    result = run(*command, "--json", "--store", str(store), "--index", str(typo))

    assert result.exit_code == ExitStatus.NOT_FOUND
    assert f"the directory {typo.parent} of index {typo} does not exist" in result.stderr
    assert orjson.loads(result.stdout).get("listed", 0) == 0
    assert sorted((store / "objects").rglob("*")) == manifests
    assert not typo.parent.exists()


def test_a_directory_that_is_not_a_store_is_named(run: Run, stored: tuple[Path, Path]) -> None:
    store, index = stored
    result = run("get", "a", "--store", str(store.parent), "--index", str(index))
    assert result.exit_code == ExitStatus.NOT_FOUND
    assert f"no s3idx store at {store.parent} (the directory has no s3idx-store.json)" in (
        result.stderr
    )


@pytest.mark.parametrize("given", [DOC, b""], ids=["a document", "nothing to store"])
def test_put_does_not_create_missing_parent_directories(
    run: Run, tmp_path: Path, given: bytes
) -> None:
    for flag, name in (("--store", "store"), ("--index", "index.db")):
        target = tmp_path / "typo" / "deep" / name
        result = run("put", flag, str(target), input=given)
        assert result.exit_code == ExitStatus.NOT_FOUND
        assert f"the directory {target.parent} of {flag[2:]} {target} does not exist" in (
            result.stderr
        )
        assert not (tmp_path / "typo").exists()


def test_put_creates_the_store_directory_and_the_index_file(run: Run, tmp_path: Path) -> None:
    store, index = tmp_path / "new-store", tmp_path / "new.db"
    assert run("put", "--store", str(store), "--index", str(index), input=DOC).exit_code == 0
    assert (store / "s3idx-store.json").is_file() and index.is_file()


@pytest.mark.parametrize(
    "given", [b"", b"not json\n", b'{"n": 1}\n'], ids=["empty", "invalid", "no key"]
)
@pytest.mark.parametrize("processes", ["1", "2"])
def test_put_creates_the_store_even_when_it_stores_nothing(
    run: Run, tmp_path: Path, given: bytes, processes: str
) -> None:
    """An empty export, or one whose every line is rejected, still leaves a store: the
    commands run after it (a cron job's sync --check, verify, info) find what put made."""
    where = ["--store", str(tmp_path / "store"), "--index", str(tmp_path / "index.db")]

    result = run("put", "--processes", processes, *where, input=given)

    assert result.exit_code == (ExitStatus.OK if not given else ExitStatus.PARTIAL)
    assert (tmp_path / "store" / "s3idx-store.json").is_file()
    for command in ("sync", "verify", "info"):
        after = run(command, *where)
        assert after.exit_code == ExitStatus.OK, (command, after.stderr)


def test_put_refuses_a_directory_that_is_not_a_store_even_with_nothing_to_store(
    run: Run, tmp_path: Path
) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")

    result = run("put", "--store", str(tmp_path / "notes"), input=b"")

    assert result.exit_code == ExitStatus.USAGE
    assert f"{tmp_path / 'notes'} is not empty and is not an s3idx store" in result.stderr


def test_put_dry_run_creates_no_store(run: Run, tmp_path: Path) -> None:
    store = tmp_path / "store"
    for given in (b"", DOC):
        result = run("put", "--dry-run", "--store", str(store), input=given)
        assert result.exit_code == ExitStatus.OK
        assert not store.exists()


def test_the_defaults_work_on_a_fresh_machine(run: Run, isolated_env: Path) -> None:
    assert not (isolated_env / "data").exists()
    assert run("put", "--field", "n", input=DOC).exit_code == 0
    assert [e["fs_id"] for e in json_lines(run("query", '{"n": 1}').stdout)] == ["a"]


def test_info_prints_the_locations_and_names_what_is_missing(run: Run, tmp_path: Path) -> None:
    store, index = tmp_path / "store", tmp_path / "index.db"

    result = run("info", "--json", "--store", str(store), "--index", str(index))

    assert result.exit_code == ExitStatus.NOT_FOUND
    data = orjson.loads(result.stdout)
    assert (data["store"], data["index"]) == (str(store), str(index))
    assert "entries" not in data
    assert (data["store_status"], data["index_status"]) == ("does not exist", "does not exist")
    assert data["problems"] == [
        f"no s3idx store at {store} (the directory does not exist)",
        f"no s3idx index at {index} (nothing was ever put there)",
    ]


@pytest.mark.parametrize("command", ["sync", "rebuild-index"])
def test_an_empty_store_over_a_full_index_is_a_usage_error(
    run: Run, stored: tuple[Path, Path], tmp_path: Path, command: str
) -> None:
    store, index = stored
    if command == "sync":  # the index's own store, emptied behind its back
        (store / "objects" / "a~").unlink()
        empty = store
    else:  # another store: rebuild-index may re-point an index, but not to nothing
        empty, scratch = tmp_path / "empty-store", tmp_path / "scratch.db"
        assert run("put", "--store", str(empty), "--index", str(scratch), input=DOC).exit_code == 0
        assert run("delete", "a", "--store", str(empty), "--index", str(scratch)).exit_code == 0

    result = run(command, "--store", str(empty), "--index", str(index))

    assert result.exit_code == ExitStatus.USAGE
    assert f"the store {empty} " in result.stderr and "refusing to " in result.stderr
    assert run("query", "--count", "--store", str(store), "--index", str(index)).stdout == "1\n"
