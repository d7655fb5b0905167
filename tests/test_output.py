"""Rendering: progress (counts, rate, ETA) on a terminal and off one, summaries' wording."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from s3idx import config, output
from s3idx.engine.results import DeleteResult, PutResult, RebuildResult, SyncResult
from s3idx.errors import ConfigError
from tests.helpers import memory_environment, written


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- rate and ETA arithmetic ------------------------------------------------------------------


def test_rate_is_work_done_over_time_and_absent_when_nothing_was_done() -> None:
    assert output.work_rate(1850, 10.0) == 185.0
    assert output.work_rate(0, 10.0) is None
    assert output.work_rate(5, 0.0) is None


def test_eta_is_time_so_far_scaled_by_what_is_left() -> None:
    assert output.eta_seconds(0.25, 30.0) == pytest.approx(90.0)
    assert output.eta_seconds(0.64, 64.0) == pytest.approx(36.0)
    assert output.eta_seconds(1.0, 30.0) == 0.0
    assert output.eta_seconds(0.0, 30.0) is None  # nothing done yet: no guess
    assert output.eta_seconds(None, 30.0) is None  # whole unknown


def test_duration_and_rate_numbers_read_as_people_write_them() -> None:
    assert output.duration(70) == "00:01:10"
    assert output.duration(3 * 3600 + 61.2) == "03:01:02"  # rounded up, never "0 s left" early
    assert output.number(1850.4) == "1850"
    assert output.number(12.34) == "12.3"


def test_meter_line_counts_rate_share_of_input_and_eta() -> None:
    clock = FakeClock()
    meter = output.ProgressMeter("put", "documents", clock=clock)
    clock.now += 64.0
    meter.update(118400, None, {"stored": 118000, "rejected": 400}, input_fraction=0.64)
    assert meter.line() == (
        "put: 118400 documents (118000 stored, 400 rejected), 1850/s, 64% of input, ETA 00:00:36"
    )


def test_meter_with_a_known_total_shows_it_and_its_share() -> None:
    clock = FakeClock()
    meter = output.ProgressMeter("delete", "documents", clock=clock)
    clock.now += 10.0
    meter.update(500, 2000, {})
    assert meter.line() == "delete: 500 of 2000 documents, 50.0/s, 25%, ETA 00:00:30"


def test_meter_without_a_total_has_no_share_and_no_eta() -> None:
    clock = FakeClock()
    meter = output.ProgressMeter("rebuild-index", "objects", clock=clock)
    clock.now += 4.0
    meter.update(8000, None, {"written": 7990})
    assert meter.line() == "rebuild-index: 8000 objects (7990 written), 2000/s"


def test_meter_with_nothing_done_yet_says_no_rate() -> None:
    meter = output.ProgressMeter("sync", "objects", clock=FakeClock())
    meter.update(0, None, {})
    assert meter.line() == "sync: 0 objects"


def test_meter_says_one_document_and_one_object_in_the_singular() -> None:
    clock = FakeClock()
    meter = output.ProgressMeter("put", "documents", clock=clock)
    clock.now += 2.0
    meter.update(1, None, {"stored": 1})
    assert meter.line() == "put: 1 document (1 stored), 0.5/s"
    objects = output.ProgressMeter("get", "objects", clock=clock)
    objects.update(1, 1, {})
    assert objects.line().startswith("get: 1 of 1 object, ")
    objects.update(1, 2, {})
    assert objects.line().startswith("get: 1 of 2 objects, ")


# --- rendering ----------------------------------------------------------------------------


def test_terminal_bar_shows_count_rate_and_eta() -> None:
    clock = FakeClock()
    meter = output.ProgressMeter("put", "documents", clock=clock)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160, color_system=None)
    bar = output.TerminalProgress(meter, console=console)
    bar.start()
    clock.now += 20.0
    meter.update(5000, None, {"stored": 5000, "rejected": 0}, input_fraction=0.5)
    bar.show()
    bar.refresh()
    drawn = buffer.getvalue()
    bar.stop()
    assert "put" in drawn
    assert "5000 documents (5000 stored, 0 rejected), 250/s, 50% of input, ETA 00:00:20" in drawn


def test_lines_off_a_terminal_are_timestamped_and_spaced_by_the_interval() -> None:
    clock = FakeClock()
    meter = output.ProgressMeter("put", "documents", clock=clock)
    stream = io.StringIO()
    lines = output.ProgressLines(meter, stream=stream, interval=60.0, clock=clock)
    for step in range(1, 181):  # three minutes of updates, one a second
        clock.now += 1.0
        meter.update(step * 10, None, {})
        lines.show()
    written = stream.getvalue().splitlines()
    assert len(written) == 3
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.fullmatch(stamp + r" s3idx: put: 600 documents, 10\.0/s", written[0])
    assert written[2].endswith("put: 1800 documents, 10.0/s")


def test_progress_interval_comes_from_the_environment() -> None:
    given = memory_environment(environ={config.PROGRESS_INTERVAL_ENV: "2.5"})
    assert output.Output(given).progress_interval() == 2.5
    unset = memory_environment(environ={})
    assert output.Output(unset).progress_interval() == config.DEFAULT_PROGRESS_INTERVAL


def test_a_bad_progress_interval_is_refused_naming_the_variable() -> None:
    for bad in ("soon", "-1", "nan", "inf"):
        with pytest.raises(ConfigError) as raised:
            config.progress_interval({config.PROGRESS_INTERVAL_ENV: bad})
        assert raised.value.message == (
            f"S3IDX_PROGRESS_INTERVAL: expected a number of seconds, 0 or more, got {bad!r}"
        )


def test_summary_is_timestamped_off_a_terminal_and_plain_on_one() -> None:
    log = memory_environment(stderr_isatty=False)
    output.Output(log).summary("put: 1 read")
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.fullmatch(stamp + r" s3idx: put: 1 read\n", written(log.stderr))
    terminal = memory_environment(stderr_isatty=True)
    output.Output(terminal).summary("put: 1 read")
    assert written(terminal.stderr) == "s3idx: put: 1 read\n"
    assert written(log.stdout) == written(terminal.stdout) == ""


def test_events_draw_progress_lines_on_the_environments_stderr_by_its_clock() -> None:
    clock = FakeClock()
    env = dataclasses.replace(
        memory_environment(environ={config.PROGRESS_INTERVAL_ENV: "10"}), clock=clock
    )
    with output.CliEvents(
        output.Output(env), rejects=None, show_progress=True, command="get"
    ) as events:
        for done in range(1, 41):
            clock.now += 1.0
            events.progress(done, 40, {})
    lines = written(env.stderr).splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "s3idx: get: 10 of 40 documents, 1.0/s, 25%, ETA 00:00:30",
        "s3idx: get: 20 of 40 documents, 1.0/s, 50%, ETA 00:00:20",
        "s3idx: get: 30 of 40 documents, 1.0/s, 75%, ETA 00:00:10",
        "s3idx: get: 40 of 40 documents, 1.0/s, 100%",
    ]
    assert written(env.stdout) == ""


# --- summaries ------------------------------------------------------------------------------


def test_plural_is_right_for_one_and_for_many() -> None:
    assert output.plural(1, "document") == "1 document"
    assert output.plural(0, "document") == "0 documents"
    assert output.plural(2, "entry", "entries") == "2 entries"


def test_delete_summary_counts_in_the_singular_and_plural() -> None:
    assert output.delete_summary(DeleteResult(deleted=1)) == "delete: deleted 1 document"
    dry = DeleteResult(dry_run=True, would_delete=["a", "b"])
    assert output.delete_summary(dry) == "delete: would delete 2 documents"


def test_delete_summary_names_rewritten_and_finished_documents() -> None:
    result = DeleteResult(deleted=3, rewritten=2, finished=1)
    assert output.delete_summary(result) == (
        "delete: deleted 3 documents, 2 skipped (changed since indexed); "
        "1 document finished from an interrupted delete"
    )
    assert result.as_dict()["rewritten"] == 2
    assert result.as_dict()["finished"] == 1


def test_put_summary_has_no_rate_when_nothing_was_stored() -> None:
    result = PutResult(read=20, unchanged=20, elapsed=0.5)
    line = output.put_summary(result)
    assert "all 20 unchanged" in line
    assert "/s" not in line
    stored = output.put_summary(PutResult(read=20, stored=20, elapsed=0.5))
    assert stored.endswith("in 0.50 s (40.0 docs/s)")


def test_one_of_each_thing_is_said_in_the_singular() -> None:
    put = output.put_summary(PutResult(read=2, stored=2, duplicates=1, retries=1, elapsed=1.0))
    assert "1 duplicate key (last one kept)" in put and "1 retry" in put
    sync = output.sync_summary(SyncResult(listed=1, indexed=1, elapsed=1.0))
    assert sync.startswith("sync: 1 object, 1 entry;")
    rebuild = output.rebuild_summary(RebuildResult(listed=0, elapsed=1.0, committed=True))
    assert "/s" not in rebuild  # nothing listed: no "0 objects/s"


def test_refusals_count_one_entry_in_the_singular(tmp_path: Path) -> None:
    from s3idx import Engine
    from s3idx.errors import S3idxError
    from s3idx.index.sqlite import SqliteIndex
    from s3idx.store.local import LocalStore

    index = tmp_path / "index.sqlite3"
    with Engine(LocalStore(tmp_path / "full"), SqliteIndex(index)) as engine:
        engine.put_documents([{"fs_id": "a"}])
    # A store that exists and is empty (a store that does not exist is refused as missing).
    with Engine(LocalStore(tmp_path / "empty"), SqliteIndex(tmp_path / "other.db")) as engine:
        engine.put_documents([{"fs_id": "x"}])
        engine.delete(["x"])
    (tmp_path / "full" / "objects" / "a~").unlink()  # its own store, emptied behind its back
    full = Engine(LocalStore(tmp_path / "full"), SqliteIndex(index))
    with full, pytest.raises(S3idxError, match="refusing to remove the 1 index entry\n"):
        full.sync()
    empty = Engine(LocalStore(tmp_path / "empty"), SqliteIndex(index))
    with empty, pytest.raises(S3idxError, match="replace an index of 1 entry with an empty one"):
        empty.rebuild_index()


def test_a_resumed_rebuild_rates_only_what_it_listed_itself() -> None:
    result = RebuildResult(listed=1000, listed_before=900, elapsed=10.0, committed=True)
    assert "(10.0 objects/s)" in output.rebuild_summary(result)
    assert result.rate == 10.0
    assert "listed_before" not in result.as_dict()


def test_a_rebuild_that_listed_the_part_done_before_again_says_what_it_found() -> None:
    plain = RebuildResult(listed=10, written=10, committed=True)
    assert "listed again" not in output.rebuild_summary(plain)
    result = RebuildResult(
        listed=10, resumed=True, committed=True, rechecked=6, recheck_dropped=2, recheck_refreshed=1
    )
    assert (
        "; resumed; done before, listed again: 6, 2 dropped (gone or no entry now), "
        "1 read again (changed or new)"
    ) in output.rebuild_summary(result)
    assert result.as_dict()["recheck_dropped"] == 2
