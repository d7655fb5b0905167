"""``put --processes N``: one input split over N worker processes by the hash of each key.

One Python process is capped by its GIL (near 6,800 documents a second with obstore), so a
machine with more cores needs more processes. Here the parent reads the input, finds each
record's key (the same rules as ``DocumentPreparer``) and sends the raw line, with its
``FILE:LINE``, to worker ``shard_of(key, N)``; each worker runs the ordinary put pipeline
(``run_put``) on its share and reports its rejects and counts back; the parent merges them into
one ``PutResult``.

Why this is correct:

- every line of one key goes to the same worker, in input order, so the last one still wins;
- a worker's duplicates are the key's only duplicates (keys are partitioned), so counts add up;
- the index settings are recorded once, by the parent, before any line is read;
- each worker writes entries object first and by compare-and-set, as a lone ``put`` does.

Workers are started with ``spawn`` (no inherited threads, locks or sockets) and fed through
pipes, whose bounded buffers make a slow worker slow the reader: memory stays bounded. Workers
ignore SIGINT, SIGTERM and SIGHUP: the parent turns its first signal into a stop request for all of
them (each finishes what it has under way), and a worker that dies makes the run fail.
Rejects are reported at the end of the run, in input order (workers report theirs with the
original ``FILE:LINE``); the parent holds them until then, their raw lines in a temporary file.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from multiprocessing import reduction, resource_tracker, spawn, util
from multiprocessing.connection import Connection, wait
from typing import IO, Any

import orjson

from s3idx.config import Settings
from s3idx.engine.documents import document_key
from s3idx.engine.inputs import InputSource, ReadProgress, Record, read_records
from s3idx.engine.put import PutOptions, _ProgressReporter, run_put
from s3idx.engine.results import REPORTED_KEYS_LIMIT, Events, PutResult, Reject
from s3idx.errors import (
    ExitStatus,
    OutputError,
    RecordError,
    S3idxError,
    reject_reason,
    system_limit,
)
from s3idx.sharding import Shard, shard_of

# Lines a message to a worker carries: large enough that pickling and the pipe cost little
# per line, small enough that the pipes' buffers stay a few MB in all.
BATCH_LINES = 256
# The parent hands partial batches on when the input has been idle this long (slow input).
IDLE_SECONDS = 0.2
TICK = 0.1
# How long reading may go on after a stop before the run ends without it.
ABANDON_SECONDS = 0.5


class WorkerError(S3idxError):
    """A worker process failed; carries the exit status its failure had."""

    def __init__(self, message: str, status: ExitStatus, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_status = status


@dataclass(slots=True)
class _Worker:
    number: int
    process: Any  # multiprocessing's SpawnProcess
    lines: Connection  # parent → worker: batches of (source, line, raw, line as read or None)
    reports: Connection  # worker → parent: rejects, progress, the final result
    control: Connection  # parent → worker: a stop request
    pending: list[tuple[str, int, bytes, bytes | None]] = field(default_factory=list)
    closed: bool = False  # its lines pipe: no more will be sent
    result: PutResult | None = None
    failure: S3idxError | None = None
    detail: dict[str, int] = field(default_factory=dict)
    finished: bool = False  # its reports pipe reached its end
    routed: int = 0  # lines the parent handed it (its "read", should it die without a result)


def run_put_processes(
    settings: Settings,
    sources: Sequence[InputSource],
    options: PutOptions,
    count: int,
    events: Events,
    stop: threading.Event | None = None,
    read_progress: ReadProgress | None = None,
    shard: Shard | None = None,
    when_ready: Callable[[], object] | None = None,
) -> PutResult:
    """Put the records of ``sources`` with ``count`` worker processes (see the module's
    docstring); ``stop`` set ends reading, and the workers finish what they were handed.
    With ``shard``, the parent drops the keys of other shards before routing the rest.
    ``when_ready`` is called once every worker has opened its store and index, before the
    first line is read; a worker that cannot open them fails the run first, as one process
    fails, with nothing read."""
    started = time.monotonic()
    progress = read_progress or ReadProgress()
    run = _Run(settings, options, count, events, stop, progress, shard)
    try:
        run.start()
        failure = run.await_ready()
        if failure is not None:
            raise failure
        if when_ready is not None:
            when_ready()
        # Reading also ends when a worker fails or --max-errors is reached, not only on a stop.
        run.feed(read_records(sources, progress, run.halt))
        result = run.finish()
    finally:
        run.cleanup()
    result.elapsed = time.monotonic() - started
    if run.failure is not None:
        run.failure.partial_result = result
        raise run.failure
    return result


class _Run:
    def __init__(
        self,
        settings: Settings,
        options: PutOptions,
        count: int,
        events: Events,
        stop: threading.Event | None,
        read_progress: ReadProgress | None,
        shard: Shard | None = None,
    ) -> None:
        self._settings = settings
        self._shard = shard
        self._options = options
        self._count = count
        self._events = events
        self._stop = stop
        self._context = multiprocessing.get_context("spawn")
        self._stopping = False  # the workers were told to stop
        self._control_lock = threading.Lock()
        self.halt = threading.Event()  # reading ends: a signal, a failure, --max-errors
        self._lock = threading.Lock()  # the workers' pending batches and their pipes
        # Apart: the collector must never wait for a sender, which may wait for the workers.
        self._rejects_lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._order: dict[str, int] = {}  # input name → its place among the inputs
        self._rejects = _HeldRejects()
        self._own = PutResult(dry_run=options.dry_run)  # what the parent itself counted
        self._live = PutResult(dry_run=options.dry_run)  # for progress while running
        self._reporter = _ProgressReporter(events, self._live, read_progress)
        self._last_routed = 0.0
        self.failure: S3idxError | None = None
        self._stopped_early = False

    # --- workers -------------------------------------------------------------------------------

    def start(self) -> None:
        # Started now, before the workers: starting it unblocks SIGINT and SIGTERM on its way
        # out, which inside ``_stop_signals_ignored_by_children`` would let a worker start
        # unprotected (spawn starts it with the first worker otherwise). POSIX only: Windows
        # has no tracker process.
        if os.name == "posix":
            resource_tracker.ensure_running()
        for number in range(self._count):
            lines_in, lines_out = self._context.Pipe(duplex=False)  # (reading, writing) ends
            reports_in, reports_out = self._context.Pipe(duplex=False)
            control_in, control_out = self._context.Pipe(duplex=False)
            process = (_WorkerProcess if os.name == "posix" else self._context.Process)(
                target=_worker_main,
                args=(self._settings, self._options, lines_in, reports_out, control_in),
                name=f"s3idx-put-{number + 1}",
                daemon=True,
            )
            with _stop_signals_ignored_by_children():
                process.start()
            # Only the worker holds these ends now, so its exit reads as the pipes' end.
            lines_in.close()
            reports_out.close()
            control_in.close()
            self._workers.append(_Worker(number, process, lines_out, reports_in, control_out))

    def await_ready(self) -> S3idxError | None:
        """Wait until every worker has opened its store and index, or one could not, or a stop
        was asked for; the failure of a worker that could not, if one could not."""
        waiting = {worker.reports: worker for worker in self._workers}
        while waiting and not self.halt.is_set():
            self._propagate_stop()
            for connection in wait(list(waiting), timeout=TICK):
                assert isinstance(connection, Connection)
                worker = waiting.pop(connection)
                try:
                    message = connection.recv()
                except (EOFError, OSError):
                    worker.failure = _died(worker, self._count, starting=True)
                    return worker.failure
                if message[0] != "ready":
                    self._take(worker, message)  # "failed": it stops the others
                    if worker.failure is not None and worker.result is not None:
                        # Its store opened, then refused writes: a put's summary, as in one
                        # process (nothing read; the retries made).
                        worker.failure.partial_result = self.merged()
                    return worker.failure
        if waiting:  # a stop came first
            self._end_unstarted(list(waiting.values()))
        return None

    def _end_unstarted(self, workers: list[_Worker]) -> None:
        """End workers that are still starting (importing, opening the store and the index):
        they were handed nothing and have nothing to finish, but one that hangs there (a stalled
        file system or server) would hold the stop for ever. Each counts as an empty share."""
        for worker in workers:
            worker.process.kill()
        for worker in workers:
            worker.process.join()
            worker.result = PutResult(dry_run=self._options.dry_run)

    def feed(self, records: Iterable[Record]) -> None:
        """Read and route every record; meanwhile collect reports and show progress."""
        reader = threading.Thread(
            target=self._read, args=(records,), name="s3idx-route", daemon=True
        )
        collector = threading.Thread(target=self._collect, name="s3idx-reports", daemon=True)
        collector.start()
        reader.start()
        self._collector = collector
        halted = None
        while reader.is_alive():
            reader.join(TICK)
            self._tick()
            if self.halt.is_set():
                halted = halted or time.monotonic()
                if time.monotonic() - halted >= ABANDON_SECONDS:
                    # Still reading after the stop: blocked on input that may never come (a
                    # named pipe nobody opened for writing). Left behind, a daemon, as one
                    # process leaves its reader; it ends at its next record, seeing the halt.
                    break
        self._close_lines()

    def finish(self) -> PutResult:
        while self._collector.is_alive():
            self._collector.join(TICK)
            self._tick()
        for worker in self._workers:
            worker.process.join()
            if worker.result is None and worker.failure is None:
                worker.failure = _died(worker, self._count)
            if worker.failure is not None and self.failure is None:
                self.failure = worker.failure
        result = self.merged()
        try:
            for reject in self._rejects.in_order():
                self._events.rejected(reject)
        except S3idxError as exc:  # --rejects cannot be written (a full disk): the counts stand
            exc.partial_result = result
            raise
        return result

    def cleanup(self) -> None:
        """On any way out: no worker left running, no pipe left open."""
        self.halt.set()
        self._stop_workers()
        self._close_lines()
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.reports.close()
            worker.control.close()
        self._rejects.close()

    # --- the reader thread: input to the workers' pipes ----------------------------------------

    def _read(self, records: Iterable[Record]) -> None:
        key_field = self._options.key_field
        order = self._order
        halt = self.halt
        shard = self._shard
        try:
            for record in self._until_unreadable(records):
                if halt.is_set():
                    break
                if record.source not in order:
                    order[record.source] = len(order)
                try:
                    if record.error is not None:
                        raise RecordError(record.error)
                    key = document_key(record.document, key_field)
                except RecordError as exc:
                    # A line that cannot be routed belongs to shard 0, as in one process.
                    if shard is not None and shard.index != 0:
                        self._count_other_shard()
                    else:
                        self._reject(record, reject_reason(exc))
                    continue
                if shard is not None and not shard.owns(key):
                    self._count_other_shard()
                    continue
                worker = self._workers[self._route(key)]
                with self._lock:
                    worker.routed += 1
                    worker.pending.append((record.source, record.line, record.raw, record.read))
                    if len(worker.pending) >= BATCH_LINES:
                        self._send(worker)
                    self._last_routed = time.monotonic()
        except BaseException as exc:  # e.g. an input file that cannot be read
            if isinstance(exc, S3idxError):
                self._fail(exc)
            else:
                self._fail(system_limit(exc) or _unexpected(exc, "reading"))
        with self._lock:
            for worker in self._workers:
                self._send(worker)

    def _until_unreadable(self, records: Iterable[Record]) -> Iterator[Record]:
        """The records; an input that fails while read ends the input there: the workers
        put what they were handed as at its end, then the run fails with its error."""
        try:
            yield from records
        except S3idxError as exc:
            if self.failure is None:
                self.failure = exc

    def _route(self, key: str) -> int:
        """The worker of a key. Within shard I of N the keys are those with hash = I (mod N),
        so they are split by hash // N: splitting them by hash mod P would put every key of the
        shard in one worker whenever N and P share a factor."""
        if self._shard is None:
            return shard_of(key, self._count)
        return shard_of(key, self._shard.count * self._count) // self._shard.count

    def _count_other_shard(self) -> None:
        # Read, as one process reading the whole input counts it, and left to its own shard.
        with self._rejects_lock:
            self._own.read += 1
            self._own.other_shards += 1

    def _reject(self, record: Record, reason: str) -> None:
        with self._rejects_lock:
            self._own.read += 1
            self._own.rejected += 1
            self._rejects.add(
                (self._order[record.source], record.line),
                Reject(record.location, reason, record.as_read, record.whole_input),
            )
        self._check_budget()

    def _send(self, worker: _Worker) -> None:
        """The worker's pending lines down its pipe (the lock held). A full pipe blocks here:
        that is the back-pressure that keeps a slow worker's backlog bounded."""
        if not worker.pending or worker.closed:
            worker.pending.clear()
            return
        batch, worker.pending = worker.pending, []
        try:
            worker.lines.send(batch)
        except OSError:
            # The worker stopped reading (it failed, died or was stopped): its report says why.
            worker.closed = True
            self.halt.set()

    def _close_lines(self) -> None:
        with self._lock:
            for worker in self._workers:
                if not worker.closed:
                    self._send(worker)
                    worker.closed = True
                    worker.lines.close()

    # --- the collector thread: the workers' reports --------------------------------------------

    def _collect(self) -> None:
        by_connection = {worker.reports: worker for worker in self._workers}
        while by_connection:
            self._propagate_stop()
            for connection in wait(list(by_connection), timeout=TICK):
                assert isinstance(connection, Connection)
                worker = by_connection[connection]
                try:
                    message = connection.recv()
                except (EOFError, OSError):
                    worker.finished = True
                    del by_connection[connection]
                    if worker.result is None and worker.failure is None:
                        self.halt.set()  # it died: stop the others too
                        self._stop_workers()
                    continue
                try:
                    self._take(worker, message)
                except BaseException as exc:  # e.g. rejects that cannot be held
                    # Collecting goes on: a worker whose reports nobody reads would block for
                    # ever, and the run with it. The failure stops the workers and the reading.
                    self._fail(
                        exc if isinstance(exc, S3idxError) else _unexpected(exc, "collecting")
                    )

    def _take(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "reject":
            _, location, reason, raw = message
            source, _, line = location.rpartition(":")
            place = (self._order.get(source, len(self._order)), int(line))
            with self._rejects_lock:
                self._rejects.add(place, Reject(location, reason, raw))
                worker.detail["rejected"] = worker.detail.get("rejected", 0) + 1
            self._check_budget()
        elif kind == "progress":
            rejected = worker.detail.get("rejected", 0)
            worker.detail = dict(message[1])
            worker.detail["rejected"] = max(rejected, worker.detail.get("rejected", 0))
        elif kind == "done":
            worker.result = message[1]
        elif kind == "failed":
            _, status, text, hint, partial = message
            worker.failure = WorkerError(text, ExitStatus(status), hint=hint)
            worker.result = partial if isinstance(partial, PutResult) else None
            self.halt.set()
            self._stop_workers()

    def _stop_workers(self) -> None:
        """Ask every worker to stop: each finishes what it has under way, then reports.

        A message on a pipe of its own, never a shared multiprocessing.Event: setting one
        waits for its waiters to wake, forever if one of them died.
        """
        with self._control_lock:
            if self._stopping:
                return
            self._stopping = True
            for worker in self._workers:
                with contextlib.suppress(OSError):
                    worker.control.send("stop")

    def _propagate_stop(self) -> None:
        if self._stop is not None and self._stop.is_set() and not self._stopping:
            self.halt.set()
            self._stop_workers()

    def _check_budget(self) -> None:
        """--max-errors is one budget for the whole run: once the rejects of the parent and
        every worker reach it, reading stops. The workers are not told to stop: each goes on
        through every line it was handed, so none before the reject that reached the budget is
        dropped (its lines are in input order, and a worker stops at its own Nth reject, which
        no line before that one follows)."""
        limit = self._options.max_errors
        if limit is None or self.halt.is_set():
            return
        rejected = self._own.rejected + sum(w.detail.get("rejected", 0) for w in self._workers)
        if rejected >= limit:
            self._stopped_early = True
            self.halt.set()

    # --- the main thread -------------------------------------------------------------------------

    def _tick(self) -> None:
        self._propagate_stop()
        # The input is idle: what was read must not wait for a full batch. (The lock is busy
        # while the reader waits for a full pipe: then nothing is idle, and progress goes on.)
        if time.monotonic() - self._last_routed >= IDLE_SECONDS and self._lock.acquire(False):
            try:
                for worker in self._workers:
                    self._send(worker)
            finally:
                self._lock.release()
        live = self._live
        stored = "would store" if self._options.dry_run else "stored"
        live.stored = sum(w.detail.get(stored, 0) for w in self._workers)
        live.unchanged = sum(w.detail.get("unchanged", 0) for w in self._workers)
        live.rejected = self._own.rejected + sum(w.detail.get("rejected", 0) for w in self._workers)
        self._reporter.maybe()

    def _fail(self, exc: S3idxError) -> None:
        if self.failure is None:
            self.failure = exc
        self.halt.set()
        self._stop_workers()

    def merged(self) -> PutResult:
        shard = None if self._shard is None else str(self._shard)
        merged = PutResult(dry_run=self._options.dry_run, shard=shard)
        parts = [self._own, *(w.result or self._last_known(w) for w in self._workers)]
        for part in parts:
            for name in _SUMMED:
                setattr(merged, name, getattr(merged, name) + getattr(part, name))
        for part in parts:  # the count is summed above; the keys kept up to the same bound
            room = REPORTED_KEYS_LIMIT - len(merged.unstored_keys)
            merged.unstored_keys.extend(part.unstored_keys[: max(0, room)])
            room = REPORTED_KEYS_LIMIT - len(merged.contended_keys)
            merged.contended_keys.extend(part.contended_keys[: max(0, room)])
        merged.stopped_early = self._stopped_early or any(p.stopped_early for p in parts)
        # Workers told to stop report themselves interrupted; only a signal interrupts the run.
        merged.interrupted = self._stop is not None and self._stop.is_set()
        if merged.interrupted:
            merged.stopped_early = False
        return merged

    def _last_known(self, worker: _Worker) -> PutResult:
        """A worker that died without its result: the lines handed to it were read, and the
        rejects it sent (named on stderr like the others) count. What it stored is unknown:
        the failure's hint says to run sync."""
        known = PutResult(dry_run=self._options.dry_run, read=worker.routed)
        known.rejected = worker.detail.get("rejected", 0)
        return known


class _HeldRejects:
    """Rejects held until the end of the run, to be reported in input order.

    Their raw lines wait in a temporary file, so memory holds only a few small values per
    reject, however long the rejected lines are.
    """

    def __init__(self) -> None:
        self._spool: IO[bytes] | None = None
        # (place, the reject without its bytes, where they start in the spool, their size)
        self._held: list[tuple[tuple[int, int], Reject, int, int]] = []

    def add(self, place: tuple[int, int], reject: Reject) -> None:
        try:
            if self._spool is None:
                self._spool = tempfile.TemporaryFile(prefix="s3idx-rejects-")  # noqa: SIM115 (closed by close)
            offset = self._spool.seek(0, os.SEEK_END)
            self._spool.write(reject.raw)
        except OSError as exc:  # a full TMPDIR: an output of this run that cannot be written
            raise _spool_failed(exc) from None
        self._held.append((place, replace(reject, raw=b""), offset, len(reject.raw)))

    def in_order(self) -> Iterator[Reject]:
        for _, reject, offset, size in sorted(self._held, key=lambda r: r[0]):
            assert self._spool is not None
            try:
                self._spool.seek(offset)
                raw = self._spool.read(size)
            except OSError as exc:
                raise _spool_failed(exc) from None
            yield replace(reject, raw=raw)

    def close(self) -> None:
        if self._spool is not None:
            # Scratch, unnamed: what it still buffers is not needed (a failure said so).
            with contextlib.suppress(OSError):
                self._spool.close()


def _spool_failed(exc: OSError) -> OutputError:
    error = OutputError(f"the temporary file holding the rejects in {tempfile.gettempdir()}", exc)
    error.hint = "free space there, or set TMPDIR to a directory with room"
    return error


_SUMMED = tuple(
    f.name for f in fields(PutResult) if f.type in ("int", int) and f.name not in ("elapsed",)
)


def _died(worker: _Worker, count: int, *, starting: bool = False) -> WorkerError:
    worker.process.join(timeout=1)  # its exit code, now that its pipe has ended
    code = worker.process.exitcode
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited ({code})"
    if starting:  # before it was handed anything
        return WorkerError(
            f"worker process {worker.number + 1} of {count} {how} while starting", ExitStatus.ERROR
        )
    return WorkerError(
        f"worker process {worker.number + 1} of {count} {how} before finishing its share",
        ExitStatus.ERROR,
        hint="documents it had been handed may be stored without index entries, or not at "
        "all: run `s3idx sync`, then put the input again",
    )


def _unexpected(exc: BaseException, doing: str) -> S3idxError:
    return WorkerError(
        f"unexpected error while {doing}: {type(exc).__name__}: {exc}", ExitStatus.ERROR
    )


# --- starting a worker -------------------------------------------------------------------------

# The program a worker's interpreter runs: multiprocessing's own (``spawn_main``), but a worker
# whose parent died before it had sent the worker its start-up data whole exits at once, without
# a word. Reading that data is the worker's first step, before any of s3idx runs, and its
# EOFError (or, the data cut in the middle, UnpicklingError) ended the interpreter with a
# traceback. The parent sends the data at once and holds its end of the pipe until it ends:
# data that ends early means the parent is gone.
_WORKER_START = """\
import pickle, sys
try:
    {}
except (EOFError, pickle.UnpicklingError):
    sys.exit(1)
"""


def _worker_command(**arguments: int) -> list[str]:
    command = spawn.get_command_line(**arguments)
    # [python, *its options, "-c", program, "--multiprocessing-fork"]; frozen, no program
    if len(command) >= 3 and command[-3] == "-c":
        command[-2] = _WORKER_START.format(command[-2])
    return command


if os.name == "posix":
    from multiprocessing.context import SpawnProcess, set_spawning_popen
    from multiprocessing.popen_spawn_posix import Popen as _SpawnPopen

    class _WorkerPopen(_SpawnPopen):
        """multiprocessing's ``spawn`` start (its ``Popen._launch``, the same from Python 3.11 to
        3.13), but for the program the worker's interpreter runs: ``_WORKER_START``."""

        def _launch(self, process_obj: Any) -> None:
            fds: list[int] = self._fds  # type: ignore[attr-defined]  # the worker inherits them
            tracker_fd = resource_tracker.getfd()  # the tracker is running: never None
            assert tracker_fd is not None
            fds.append(tracker_fd)
            data = io.BytesIO()
            set_spawning_popen(self)
            try:
                reduction.dump(spawn.get_preparation_data(process_obj._name), data)
                reduction.dump(process_obj, data)
            finally:
                set_spawning_popen(None)
            parent_r = child_w = child_r = parent_w = None
            try:
                parent_r, child_w = os.pipe()
                child_r, parent_w = os.pipe()
                command = _worker_command(tracker_fd=tracker_fd, pipe_handle=child_r)
                fds.extend([child_r, child_w])
                executable = os.fsencode(spawn.get_executable())
                self.pid = util.spawnv_passfds(executable, command, fds)
                self.sentinel = parent_r
                unsent = data.getbuffer()
                while unsent:
                    unsent = unsent[os.write(parent_w, unsent) :]
            finally:
                ends = [fd for fd in (parent_r, parent_w) if fd is not None]
                self.finalizer = util.Finalize(self, _close_all, ends)
                for fd in (child_r, child_w):
                    if fd is not None:
                        os.close(fd)

    def _close_all(*fds: int) -> None:
        for fd in fds:
            os.close(fd)

    class _WorkerProcess(SpawnProcess):
        @staticmethod
        def _Popen(process_obj: Any) -> _WorkerPopen:
            return _WorkerPopen(process_obj)


# --- in each worker process ---------------------------------------------------------------------


class _WorkerEvents(Events):
    """A worker's rejects and progress, sent to the parent as they happen."""

    def __init__(self, reports: Connection) -> None:
        self._reports = reports

    def rejected(self, reject: Reject) -> None:
        self._reports.send(("reject", reject.location, reject.reason, reject.raw))

    def progress(
        self,
        done: int,
        total: int | None,
        detail: dict[str, int],
        *,
        input_fraction: float | None = None,
    ) -> None:
        self._reports.send(("progress", detail))


def _received(lines: Connection) -> Iterator[Record]:
    """The records the parent sends, until it closes the pipe."""
    while True:
        try:
            batch = lines.recv()
        except (EOFError, OSError):
            return
        for source, line, raw, read in batch:
            # The parent parsed it already, but a document does not cross processes cheaper
            # than its bytes do. ``read`` (mostly None) is the line as read, for a reject.
            yield Record(source, line, raw, orjson.loads(raw), read=read)


# SIGHUP too where there is one: a closed terminal hangs up the whole process group.
_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def _stop_signals_ignored_by_children() -> Iterator[None]:
    """Workers started meanwhile hold SIGINT, SIGTERM and SIGHUP back from their first
    instruction: a blocked signal stays blocked across ``fork`` and ``exec``, and the interpreter
    leaves the mask as it found it, until ``_worker_main`` ignores them. Else a Ctrl-C during a
    worker's start-up (a second or more of imports) kills it, with a traceback, and fails the run.

    This process only blocks them meanwhile: one that arrives waits, and reaches its handler when
    the mask is restored. Its handlers are never set to SIG_IGN here, since an ignored signal
    that arrives (or is unblocked by someone else, as multiprocessing's resource tracker does
    when it starts) is dropped: the run then went on as if there had been no Ctrl-C. The mask
    can only be changed for the main thread's starts; elsewhere nothing is changed."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _worker_main(
    settings: Settings,
    options: PutOptions,
    lines: Connection,
    reports: Connection,
    control: Connection,
) -> None:
    # The parent decides what a signal does (Ctrl-C reaches the whole process group). Started
    # holding them back already (``_stop_signals_ignored_by_children``), unless the parent ran
    # outside its main thread.
    for signum in _STOP_SIGNALS:  # SIGHUP too: a closed terminal hangs up the whole group
        signal.signal(signum, signal.SIG_IGN)  # drops any that came while held back
    if hasattr(signal, "pthread_sigmask"):  # ignored now: no need to hold them back any more
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    stop = threading.Event()
    ready = threading.Event()  # opened, said so: from now on it finishes what it is handed

    def watch() -> None:
        try:
            control.recv()  # a stop request
        except (EOFError, OSError):
            # The parent's end closed: it is gone (it closes it once this process has ended).
            # A worker still starting was handed nothing, and has nothing to finish.
            if not ready.is_set():
                os._exit(ExitStatus.ERROR)
        stop.set()

    try:  # from the first thread on: a system limit is the failure of one put, said once
        from s3idx.engine.core import Engine  # the engine imports this module

        threading.Thread(target=watch, name="s3idx-stop", daemon=True).start()
        with Engine.from_settings(settings) as engine:
            engine.store  # noqa: B018 - opened now: the parent reads nothing until it is
            engine.prepare_writes(shard=None, dry_run=options.dry_run)
            ready.set()
            reports.send(("ready",))
            try:
                result = run_put(
                    engine.store,
                    engine.index,
                    _received(lines),
                    options,
                    _WorkerEvents(reports),
                    stop,
                    check_binding=engine.check_store_binding,
                )
            finally:
                lines.close()  # a parent still sending learns at once that nobody reads
        reports.send(("done", result))
    except S3idxError as exc:
        partial = exc.partial_result if isinstance(exc.partial_result, PutResult) else None
        with contextlib.suppress(OSError):
            reports.send(("failed", int(exc.exit_status), exc.message, exc.hint, partial))
    except BaseException as exc:
        limit = system_limit(exc)  # a thread or memory refused, as one process reports it
        if limit is not None:
            failure = (int(limit.exit_status), limit.message, limit.hint)
        else:  # a bug: the parent reports it, with where it happened
            where = "".join(traceback.format_exception(exc)[-3:]).strip()
            failure = (int(ExitStatus.ERROR), f"worker process: {where}", None)
        with contextlib.suppress(OSError):
            reports.send(("failed", *failure, None))
    finally:
        reports.close()
