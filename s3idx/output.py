"""Rendering for the CLI: messages to stderr, data to stdout, rich only on a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any

import orjson

from s3idx import codec
from s3idx.config import redact
from s3idx.engine.rebuild import RebuildResult
from s3idx.engine.recover import Adopted
from s3idx.engine.results import Events, PutResult, Reject
from s3idx.engine.sync import SyncResult

if TYPE_CHECKING:  # rich is imported only when a terminal needs it: cron never pays for it
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

TABLE_ROW_LIMIT = 1000


def stderr_console() -> Console:
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False)


def is_terminal(stream: IO[Any]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def message(text: str) -> None:
    """One line to stderr, prefixed with the program name; never holds a password."""
    sys.stderr.write(f"s3idx: {redact(text)}\n")
    sys.stderr.flush()


def error(text: str, hint: str | None = None) -> None:
    message(f"error: {text}")
    if hint:
        sys.stderr.write(f"  hint: {redact(hint)}\n")
        sys.stderr.flush()


def json_line(value: Any) -> bytes:
    return codec.dumps(value) + b"\n"


_json_written = False


def write_json(value: Mapping[str, Any]) -> None:
    """The one JSON document of a command's ``--json`` output."""
    global _json_written
    _json_written = True
    sys.stdout.buffer.write(json_document(value))
    sys.stdout.flush()


def json_document(value: Mapping[str, Any]) -> bytes:
    return orjson.dumps(redact_mapping(value)) + b"\n"


def json_written() -> bool:
    return _json_written


def reset_json_written() -> None:
    global _json_written
    _json_written = False


def redact_mapping(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_mapping(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_mapping(v) for v in value]
    return value


# --- put -------------------------------------------------------------------------------------


def put_summary(result: PutResult) -> str:
    verb = "would store" if result.dry_run else "stored"
    parts = [f"{result.stored} {verb}"]
    if result.unchanged:
        parts.append(f"{result.unchanged} unchanged")
    parts.append(f"{result.rejected} rejected")
    if result.duplicates:
        parts.append(f"{result.duplicates} duplicate keys (last one kept)")
    line = f"put: {result.read} read, " + ", ".join(parts)
    if result.retries:
        line += f", {result.retries} retries"
    line += f" in {result.elapsed:.2f} s ({result.rate:g} docs/s)"
    if result.stopped_early:
        line += "; stopped early at --max-errors"
    if result.interrupted:
        line += "; interrupted"
    if result.not_indexed:
        line += f"; {result.not_indexed} stored objects are not indexed (run s3idx sync)"
    return line


def rebuild_summary(result: RebuildResult) -> str:
    skipped = result.skipped
    line = (
        f"rebuild-index: {result.listed} listed, {result.written} written, "
        f"{skipped.not_s3idx} not s3idx objects, {skipped.undecodable} undecodable"
    )
    if skipped.vanished:
        line += f", {skipped.vanished} vanished while listing"
    line += _adopted(result.adopted, ", ")
    if result.retries:
        line += f", {result.retries} retries"
    line += f" in {result.elapsed:.2f} s ({result.rate:g} objects/s)"
    if result.resumed:
        line += "; resumed"
    if not result.committed:
        line += "; not swapped in"
    return line


def sync_summary(result: SyncResult) -> str:
    line = (
        f"sync: {result.listed} objects, {result.indexed} entries; drift: "
        f"{result.bucket_only} bucket-only, {result.index_only} index-only, "
        f"{result.changed} changed"
    )
    if not (result.check or result.dry_run):
        line += f"; added {result.added}, updated {result.updated}, removed {result.removed}"
        if not result.prune and result.index_only:
            line += f", kept {result.index_only} stale entries (--no-prune)"
    skipped = result.skipped
    if skipped.not_s3idx:
        line += f"; foreign: {_objects(skipped.not_s3idx)} not written by s3idx (ignored)"
    if skipped.undecodable:
        line += f"; {_objects(skipped.undecodable)} with undecodable metadata"
    line += _adopted(result.adopted, "; ")
    if result.retries:
        line += f"; {result.retries} retries"
    line += f" in {result.elapsed:.2f} s"
    if result.interrupted:
        line += "; interrupted"
    return line


def _objects(count: int) -> str:
    return f"{count} object" if count == 1 else f"{count} objects"


def _adopted(adopted: Adopted, separator: str) -> str:
    """Said only when maggma's objects were met, so s3idx-only runs read as before."""
    if not (adopted.maggma or adopted.rewritten or adopted.rewrite_failed):
        return ""
    text = f"{separator}{adopted.maggma} maggma objects"
    if adopted.rewritten or adopted.rewrite_failed:
        text += f" ({adopted.rewritten} rewritten, {adopted.rewrite_failed} not rewritten)"
    return text


def summary_line(result: object) -> str:
    if isinstance(result, PutResult):
        return put_summary(result)
    if isinstance(result, RebuildResult):
        return rebuild_summary(result)
    if isinstance(result, SyncResult):
        return sync_summary(result)
    raise TypeError(type(result).__name__)


class CliEvents(Events):
    """Reports rejects on stderr (and into the rejects file) and draws progress on a terminal."""

    def __init__(self, *, rejects: IO[bytes] | None, show_progress: bool) -> None:
        self._rejects = rejects
        self._progress: Progress | None = None
        self._task: Any = None
        self._last_draw = 0.0
        if show_progress:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=stderr_console(),
                transient=True,
            )

    def __enter__(self) -> CliEvents:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("put", total=None, detail="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def say(self, text: str) -> None:
        """A message line on stderr that does not tear the progress bar."""
        if self._progress is not None:
            self._progress.console.print(f"s3idx: {redact(text)}", markup=False)
        else:
            message(text)

    def rejected(self, reject: Reject) -> None:
        self.say(f"{reject.location}: {reject.reason}")
        if self._rejects is not None:
            self._rejects.write(reject.raw + b"\n")

    def progress(self, done: int, total: int | None, detail: dict[str, int]) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if now - self._last_draw < 0.1 and (total is None or done < total):
            return
        self._last_draw = now
        text = ", ".join(f"{v} {k}" for k, v in detail.items())
        self._progress.update(self._task, completed=done, total=total, detail=text)


# --- tables ----------------------------------------------------------------------------------


def entries_table(entries: Iterable[Mapping[str, Any]]) -> tuple[Table, int, bool]:
    """A table of entries (nested values as JSON); at most TABLE_ROW_LIMIT rows."""
    rows: list[Mapping[str, Any]] = []
    more = False
    for entry in entries:
        if len(rows) >= TABLE_ROW_LIMIT:
            more = True
            break
        rows.append(entry)
    columns: list[str] = []
    for row in rows:
        for name in row:
            if name not in columns:
                columns.append(name)
    from rich.table import Table

    table = Table(show_lines=False)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(name, _MISSING)) for name in columns))
    return table, len(rows), more


_MISSING = object()


def _cell(value: Any) -> str:
    if value is _MISSING:
        return ""
    if isinstance(value, str):
        return value
    return codec.dumps(value).decode()
