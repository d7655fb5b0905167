"""Rendering for the CLI: messages to stderr, data to stdout, rich only on a terminal.

Everything is written through an ``Output`` bound to one ``Environment`` (its streams, their
terminal flags, its clock and environment variables), never to ``sys.std*`` directly.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

import orjson

from s3idx import codec
from s3idx.config import (
    progress_interval,
    redact,
)
from s3idx.engine.events import Events
from s3idx.environment import Environment
from s3idx.errors import UNDECODABLE_ADVICE, shorten_key
from s3idx.query.paths import split_path
from s3idx.text import plural, shown_text

if TYPE_CHECKING:  # rich is imported only when a terminal needs it: cron never pays for it
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # The result types are imported by the commands that make them, not by a query.
    from s3idx.engine.results import (
        DeleteResult,
        MaggmaObjects,
        PutResult,
        RebuildResult,
        ReindexResult,
        Reject,
        SyncResult,
        VerifyResult,
    )

TABLE_ROW_LIMIT = 1000


class Output:
    """How a command talks to its user, through one ``Environment``: messages and summaries to
    stderr, data and the ``--json`` document to stdout, rich only where a stream is a terminal.
    """

    def __init__(self, env: Environment) -> None:
        self.env = env
        self._json_written = False

    def stderr_console(self) -> Console:
        from rich.console import Console

        return Console(file=self.env.stderr, highlight=False, soft_wrap=True, **self._styles())

    def stdout_console(self) -> Console:
        from rich.console import Console

        return Console(file=self.env.stdout, highlight=False, **self._styles())

    def _styles(self) -> dict[str, Any]:
        # NO_COLOR (no-color.org), read from the Environment: rich alone drops colours but keeps
        # bold and dim; with no colour system it writes no style codes at all.
        return {"color_system": None} if self.env.environ.get("NO_COLOR") else {}

    def echo(self, text: str) -> None:
        """One line of data on stdout."""
        self.env.stdout.write(f"{text}\n")
        self.env.stdout.flush()

    def message(self, text: str) -> None:
        """One line to stderr, prefixed with the program name; never holds a password."""
        self.env.stderr.write(f"s3idx: {redact(text)}\n")
        self.env.stderr.flush()

    def error(self, text: str, hint: str | None = None) -> None:
        self.message(f"error: {text}")
        if hint:
            self.env.stderr.write(f"  hint: {redact(hint)}\n")
            self.env.stderr.flush()

    def summary(self, text: str) -> None:
        """A command's last line; timestamped off a terminal, where it usually lands in a log."""
        if self.env.stderr_isatty:
            self.message(text)
        else:
            self.env.stderr.write(f"{timestamp()} s3idx: {redact(text)}\n")
            self.env.stderr.flush()

    def write_json(self, value: Mapping[str, Any]) -> None:
        """The one JSON document of a command's ``--json`` output."""
        self._json_written = True
        self.env.stdout.flush()  # text written before goes first
        self.env.stdout_binary.write(json_document(value))
        self.env.stdout_binary.flush()

    @property
    def json_written(self) -> bool:
        return self._json_written

    def progress_interval(self) -> float:
        """Seconds between progress lines off a terminal: S3IDX_PROGRESS_INTERVAL, else 60
        (a bad value is refused when the command's settings are resolved)."""
        return progress_interval(self.env.environ)


def json_line(value: Any) -> bytes:
    return codec.dumps(value) + b"\n"


def json_document(value: Mapping[str, Any]) -> bytes:
    return orjson.dumps(redact_mapping(value)) + b"\n"


def redact_mapping(value: Any) -> Any:
    if isinstance(value, str):
        return redact(shown_text(value))
    if isinstance(value, dict):
        return {k: redact_mapping(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_mapping(v) for v in value]
    return value


# --- summaries ------------------------------------------------------------------------------------


def rate_text(count: int, elapsed: float, unit: str) -> str:
    """`` (1850 docs/s)`` over the work actually done; nothing when none was done."""
    per_second = work_rate(count, elapsed)
    return f" ({number(per_second)} {unit}/s)" if per_second is not None else ""


def put_summary(result: PutResult) -> str:
    verb = "would store" if result.dry_run else "stored"
    parts = [f"{result.stored} {verb}"]
    if result.unchanged:
        everything = result.unchanged == result.read and not result.stored
        parts.append(
            f"all {result.unchanged} unchanged" if everything else f"{result.unchanged} unchanged"
        )
    parts.append(f"{result.rejected} rejected")
    if result.duplicates:
        parts.append(f"{plural(result.duplicates, 'duplicate key')} (last one kept)")
    if result.shard is not None:
        parts.append(f"{result.other_shards} of other shards")
    command = "put" if result.shard is None else f"put (shard {result.shard})"
    line = f"{command}: {result.read} read, " + ", ".join(parts)
    if result.retries:
        line += f", {plural(result.retries, 'retry', 'retries')}"
    line += f" in {result.elapsed:.2f} s" + rate_text(result.stored, result.elapsed, "docs")
    if result.stopped_early:
        line += "; stopped early at --max-errors"
    if result.interrupted:
        line += "; interrupted"
    if result.reconciled:
        written = plural(result.reconciled, "key")
        line += f"; {written} also written by another writer (indexed as the bucket holds)"
    if result.not_indexed:
        line += f"; {plural(result.not_indexed, 'stored object')} not indexed (run s3idx sync)"
    if result.unstored:
        line += f"; {result.unstored} not stored (run the same put again)"
    return line + _not_in_manifests(result.not_in_manifests, "stored object")


# Keys a command names on stderr, one line each, before a count of the rest; --json names up to
# REPORTED_KEYS_LIMIT (10,000).
NAMED_ON_STDERR = 20
UNSTORED_SHOWN = NAMED_ON_STDERR  # documents a failed put names on stderr


def unstored_lines(result: PutResult) -> list[str]:
    """``not stored: KEY: why`` for the first documents a put did not store, then a count:
    the uploads that failed first, then those never started."""
    from s3idx.engine.results import NOT_SENT, NOT_UPLOADED

    named = sorted(result.unstored_keys, key=lambda item: item[1] in (NOT_UPLOADED, NOT_SENT))
    lines = [f"not stored: {shorten_key(key)}: {reason}" for key, reason in named[:UNSTORED_SHOWN]]
    more = result.unstored - len(lines)
    if more > 0:
        lines.append(f"… and {more} more not stored (--json names up to 10,000)")
    return lines


def contended_lines(label: str, count: int, keys: Sequence[str]) -> list[str]:
    """``LABEL: KEY: why`` for the first keys reconcile gave up on (other writers kept changing
    their entries), then a count of the rest."""
    from s3idx.engine.results import CONTENDED_REASON

    lines = [f"{label}: {shorten_key(key)}: {CONTENDED_REASON}" for key in keys[:NAMED_ON_STDERR]]
    more = count - len(lines)
    if more > 0:
        lines.append(f"… and {more} more {label} (--json names up to 10,000)")
    return lines


def _contended(count: int, again: str = "") -> str:
    if not count:
        return ""
    keys = plural(count, "key")
    return f"; {keys} other writers kept changing, not settled (run s3idx sync{again})"


def rebuild_summary(result: RebuildResult) -> str:
    skipped = result.skipped
    line = (
        f"rebuild-index: {result.listed} listed, {result.written} written, "
        f"{plural(skipped.not_s3idx, 'not s3idx object')}, {skipped.undecodable} undecodable"
    )
    if skipped.undecodable:
        line += f" (cannot be indexed: {UNDECODABLE_ADVICE})"
    if skipped.vanished:
        line += f", {skipped.vanished} vanished while listing"
    line += _maggma(result.maggma, ", ")
    if result.retries:
        line += f", {plural(result.retries, 'retry', 'retries')}"
    listed_now = result.listed - result.listed_before
    line += f" in {result.elapsed:.2f} s" + rate_text(listed_now, result.elapsed, "objects")
    line += (
        f"; {result.from_manifests} from {plural(result.manifests_read, 'manifest')}, "
        f"{plural(result.heads, 'HEAD')}, {plural(result.requests, 'request')}"
    )
    if result.manifests_written or result.manifests_removed:
        line += (
            f"; compacted into {plural(result.manifests_written, 'manifest')} "
            f"({result.manifests_removed} replaced)"
        )
    if result.deletes_finished:
        line += f"; {plural(result.deletes_finished, 'document')} deleted finishing deletes"
    if result.resumed:
        line += "; resumed"
    if result.rechecked or result.recheck_dropped:
        line += (
            f"; done before, listed again: {result.rechecked}, "
            f"{result.recheck_dropped} dropped (gone or no entry now), "
            f"{result.recheck_refreshed} read again (changed or new)"
        )
    if result.pending_fields:
        lacking = ", ".join(f"{f} ({n})" for f, n in result.pending_fields.items())
        line += f"; objects lacking fields: {lacking}: run `s3idx reindex` to backfill them"
    line += _contended(result.contended)
    if result.shard is not None:
        return line + _shard_outcome(result)
    if not result.committed:
        line += "; not swapped in"
    return line


def _shard_outcome(result: RebuildResult) -> str:
    """What a shard's run did to the whole rebuild: its own counts are the line before."""
    count = int(result.shard.split("/")[1]) if result.shard else 0
    done = len(result.shards_done)
    text = f"; shard {result.shard} ({result.other_shards} listed objects of other shards)"
    if result.committed:
        return text + (
            f"; last of {count} shards: swapped in, the index holds "
            f"{plural(result.total_entries, 'entry', 'entries')}"
        )
    if result.interrupted:
        return text + "; not done"
    if done < count:
        waiting = ", ".join(str(s) for s in range(count) if s not in result.shards_done)
        return text + (
            f"; {done} of {count} shards done, waiting for {waiting}: the last one to finish "
            "swaps the index in"
        )
    return text + "; every shard done, another one swaps the index in"


def reindex_summary(result: ReindexResult) -> str:
    verb = "would update" if result.dry_run else "updated"
    line = (
        f"reindex: {result.listed} listed, {result.updated} {verb}, "
        f"{result.up_to_date} up to date, {result.failed} failed"
    )
    if result.not_s3idx:
        line += f", {result.not_s3idx} not s3idx objects"
    if result.vanished:
        line += f", {result.vanished} vanished while listing"
    if result.reconciled:
        line += f", {result.reconciled} reconciled with other writers"
    if result.retries:
        line += f", {plural(result.retries, 'retry', 'retries')}"
    line += f" in {result.elapsed:.2f} s" + rate_text(result.listed, result.elapsed, "objects")
    if result.completed:
        line += f"; now complete: {', '.join(result.completed)}"
    if result.pending_again:
        them = "it" if len(result.pending_again) == 1 else "them"
        line += (
            f"; still pending: {', '.join(result.pending_again)} (documents were stored "
            f"without {them} while this ran: run reindex again)"
        )
    elif result.pending and not result.completed and not result.dry_run:
        line += f"; still pending: {', '.join(result.pending)}"
    return line + _not_in_manifests(result.not_in_manifests, "updated object")


def _not_in_manifests(count: int, what: str) -> str:
    if not count:
        return ""
    return f"; {plural(count, what)} in no manifest (a later rebuild-index HEADs them)"


def _unread(count: int, denied: int, left: str, command: str) -> str:
    """A summary's clause for the objects a scan could not read: ``denied`` of them refused
    to these credentials (running again will not help), the others failed by the store."""
    why = [left]
    if denied:
        why.append(f"{denied} denied access")
    if denied < count:
        why.append(f"run {command} again")
    return f"; {plural(count, 'object')} could not be read ({'; '.join(why)})"


def sync_summary(result: SyncResult) -> str:
    command = "sync" if result.shard is None else f"sync (shard {result.shard})"
    line = (
        f"{command}: {plural(result.listed, 'object')}, "
        f"{plural(result.indexed, 'entry', 'entries')}; "
        f"drift: {result.bucket_only} bucket-only, {result.index_only} index-only, "
        f"{result.changed} changed"
    )
    if result.interrupted_deletes:
        line += f", {plural(result.interrupted_deletes, 'interrupted delete')}"
        if not (result.check or result.dry_run):
            line += " (finished)"
    if result.interrupted_puts:
        line += f", {plural(result.interrupted_puts, 'interrupted put')}"
        if not (result.check or result.dry_run):
            line += " (set from the bucket)"
    if result.puts_in_progress:
        # Not drift: a put still running journaled them, and clears them itself.
        keys = plural(result.puts_in_progress, "key")
        line += f"; {keys} of puts in progress left alone"
    if not (result.check or result.dry_run):
        line += f"; added {result.added}, updated {result.updated}, removed {result.removed}"
        if result.reconciled:
            line += f", {result.reconciled} reconciled with other writers"
        if not result.prune and result.index_only:
            stale = plural(result.index_only, "stale entry", "stale entries")
            line += f", kept {stale} (--no-prune)"
        line += _contended(result.contended, " again")
    skipped = result.skipped
    if skipped.not_s3idx:
        foreign = plural(skipped.not_s3idx, "object")
        line += f"; foreign: {foreign} not written by s3idx (ignored)"
    if skipped.undecodable:
        line += (
            f"; {plural(skipped.undecodable, 'object')} with undecodable metadata "
            f"(cannot be indexed: {UNDECODABLE_ADVICE})"
        )
    line += _maggma(result.maggma, "; ")
    if result.unavailable:
        line += _unread(result.unavailable, result.denied, "left as indexed", "sync")
    if result.retries:
        line += f"; {plural(result.retries, 'retry', 'retries')}"
    line += f" in {result.elapsed:.2f} s"
    if result.interrupted:
        line += "; interrupted"
    if result.pending_fields:
        lacking = ", ".join(f"{f} ({n})" for f, n in result.pending_fields.items())
        line += f"; adopted objects lacking fields: {lacking}: run `s3idx reindex`"
    if result.manifests_written or result.manifests_removed:
        line += (
            f"; {plural(result.manifests_written, 'manifest')} written, "
            f"{result.manifests_removed} replaced"
        )
    return line + _not_in_manifests(result.not_in_manifests, "HEADed object")


def delete_summary(result: DeleteResult) -> str:
    verb = "would delete" if result.dry_run else "deleted"
    count = len(result.would_delete) if result.dry_run else result.deleted
    line = f"delete: {verb} {plural(count, 'document')}"
    if result.missing:
        line += f", {len(result.missing)} not found"
    if result.failed:
        line += f", {len(result.failed)} failed"
    if result.rewritten:
        line += f", {result.rewritten} skipped (changed since indexed)"
    if result.finished:
        line += f"; {plural(result.finished, 'document')} finished from an interrupted delete"
    return line + _contended(result.contended)


def verify_summary(result: VerifyResult) -> str:
    sampled = f" (a {result.sample:g} sample)" if result.sample < 1 else ""
    line = (
        f"verify: {plural(result.listed, 'object')}, {plural(result.indexed, 'entry', 'entries')}; "
        f"checked {result.checked}"
        f"{sampled}: {result.ok} sound, {result.damaged} damaged"
    )
    if result.undecodable:
        line += f" ({result.undecodable} with undecodable metadata)"
    line += (
        f"; drift: {result.bucket_only} bucket-only, {result.index_only} index-only, "
        f"{result.changed} changed"
    )
    if result.interrupted_deletes:
        interrupted = plural(result.interrupted_deletes, "interrupted delete")
        line += f", {interrupted} (run s3idx sync)"
    if result.interrupted_puts:
        line += f", {plural(result.interrupted_puts, 'interrupted put')} (run s3idx sync)"
    if result.puts_in_progress:
        line += f"; {plural(result.puts_in_progress, 'key')} of puts in progress"
    if result.not_s3idx:
        line += f"; {result.not_s3idx} not s3idx objects (not checked)"
    if result.unavailable:
        line += _unread(result.unavailable, result.denied, "not checked", "verify")
    if result.retries:
        line += f"; {plural(result.retries, 'retry', 'retries')}"
    line += f" in {result.elapsed:.2f} s"
    if result.interrupted:
        line += "; interrupted"
    return line


def _maggma(maggma: MaggmaObjects, separator: str) -> str:
    """Said only when maggma's objects were met, so s3idx-only runs read as before."""
    if not (maggma.indexed or maggma.rewritten or maggma.rewrite_failed or maggma.rewrite_skipped):
        return ""
    text = f"{separator}{plural(maggma.indexed, 'maggma object')}"
    if maggma.rewritten or maggma.rewrite_failed or maggma.rewrite_skipped:
        text += f" ({maggma.rewritten} rewritten, {maggma.rewrite_failed} not rewritten"
        if maggma.rewrite_skipped:
            text += f", {maggma.rewrite_skipped} changed meanwhile by another writer, kept"
        text += ")"
    return text


def summary_line(result: object) -> str:
    from s3idx.engine.results import (
        DeleteResult,
        PutResult,
        RebuildResult,
        ReindexResult,
        SyncResult,
        VerifyResult,
    )

    if isinstance(result, PutResult):
        return put_summary(result)
    if isinstance(result, RebuildResult):
        return rebuild_summary(result)
    if isinstance(result, SyncResult):
        return sync_summary(result)
    if isinstance(result, DeleteResult):
        return delete_summary(result)
    if isinstance(result, ReindexResult):
        return reindex_summary(result)
    if isinstance(result, VerifyResult):
        return verify_summary(result)
    raise TypeError(type(result).__name__)


# --- progress --------------------------------------------------------------------------------

DRAW_PERIOD = 0.1  # a terminal bar is redrawn at most this often


def timestamp(when: float | None = None) -> str:
    """UTC, to the second, as logs are read: ``2026-11-30T01:02:03Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def work_rate(count: int, elapsed: float) -> float | None:
    """Units per second over the work done; None when nothing was done (no "0/s")."""
    if count <= 0 or elapsed <= 0:
        return None
    return count / elapsed


def eta_seconds(fraction: float | None, elapsed: float) -> float | None:
    """Seconds left at the pace so far, once some of a known whole is done."""
    if fraction is None or not 0 < fraction <= 1 or elapsed <= 0:
        return None
    return elapsed * (1 - fraction) / fraction


def duration(seconds: float) -> str:
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def number(value: float) -> str:
    """A rate as people read it: 1850, 12.5, 0.3."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


class ProgressMeter:
    """What one command has counted so far, with its rate and ETA, as one line of text.

    ``unit`` is what the command counts (documents, objects); ``fraction`` of the whole work
    comes from ``done / total`` when the total is known, or from the engine's own estimate
    (put: the share of the input read and stored).
    """

    def __init__(
        self, command: str, unit: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.command = command
        self.unit = unit
        self._clock = clock
        self._started = clock()
        self.done = 0
        self.total: int | None = None
        self.detail: dict[str, int] = {}
        self.input_fraction: float | None = None

    def update(
        self,
        done: int,
        total: int | None,
        detail: Mapping[str, int],
        input_fraction: float | None = None,
    ) -> None:
        self.done, self.total, self.detail = done, total, dict(detail)
        self.input_fraction = input_fraction

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    @property
    def fraction(self) -> float | None:
        if self.input_fraction is not None:
            return min(max(self.input_fraction, 0.0), 1.0)
        if self.total:
            return min(self.done / self.total, 1.0)
        return None

    def text(self) -> str:
        """``120000 documents (118000 stored), 1850/s, 64% of input, ETA 00:01:10``"""
        elapsed = self.elapsed
        counted = f"{self.done} of {self.total}" if self.total is not None else f"{self.done}"
        one = (self.total if self.total is not None else self.done) == 1
        parts = [f"{counted} {self.unit.removesuffix('s') if one else self.unit}"]
        shown = [f"{v} {k}" for k, v in self.detail.items()]
        if shown:
            parts[0] += f" ({', '.join(shown)})"
        per_second = work_rate(self.done, elapsed)
        if per_second is not None:
            parts.append(f"{number(per_second)}/s")
        fraction = self.fraction
        if fraction is not None:
            share = f"{math.floor(fraction * 100)}%"
            parts.append(f"{share} of input" if self.input_fraction is not None else share)
            left = eta_seconds(fraction, elapsed)
            if left is not None and fraction < 1:
                parts.append(f"ETA {duration(left)}")
        return ", ".join(parts)

    def line(self) -> str:
        return f"{self.command}: {self.text()}"


class TerminalProgress:
    """A live bar on a terminal: what is counted, the rate, and the ETA when the total is known."""

    STEPS = 1000  # the bar's resolution when only a fraction is known

    def __init__(self, meter: ProgressMeter, console: Console) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.meter = meter
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[text]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task(meter.command, total=None, text="")

    @property
    def console(self) -> Console:
        return self._progress.console

    def start(self) -> None:
        self._progress.start()

    def stop(self) -> None:
        self._progress.stop()

    def show(self) -> None:
        fraction = self.meter.fraction
        completed = round(fraction * self.STEPS) if fraction is not None else 0
        total = self.STEPS if fraction is not None else None
        self._progress.update(self._task, completed=completed, total=total, text=self.meter.text())

    def refresh(self) -> None:
        self._progress.refresh()


class ProgressLines:
    """Off a terminal (logs, cron): a timestamped line every ``interval`` seconds."""

    def __init__(
        self,
        meter: ProgressMeter,
        stream: IO[str],
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.meter = meter
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._last = clock()

    def show(self) -> None:
        now = self._clock()
        if now - self._last < self._interval:
            return
        self._last = now
        self._stream.write(f"{timestamp()} s3idx: {self.meter.line()}\n")
        self._stream.flush()


class CliEvents(Events):
    """Reports rejects on stderr (and into the rejects file) and shows progress on stderr.

    With ``show_progress``: a live bar when stderr is a terminal, else a timestamped line every
    S3IDX_PROGRESS_INTERVAL seconds. Never anything on stdout.
    """

    def __init__(
        self,
        out: Output,
        *,
        rejects: IO[bytes] | None,
        show_progress: bool,
        command: str,
        unit: str = "documents",
    ) -> None:
        self.out = out
        self._rejects = rejects
        self._clock = out.env.clock
        self.meter = ProgressMeter(command, unit, clock=self._clock)
        self._bar: TerminalProgress | None = None
        self._lines: ProgressLines | None = None
        self._last_draw = 0.0
        if show_progress and out.env.stderr_isatty:
            self._bar = TerminalProgress(self.meter, out.stderr_console())
        elif show_progress:
            interval = out.progress_interval()
            self._lines = ProgressLines(self.meter, out.env.stderr, interval, self._clock)

    def __enter__(self) -> CliEvents:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def say(self, text: str) -> None:
        """A message line on stderr that does not tear the progress bar."""
        if self._bar is not None:
            self._bar.console.print(f"s3idx: {redact(text)}", markup=False)
        else:
            self.out.message(text)

    def warned(self, message: str) -> None:
        self.say(f"warning: {message}")

    def rejected(self, reject: Reject) -> None:
        self.say(f"{reject.location}: {reject.reason}")
        # A reject without bytes (gzip data that stopped before a line began) has no line to
        # fix: an empty line would look like one. Its message says so instead.
        if self._rejects is not None and reject.raw:
            # Each line as read, its own line end included; a last line that had none gets one,
            # so the next reject starts a line of its own.
            ended = reject.whole_input or reject.raw.endswith(b"\n")
            self._rejects.write(reject.raw if ended else reject.raw + b"\n")

    def progress(
        self,
        done: int,
        total: int | None,
        detail: dict[str, int],
        *,
        input_fraction: float | None = None,
    ) -> None:
        self.meter.update(done, total, detail, input_fraction)
        if self._lines is not None:
            self._lines.show()
        if self._bar is not None:
            now = self._clock()
            if now - self._last_draw < DRAW_PERIOD and (total is None or done < total):
                return
            self._last_draw = now
            self._bar.show()


# --- tables ----------------------------------------------------------------------------------


def in_field_order(entry: Mapping[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """The entry's top-level fields in the order ``order``'s paths name them, then the rest."""
    tops = dict.fromkeys(split_path(path)[0] for path in order)
    ordered = {name: entry[name] for name in tops if name in entry}
    ordered.update((name, value) for name, value in entry.items() if name not in ordered)
    return ordered


def entries_table(
    entries: Iterable[Mapping[str, Any]], columns: Sequence[str] = ()
) -> tuple[Table, int, bool]:
    """A table of entries (nested values as JSON); at most TABLE_ROW_LIMIT rows.

    Columns come in the order of ``columns`` (paths: their first name counts), then as met.
    """
    rows: list[Mapping[str, Any]] = []
    more = False
    for entry in entries:
        if len(rows) >= TABLE_ROW_LIMIT:
            more = True
            break
        rows.append(entry)
    names: list[str] = []
    for row in rows:
        for name in row:
            if name not in names:
                names.append(name)
    wanted = [n for n in dict.fromkeys(split_path(c)[0] for c in columns) if n in names]
    names = wanted + [n for n in names if n not in wanted]
    from rich.table import Table

    table = Table(show_lines=False)
    for name in names:
        table.add_column(_as_text(name), overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(name, _MISSING)) for name in names))
    return table, len(rows), more


_MISSING = object()


# Characters a terminal acts on rather than shows: C0 and C1 controls and DEL (ESC starts
# sequences that recolour, retitle or rewrite the screen) and the bidirectional overrides and
# line separators, which reorder or break what is around them.
# Compiled when a table first shows text, not by every command (start-up time, issue 17).
@functools.cache
def _terminal_acts_on() -> re.Pattern[str]:
    return re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _as_text(value: str) -> Text:
    """``value`` as a table shows it: never read as rich markup (a document's ``[/x]`` is
    text), and the characters a terminal would act on written as JSON escapes."""
    from rich.text import Text

    shown = _terminal_acts_on().sub(
        lambda m: _SHORT_ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), value
    )
    return Text(shown)


def _cell(value: Any) -> Text:
    if value is _MISSING:
        return _as_text("")
    if isinstance(value, str):
        return _as_text(value)
    return _as_text(codec.dumps(value).decode())
