"""``s3idx put`` on the embedded default store and index."""

from __future__ import annotations

import gzip
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

from s3idx import codec
from s3idx.errors import ExitStatus
from tests.helpers import Run, json_lines, jsonl, subprocess_env


def test_first_put_on_a_fresh_machine_then_query_and_get(run: Run) -> None:
    put = run("put", "--field", "task_id", input=b'{"fs_id":"a","task_id":"mp-1"}\n')
    assert put.exit_code == 0, put.stderr
    assert put.stdout == ""
    # Off a terminal (here, and in cron's logs) the summary carries a UTC timestamp.
    assert re.match(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ s3idx: put: 1 read, 1 stored, 0 rejected in ", put.stderr
    ), put.stderr

    query = run("query", '{"task_id": "mp-1"}')
    assert query.exit_code == 0, query.stderr
    (entry,) = json_lines(query.stdout)
    assert entry["fs_id"] == "a"
    assert entry["task_id"] == "mp-1"
    assert set(entry) == {"fs_id", "task_id", "last_updated"}
    assert entry["last_updated"]["$date"].endswith("Z")

    get = run("get", "a")
    assert get.exit_code == 0, get.stderr
    assert get.stdout == '{"fs_id":"a","task_id":"mp-1"}\n'


def test_bad_line_is_rejected_with_its_location_and_the_rest_is_stored(
    run: Run, tmp_path: Path
) -> None:
    source = tmp_path / "five.jsonl"
    lines = [
        b'{"fs_id":"k1","n":1}',
        b'{"fs_id":"k2","n":2}',
        b'{"fs_id":"k3", oops}',
        b'{"fs_id":"k4","n":4}',
        b'{"fs_id":"k5","n":5}',
    ]
    source.write_bytes(b"\n".join(lines) + b"\n")
    rejects = tmp_path / "rejects.jsonl"

    result = run("put", str(source), "--field", "n", "--rejects", str(rejects))

    assert result.exit_code == ExitStatus.PARTIAL
    assert f"s3idx: {source}:3: invalid JSON: " in result.stderr
    assert "1 rejected" in result.stderr
    assert rejects.read_bytes() == lines[2] + b"\n"
    stored = json_lines(run("query", "--sort", "fs_id").stdout)
    assert [e["fs_id"] for e in stored] == ["k1", "k2", "k4", "k5"]
    assert [e["n"] for e in stored] == [1, 2, 4, 5]


def test_a_key_in_the_reserved_prefix_is_rejected_and_the_rest_is_stored(
    run: Run, tmp_path: Path
) -> None:
    source = tmp_path / "three.jsonl"
    lines = [b'{"fs_id":"k1"}', b'{"fs_id":".s3idx/x"}', b'{"fs_id":".s3idx"}']
    source.write_bytes(b"\n".join(lines) + b"\n")
    rejects = tmp_path / "rejects.jsonl"

    result = run("put", str(source), "--rejects", str(rejects))

    assert result.exit_code == ExitStatus.PARTIAL
    assert (
        f"s3idx: {source}:2: key '.s3idx/x' starts with '.s3idx/', which is reserved for "
        "s3idx's own objects (manifests)" in result.stderr
    )
    assert "choose another key" in result.stderr
    assert rejects.read_bytes() == lines[1] + b"\n"
    stored = json_lines(run("query", "--sort", "fs_id").stdout)
    assert [e["fs_id"] for e in stored] == [".s3idx", "k1"]
    assert run("get", ".s3idx").exit_code == 0


def test_json_summary_on_stdout(run: Run) -> None:
    result = run("put", "--json", input=jsonl({"fs_id": "a"}, {"fs_id": "b"}, {"x": 1}))
    assert result.exit_code == ExitStatus.PARTIAL
    summary = orjson.loads(result.stdout)
    assert summary["command"] == "put"
    assert (summary["read"], summary["stored"], summary["rejected"]) == (3, 2, 1)
    assert "<stdin>:3: missing key field 'fs_id'" in result.stderr
    assert "put:" not in result.stderr


def test_quiet_prints_no_summary_but_still_the_rejects(run: Run) -> None:
    result = run("put", "--quiet", input=jsonl({"fs_id": "a"}, [1, 2]))
    assert result.exit_code == ExitStatus.PARTIAL
    assert result.stderr == "s3idx: <stdin>:2: expected a JSON object, got an array\n"


def test_same_key_twice_last_wins_and_is_counted(run: Run) -> None:
    result = run(
        "put",
        "--json",
        "--field",
        "v",
        input=jsonl({"fs_id": "a", "v": 1}, {"fs_id": "b", "v": 1}, {"fs_id": "a", "v": 2}),
    )
    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["duplicates"] == 1
    assert json_lines(run("get", "a").stdout) == [{"fs_id": "a", "v": 2}]
    assert [e["v"] for e in json_lines(run("query", '{"fs_id": "a"}').stdout)] == [2]


def test_duplicates_across_batches_last_wins(run: Run) -> None:
    documents = [{"fs_id": f"k{i % 5}", "v": i} for i in range(23)]
    result = run("put", "--batch-size", "4", "--workers", "3", "--json", input=jsonl(*documents))
    assert orjson.loads(result.stdout)["duplicates"] == 18
    got = json_lines(run("get", "k0", "k1", "k2", "k3", "k4").stdout)
    assert [d["v"] for d in got] == [20, 21, 22, 18, 19]


def test_chunks_of_rejected_lines_count_no_duplicates(run: Run) -> None:
    lines = b'{"fs_id": "a"}\n[1]\nnot json\n{"fs_id": "a"}\n{"v": 1}\n'
    result = run("put", "--batch-size", "1", "--json", input=lines)
    assert result.exit_code == ExitStatus.PARTIAL, result.stderr
    summary = orjson.loads(result.stdout)
    # Five lines: "a" stored (once, though both its lines are uploaded), its second line a
    # duplicate, three rejects.
    assert (summary["stored"], summary["rejected"], summary["duplicates"]) == (1, 3, 1)


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize(
    ("values", "counts"),
    [
        # (stored, unchanged, duplicates): each line once; a key changed later in the run is
        # stored (once), though its first line found it unchanged.
        ([1, 2, 1], (1, 0, 2)),
        ([1, 2, 3, 2], (1, 0, 3)),
        ([1, 1, 1], (0, 1, 2)),
        ([2, 1], (1, 0, 1)),
    ],
)
def test_skip_unchanged_counts_a_key_changed_in_a_later_batch_as_stored(
    run: Run, values: list[int], counts: tuple[int, int, int], dry_run: bool
) -> None:
    assert run("put", "--field", "v", input=jsonl({"fs_id": "a", "v": 1})).exit_code == 0
    lines = jsonl(*({"fs_id": "a", "v": v} for v in values), {"fs_id": "b", "v": 0})
    flags = ["--skip-unchanged", "--batch-size", "1", "--json"]
    result = run("put", *flags, *(["--dry-run"] if dry_run else []), input=lines)
    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    stored = summary["would_store" if dry_run else "stored"]
    assert (stored, summary["unchanged"], summary["duplicates"]) == (counts[0] + 1, *counts[1:])
    assert summary["read"] == len(values) + 1
    if not dry_run:
        assert json_lines(run("get", "a").stdout) == [{"fs_id": "a", "v": values[-1]}]


def test_skip_unchanged_uploads_nothing_the_second_time(run: Run) -> None:
    data = jsonl(*({"fs_id": f"k{i}", "v": i} for i in range(10)))
    first = run("put", "--field", "v", "--skip-unchanged", "--json", input=data)
    assert orjson.loads(first.stdout)["stored"] == 10

    second = run("put", "--field", "v", "--skip-unchanged", "--json", input=data)
    summary = orjson.loads(second.stdout)
    assert (summary["stored"], summary["unchanged"]) == (0, 10)

    changed = jsonl({"fs_id": "k1", "v": 100}, {"fs_id": "k2", "v": 2})
    third = orjson.loads(run("put", "--skip-unchanged", "--json", input=changed).stdout)
    assert (third["stored"], third["unchanged"]) == (1, 1)
    assert json_lines(run("get", "k1").stdout) == [{"fs_id": "k1", "v": 100}]


def test_dry_run_writes_nothing(run: Run) -> None:
    result = run("put", "--dry-run", "--json", input=jsonl({"fs_id": "a"}))
    summary = orjson.loads(result.stdout)
    assert (summary["would_store"], summary["stored"], summary["dry_run"]) == (1, 0, True)
    # Not even an empty store or index was made.
    assert "no s3idx index at " in run("query", "--count").stderr
    assert "no s3idx store at " in run("get", "a").stderr


@pytest.mark.parametrize("store", ["local", "s3"])
@pytest.mark.parametrize("compress", ["zlib", "none", "zstd"])
def test_a_dry_run_counts_the_bytes_a_put_stores(
    run: Run, request: pytest.FixtureRequest, compress: str, store: str
) -> None:
    """bytes_stored: the stored objects' sizes (compressed; a local file with its metadata
    header); a dry run's would_store_bytes: the same, though nothing was stored."""
    if compress == "zstd":
        pytest.importorskip("zstandard")
    documents = [{"fs_id": f"k{i}", "text": "abc " * (i * 20), "n": i} for i in range(30)]
    data = jsonl(*documents)
    args = ["put", "--json", "--compress", compress]
    if store == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        endpoint = request.getfixturevalue("s3_endpoint")
        args += ["--store", f"s3://{bucket}/docs", "--endpoint-url", endpoint]

    dry = orjson.loads(run(*args, "--dry-run", input=data).stdout)
    real = orjson.loads(run(*args, input=data).stdout)

    assert dry["would_store_bytes"] == real["bytes_stored"]
    assert (dry["would_store"], real["stored"]) == (30, 30)
    assert (dry["stored"], dry["bytes_stored"]) == (0, 0)
    if compress != "none":
        assert real["bytes_stored"] < len(data) / 2  # compressed, not the lines' sizes


def test_max_errors_stops_after_n_rejects(run: Run) -> None:
    documents = [{"fs_id": "a"}, {"no": 1}, {"fs_id": "b"}, {"no": 2}, {"fs_id": "c"}]
    result = run("put", "--max-errors", "2", "--batch-size", "1", "--json", input=jsonl(*documents))
    assert result.exit_code == ExitStatus.PARTIAL
    summary = orjson.loads(result.stdout)
    assert summary["stopped_early"] is True
    assert (summary["stored"], summary["rejected"]) == (2, 2)
    assert [e["fs_id"] for e in json_lines(run("query").stdout)] == ["a", "b"]


def test_gzip_and_json_array_files(run: Run, tmp_path: Path) -> None:
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(jsonl({"fs_id": "g1"}, {"fs_id": "g2"})))
    array = tmp_path / "b.json"
    array.write_bytes(b'[\n {"fs_id": "j1"},\n {"fs_id": "j2"}\n]\n')

    result = run("put", str(gz), str(array))

    assert result.exit_code == 0, result.stderr
    assert run("query", "--count").stdout == "4\n"


def test_stdin_dash_between_files(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl({"fs_id": "f"}))
    result = run("put", str(path), "-", input=jsonl({"fs_id": "s"}))
    assert result.exit_code == 0, result.stderr
    assert run("query", "--count").stdout == "2\n"


MISSING_FILE_HINT = (
    "check the name and the directories above it (a relative path starts from the current "
    "directory)"
)


@pytest.mark.parametrize("name", ["nope/x.jsonl", "a-file/x.jsonl"])
def test_every_input_file_refusal_has_a_hint(run: Run, tmp_path: Path, name: str) -> None:
    """README: a usage error naming it, with a hint (a path through a file too)."""
    (tmp_path / "a-file").write_bytes(b"")
    result = run("put", str(tmp_path / name))
    assert (result.exit_code, result.stderr) == (
        ExitStatus.USAGE,
        f"s3idx: error: input file {tmp_path / name} does not exist\n  hint: {MISSING_FILE_HINT}\n",
    )


def test_missing_input_file_is_a_usage_error_and_nothing_is_stored(
    run: Run, tmp_path: Path
) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl({"fs_id": "a"}))
    result = run("put", str(good), str(tmp_path / "nope.jsonl"))
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        f"s3idx: error: input file {tmp_path / 'nope.jsonl'} does not exist\n"
        f"  hint: {MISSING_FILE_HINT}\n"
    )
    assert "no s3idx index at " in run("query", "--count").stderr


def _fifo_fed_with(path: Path, data: bytes) -> threading.Thread:
    """A named pipe at ``path`` that a thread writes ``data`` into once a reader opens it."""
    os.mkfifo(path)

    def feed() -> None:
        with open(path, "wb") as pipe:
            pipe.write(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    return writer


def test_a_named_pipe_is_read_like_a_file_with_its_lines_named(run: Run, tmp_path: Path) -> None:
    pipe = tmp_path / "docs.pipe"
    writer = _fifo_fed_with(pipe, b'{"fs_id": "a"}\n{"fs_id": \n{"fs_id": "c"}\n')

    result = run("put", str(pipe))
    writer.join(timeout=10)

    assert result.exit_code == ExitStatus.PARTIAL, result.stderr
    assert f"s3idx: {pipe}:2: invalid JSON: " in result.stderr
    assert run("query", "--count").stdout == "2\n"


def test_dev_null_is_an_empty_input_not_a_missing_file(run: Run) -> None:
    result = run("put", "/dev/null")
    assert result.exit_code == 0, result.stderr
    assert "does not exist" not in result.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash for <(...)")
@pytest.mark.parametrize("processes", ["1", "2"])
def test_process_substitution_feeds_put(tmp_path: Path, processes: str) -> None:
    """`s3idx put <(zcat docs.gz)`: the shell passes /dev/fd/N, a pipe, not a regular file."""
    script = (
        f"{shlex.quote(sys.executable)} -m s3idx put --processes {processes} "
        '<(printf \'%s\\n\' \'{"fs_id": "p1"}\' \'{"fs_id": "p2"}\')'
        f" && {shlex.quote(sys.executable)} -m s3idx query --count"
    )
    done = subprocess.run(
        ["bash", "-c", script],
        env=subprocess_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "2"


def test_key_option_and_dotted_fields(run: Run) -> None:
    doc = {"task_id": "t-1", "meta": {"owner": "ann", "size": 3}, "other": 1}
    result = run("put", "--key", "task_id", "--field", "meta.owner", input=jsonl(doc))
    assert result.exit_code == 0, result.stderr

    (entry,) = json_lines(run("query", '{"meta.owner": "ann"}').stdout)
    assert entry["task_id"] == "t-1"
    assert entry["meta"] == {"owner": "ann"}
    assert "other" not in entry


def test_index_remembers_its_key_and_fields(run: Run) -> None:
    run("put", "--key", "task_id", "--field", "a", input=jsonl({"task_id": "t1", "a": 1}))
    later = run("put", input=jsonl({"task_id": "t2", "a": 2}))
    assert later.exit_code == 0, later.stderr
    assert [e["a"] for e in json_lines(run("query", '{"a": 2}').stdout)] == [2]


def test_changing_the_key_field_of_an_index_is_refused(run: Run) -> None:
    run("put", input=jsonl({"fs_id": "a", "task_id": "t"}))
    result = run("put", "--key", "task_id", input=jsonl({"fs_id": "b", "task_id": "u"}))
    assert result.exit_code == ExitStatus.USAGE
    assert "uses key field 'fs_id', not 'task_id'" in result.stderr


def test_reserved_field_names_are_refused(run: Run) -> None:
    result = run("put", "--field", "last_updated", input=jsonl({"fs_id": "a"}))
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr == (
        "s3idx: error: --field: field 'last_updated' is reserved: "
        "s3idx sets 'last_updated' itself\n"
    )


def test_types_survive_into_the_index(run: Run) -> None:
    doc = {
        "fs_id": "t",
        "i": 1,
        "f": 1.0,
        "b": True,
        "n": None,
        "l": [1, "x"],
        "d": {"k": "v"},
        "when": {"$date": "2026-01-02T03:04:05.678Z"},
    }
    fields = ["--field=" + f for f in ("i", "f", "b", "n", "l", "d", "when")]
    assert run("put", *fields, input=jsonl(doc)).exit_code == 0
    (entry,) = json_lines(run("query").stdout)
    for name in ("i", "f", "b", "n", "l", "d", "when"):
        assert entry[name] == doc[name]
        assert type(entry[name]) is type(doc[name])
    assert run(
        "query", '{"when": {"$gt": {"$date": "2026-01-01T00:00:00Z"}}}', "--count"
    ).stdout == ("1\n")


def test_document_bodies_are_stored_byte_for_byte(run: Run) -> None:
    line = b'{"fs_id": "a",  "big": 18446744073709551616, "x": 1.50}'
    assert run("put", input=line + b"\r\n").exit_code == 0
    assert run("get", "a").stdout_bytes == line + b"\n"


@pytest.mark.parametrize("compress", ["none", "zlib", "zstd"])
def test_every_compression_round_trips_and_is_recorded(run: Run, compress: str) -> None:
    if compress == "zstd":
        pytest.importorskip("zstandard", reason="zstandard is not installed")
    docs = [{"fs_id": f"c{i}", "text": "abc" * 500} for i in range(3)]

    put = run("put", "--compress", compress, "--field", "text", input=jsonl(*docs))

    assert put.exit_code == 0, put.stderr
    assert json_lines(run("get", "c0", "c2").stdout) == [docs[0], docs[2]]
    entry = json_lines(run("query", '{"fs_id": "c1"}', "--fields", "_s3idx").stdout)[0]
    assert entry["_s3idx"]["codec"] == codec.CODEC_BY_COMPRESSION[compress]
    assert json_lines(run("query", "--full", "--sort", "fs_id").stdout) == docs


@pytest.mark.parametrize("blank", [b"\x0b", b"\x0c", b"\x1c", b"\xc2\xa0"], ids=repr)
def test_only_json_whitespace_is_blank_around_a_line(
    run: Run, tmp_path: Path, blank: bytes
) -> None:
    """JSON's whitespace is space, tab, CR and LF: a line with another blank before or after
    its document is invalid JSON, rejected as written, as a line holding only one is; the
    lines around it are stored."""
    path = tmp_path / "docs.jsonl"
    lines = [
        b'{"fs_id": "a"}',
        blank + b'{"fs_id": "b"}',
        b'{"fs_id": "c"}' + blank,
        blank,
        b' \t{"fs_id": "d"} \r',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    rejects = tmp_path / "rejects.jsonl"
    done = run("put", str(path), "--rejects", str(rejects))
    assert done.exit_code == ExitStatus.PARTIAL, done.stderr
    reported = [line.split(": ")[1] for line in done.stderr.splitlines()[:-1]]
    assert reported == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert rejects.read_bytes() == b"\n".join(lines[1:4]) + b"\n"
    assert run("query", "{}", "--fields", "fs_id").stdout.split() == [
        '{"fs_id":"a"}',
        '{"fs_id":"d"}',
    ]
