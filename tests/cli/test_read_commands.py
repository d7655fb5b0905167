"""``get``, ``query``, ``delete`` and ``info`` through the CLI."""

from __future__ import annotations

import io
import shlex
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from s3idx.errors import STDIN_CLOSED, STDIN_CLOSED_HINT, ExitStatus
from tests.helpers import (
    Run,
    json_lines,
    jsonl,
    memory_environment,
    subprocess_env,
    written,
)

DOCS = [
    {"fs_id": "a", "task_id": "mp-1", "n": 3, "tags": ["x", "y"], "body": "A"},
    {"fs_id": "b", "task_id": "mp-2", "n": 1, "tags": ["y"], "body": "B"},
    {"fs_id": "c", "task_id": "mp-3", "n": 2, "tags": [], "body": "C"},
]


@pytest.fixture
def loaded(run: Run) -> Run:
    fields = ["--field", "task_id", "--field", "n", "--field", "tags"]
    result = run("put", *fields, input=jsonl(*DOCS))
    assert result.exit_code == 0, result.stderr
    return run


def test_get_prints_documents_in_the_order_asked(loaded: Run) -> None:
    result = loaded("get", "c", "a")
    assert result.exit_code == 0
    assert json_lines(result.stdout) == [DOCS[2], DOCS[0]]


def test_get_missing_key_reports_and_exits_not_found(loaded: Run) -> None:
    result = loaded("get", "a", "zzz", "b")
    assert result.exit_code == ExitStatus.NOT_FOUND
    assert json_lines(result.stdout) == [DOCS[0], DOCS[1]]
    assert result.stderr == "s3idx: not found: zzz\n"


def test_get_to_an_output_file(loaded: Run, tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    result = loaded("get", "b", "--output", str(target))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert json_lines(target.read_text()) == [DOCS[1]]


def test_get_that_finds_nothing_leaves_an_existing_output_file_as_it_was(
    loaded: Run, tmp_path: Path
) -> None:
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"yesterday's documents\n")
    result = loaded("get", "zzz", "yyy", "--output", str(target))
    assert result.exit_code == ExitStatus.NOT_FOUND
    assert target.read_bytes() == b"yesterday's documents\n"
    absent = tmp_path / "new.jsonl"
    assert loaded("get", "zzz", "-o", str(absent)).exit_code == ExitStatus.NOT_FOUND
    assert not absent.exists()  # nothing to write: no empty file either


def test_get_replaces_an_output_file_once_it_has_a_document(loaded: Run, tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"a much longer line than the one document will be, left over\n" * 9)
    result = loaded("get", "zzz", "c", "-o", str(target))
    assert result.exit_code == ExitStatus.NOT_FOUND
    assert json_lines(target.read_text()) == [DOCS[2]]


def test_query_filters_with_mongo_semantics(loaded: Run) -> None:
    def keys(*args: str) -> list[str]:
        result = loaded("query", *args)
        assert result.exit_code == 0, result.stderr
        return [e["fs_id"] for e in json_lines(result.stdout)]

    assert keys('{"tags": "y"}', "--sort", "fs_id") == ["a", "b"]
    assert keys('{"n": {"$gte": 2}}', "--sort", "-n") == ["a", "c"]
    assert keys('{"$or": [{"task_id": "mp-2"}, {"tags": {"$size": 0}}]}', "--sort", "n") == [
        "b",
        "c",
    ]
    assert keys("--sort", "n", "--skip", "1", "--limit", "1") == ["c"]


def test_query_fields_projects_and_keeps_the_key(loaded: Run) -> None:
    result = loaded("query", '{"fs_id": "a"}', "--fields", "n")
    assert json_lines(result.stdout) == [{"fs_id": "a", "n": 3}]


def test_query_count(loaded: Run) -> None:
    assert loaded("query", '{"n": {"$lt": 3}}', "--count").stdout == "2\n"
    assert loaded("query", "--count", "--limit", "1").stdout == "1\n"


@pytest.mark.parametrize("option", [("--sort", "nope"), ("--fields", "n,nope")])
def test_query_count_refuses_sort_and_fields_which_cannot_change_it(
    loaded: Run, option: tuple[str, str]
) -> None:
    """Refused whatever they name (tests/cli/test_flag_combinations.py): they cannot matter."""
    counted = loaded("query", "--count", *option)

    assert counted.exit_code == ExitStatus.USAGE, counted.stdout
    assert counted.stderr.startswith(f"s3idx: error: --count goes without {option[0]}: ")
    assert counted.stdout == ""


def test_query_full_fetches_whole_documents(loaded: Run) -> None:
    result = loaded("query", '{"n": {"$gt": 1}}', "--full", "--sort", "n")
    assert result.exit_code == 0, result.stderr
    assert json_lines(result.stdout) == [DOCS[2], DOCS[0]]


def test_query_unknown_operator_is_a_usage_error(loaded: Run) -> None:
    result = loaded("query", '{"n": {"$where": "1"}}')
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr.startswith("s3idx: error: unknown query operator '$where'; supported: ")


def test_query_filter_that_is_not_json(loaded: Run) -> None:
    result = loaded("query", "{task_id: 1}")
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr.startswith("s3idx: error: FILTER is not valid JSON: ")
    assert "hint: write it as a JSON object" in result.stderr


def test_query_filter_that_is_not_an_object(loaded: Run) -> None:
    result = loaded("query", "[1]")
    assert result.stderr == "s3idx: error: FILTER must be a JSON object, not an array\n"


def test_query_filter_that_is_a_lone_date_tag(loaded: Run) -> None:
    # {"$date": ...} parses as a date, not as an object of conditions.
    result = loaded("query", '{"$date": "2024-01-01T00:00:00Z"}')
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == "s3idx: error: FILTER must be a JSON object, not a date\n"


def test_delete_by_key_removes_object_and_entry(loaded: Run) -> None:
    result = loaded("delete", "a", "nope")
    assert result.exit_code == ExitStatus.NOT_FOUND
    assert "s3idx: not found: nope" in result.stderr
    assert "delete: deleted 1 document, 1 not found" in result.stderr
    assert loaded("get", "a").exit_code == ExitStatus.NOT_FOUND
    assert loaded("query", "--count").stdout == "2\n"


def test_delete_by_filter_with_dry_run_first(loaded: Run) -> None:
    dry = loaded("delete", "--filter", '{"tags": "y"}', "--dry-run")
    assert dry.exit_code == 0
    assert dry.stdout.split() == ["a", "b"]
    assert loaded("query", "--count").stdout == "3\n"

    real = loaded("delete", "--filter", '{"tags": "y"}', "--json")
    assert orjson.loads(real.stdout)["deleted"] == 2
    assert [e["fs_id"] for e in json_lines(loaded("query").stdout)] == ["c"]


def test_delete_everything_needs_all(loaded: Run) -> None:
    refused = loaded("delete", "--filter", "{}")
    assert refused.exit_code == ExitStatus.USAGE
    assert "add --all if you mean to delete everything" in refused.stderr
    assert loaded("delete", "--filter", "{}", "--all").exit_code == 0
    assert loaded("query", "--count").stdout == "0\n"


@pytest.mark.parametrize(
    "everything",
    [
        '{"$and": [{}]}',
        '{"$or": [{"tags": "y"}, {}]}',
        '{"$nor": [{"$and": [{}, {"n": {"$in": []}}]}]}',
        '{"$nor": [{"n": {"$in": []}}]}',
        '{"n": {"$not": {"$in": []}}}',
        '{"$and": [{"$or": [{}]}, {"$nor": [{"tags": {"$all": []}}]}]}',
    ],
)
def test_a_filter_matching_every_document_whatever_it_holds_needs_all(
    loaded: Run, everything: str
) -> None:
    """A filter made of empty documents (a template whose condition came out empty), or of
    conditions that can match nothing, negated, is ``{}`` in other words."""
    refused = loaded("delete", "--filter", everything)
    assert refused.exit_code == ExitStatus.USAGE, refused.stderr
    assert refused.stderr == (
        f"s3idx: error: --filter {everything!r} matches every document\n"
        "  hint: add --all if you mean to delete everything\n"
    )
    assert loaded("query", "--count").stdout == "3\n"
    dry = loaded("delete", "--filter", everything, "--all", "--dry-run")
    assert dry.stdout.split() == ["a", "b", "c"]


def test_delete_needs_keys_or_a_filter(run: Run) -> None:
    result = run("delete")
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        "s3idx: error: nothing to delete: give KEY arguments or --filter FILTER\n"
    )


def test_info_names_the_default_locations(loaded: Run, isolated_env: Path) -> None:
    result = loaded("info", "--json")
    info = orjson.loads(result.stdout)
    assert info["store"] == str(isolated_env / "data" / "store")
    assert info["index"] == str(isolated_env / "data" / "index.sqlite3")
    assert info["key_field"] == "fs_id"
    assert info["fields"] == ["task_id", "n", "tags"]
    assert info["entries"] == 3


def test_explicit_store_and_index_locations(run: Run, tmp_path: Path) -> None:
    store, index = tmp_path / "s", tmp_path / "i.db"
    args = ["--store", f"file://{store}", "--index", f"sqlite:///{index}"]
    assert run("put", *args, input=jsonl({"fs_id": "x"})).exit_code == 0
    assert (store / "s3idx-store.json").is_file()
    assert index.is_file()
    assert run("get", "x").exit_code == ExitStatus.NOT_FOUND  # not in the default store
    assert run("get", *args[:2], "x").exit_code == 0


def test_profile_from_config_file(run: Run, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[profiles.team]\nstore = "{tmp_path / "team-store"}"\nindex = "{tmp_path / "team.db"}"\n'
    )
    args = ["--config", str(config), "--profile", "team"]
    assert run("put", *args, input=jsonl({"fs_id": "x"})).exit_code == 0
    assert (tmp_path / "team.db").is_file()
    assert run("query", *args, "--count").stdout == "1\n"


def test_get_reports_an_object_it_cannot_read_and_goes_on(loaded: Run, isolated_env: Path) -> None:
    from s3idx.store.local import LocalStore

    LocalStore(isolated_env / "data" / "store").put("foreign", b"plain text", {})
    result = loaded("get", "a", "foreign", "b")
    assert result.exit_code == ExitStatus.PARTIAL
    assert json_lines(result.stdout) == [DOCS[0], DOCS[1]]
    assert result.stderr == ("s3idx: cannot read foreign: object has no s3idx metadata\n")


def test_put_without_input_on_a_terminal_says_how(run: Run) -> None:
    env = memory_environment(stdin_isatty=True)
    result = run("put", obj=env)
    assert result.exit_code == ExitStatus.USAGE
    assert written(env.stdout) == ""
    assert written(env.stderr) == (
        "s3idx: error: no input: give FILE arguments or pipe JSON lines into s3idx put\n"
        "  hint: example: s3idx put docs.jsonl, or: cat docs.jsonl | s3idx put\n"
    )


@pytest.mark.parametrize("args", [["-"], ["DOCS", "-"], []], ids=["-", "FILE -", "no FILE"])
def test_put_with_stdin_closed_says_so(tmp_path: Path, args: list[str]) -> None:
    """`s3idx put - <&-`: a usage error about stdin, not the Python API's wording."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"fs_id": "a"}\n')
    argv = [str(docs) if a == "DOCS" else a for a in args]
    command = " ".join(["exec", shlex.quote(sys.executable), "-m", "s3idx", "put", *argv])
    done = subprocess.run(
        ["sh", "-c", command + " <&-"],
        env={**subprocess_env(tmp_path), "S3IDX_HOME": str(tmp_path / "home")},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == ExitStatus.USAGE, done.stderr
    if args:
        assert done.stderr.decode() == (
            f"s3idx: error: {STDIN_CLOSED}\n  hint: {STDIN_CLOSED_HINT}\n"
        )
    assert not (tmp_path / "home" / "index.sqlite3").exists()  # nothing stored, even docs.jsonl


# --- keys no document can have ------------------------------------------------------------

BAD_KEYS = [
    ("", "key '' is empty"),
    ("../x", "key '../x' has a '..' segment"),
    ("a//b", "key 'a//b' has an empty segment (a leading, trailing or double '/')"),
    ("a\tb", "key contains a control character (U+0009): 'a\\tb'"),
    (".s3idx/m", "key '.s3idx/m' starts with '.s3idx/', which is reserved for s3idx's own "
     "objects (manifests)"),
]  # fmt: skip
BAD_KEY_HINT = "  hint: no document can have such a key; nothing was read or deleted\n"


@pytest.mark.parametrize(("key", "message"), BAD_KEYS)
def test_get_of_a_key_no_document_can_have_is_a_usage_error(
    loaded: Run, tmp_path: Path, key: str, message: str
) -> None:
    out = tmp_path / "out.jsonl"
    for args in (["get", key], ["get", "a", key, "b"], ["get", "-o", str(out), "a", key]):
        result = loaded(*args)
        assert (result.exit_code, result.stdout) == (ExitStatus.USAGE, ""), args
        assert result.stderr == f"s3idx: error: {message}\n{BAD_KEY_HINT}"
    assert not out.exists()


@pytest.mark.parametrize(("key", "message"), BAD_KEYS)
def test_delete_of_a_key_no_document_can_have_deletes_nothing(
    loaded: Run, key: str, message: str
) -> None:
    for extra in ([], ["--dry-run"], ["--json"]):
        result = loaded("delete", "a", key, *extra)
        assert result.exit_code == ExitStatus.USAGE
        assert result.stderr == f"s3idx: error: {message}\n{BAD_KEY_HINT}"
    assert [e["fs_id"] for e in json_lines(loaded("query", "--sort", "fs_id").stdout)] == [
        "a",
        "b",
        "c",
    ]


def test_the_library_refuses_such_keys_before_reading_or_deleting(tmp_path: Path) -> None:
    from s3idx import open_engine
    from s3idx.errors import UsageError

    with open_engine(store=str(tmp_path / "s"), index=str(tmp_path / "i.sqlite3")) as engine:
        engine.put_documents([{"fs_id": "a"}])
        for call in (
            lambda: engine.get("../x"),
            lambda: engine.write_documents(["a", "../x"], io.BytesIO()),
            lambda: engine.delete(["a", "../x"]),
        ):
            with pytest.raises(UsageError) as raised:
                call()
            assert raised.value.message == "key '../x' has a '..' segment"
        assert engine.get("a") == {"fs_id": "a"}
