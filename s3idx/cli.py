"""The ``s3idx`` command: parses flags, calls one engine method, renders the result.

Exit statuses are mapped from exceptions in one place, ``_Command.invoke`` (every command's
click class), as click's ``Command.main`` and httpie's ``raw_main`` do; parsing refusals are
mapped by ``main``. Messages go to stderr and data to stdout, both through one ``Environment``
(``s3idx/environment.py``): ``main(args, env=...)``, or ``obj=Environment(...)`` to a runner
invoking ``app``, replaces the process's streams (tests do).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import inspect
import io
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, NoReturn, Protocol, TypeVar, cast

import orjson
import typer

from s3idx import cli_coercion, codec, output
from s3idx._version import __version__
from s3idx.config import (
    COMPRESSIONS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_HEAD_WORKERS,
    DEFAULT_WORKERS,
    MAX_BATCH_SIZE,
    MAX_PROCESSES,
    MAX_WORKERS,
    TRANSPORTS,
    config_path,
    data_dir,
    default_index,
    default_store,
    progress_interval,
    redact,
    redact_location,
    remember_environment_secrets,
    remember_location_secrets,
    resolve_settings,
)
from s3idx.engine.events import REPORTED_KEYS_LIMIT
from s3idx.engine.outputs import (
    guard_output,
    open_output,
    refuse_outputs_over_inputs,
    replace_now,
)
from s3idx.environment import Environment
from s3idx.errors import (
    STDIN_CLOSED,
    STDIN_CLOSED_HINT,
    UNDECODABLE_ADVICE,
    ExitStatus,
    OutputError,
    S3idxError,
    UsageError,
    quote_key,
    shorten_key,
    system_limit,
)
from s3idx.limits import INT64_MAX
from s3idx.query.filter import parse_filter
from s3idx.query.filter_json import read_filter
from s3idx.query.paths import project
from s3idx.query.sort import parse_sort
from s3idx.sharding import Shard, parse_shard
from s3idx.text import argument_text, plural

if TYPE_CHECKING:  # the engine is imported by the command that runs it (start-up time, issue 17)
    from s3idx.engine.core import Engine
    from s3idx.engine.results import GetResult


class Compression(StrEnum):
    zlib = "zlib"
    none = "none"
    zstd = "zstd"


assert tuple(c.value for c in Compression) == COMPRESSIONS


class Transport(StrEnum):
    boto3 = "boto3"
    obstore = "obstore"
    http = "http"


assert tuple(t.value for t in Transport) == TRANSPORTS

HELP = f"""JSON documents as compressed objects in a bucket, with a small queryable index.

Ingest JSON lines with `put`, look entries up with `query`, read documents back with `get`.

With nothing configured, objects go to {default_store()} and the index to
{default_index()} (set S3IDX_HOME to move both).
"""

_INVOCATION = "s3idx.invocation"  # the key of the running Invocation in click's ctx.meta


def _environment(ctx: Any) -> Environment:
    """The Environment passed as click's ``obj`` (``main(env=...)``), else the process's own."""
    found: Environment | None = ctx.find_object(Environment)
    env = found if found is not None else Environment.from_process()
    return dataclasses.replace(env, stdout=guard_output(env.stdout, "stdout"))


def _stdout_to_devnull(env: Environment) -> None:
    """Point stdout at devnull, so that the interpreter's final flush of what stdout still
    holds does not complain, as Python's docs advise for a broken pipe."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, env.stdout.fileno())


# Commands whose whole job is to print what they read: a reader that went away (`| head`)
# ended it, not an error. Any other command stopped there has not done its job (`verify |
# true` would otherwise exit 0, sound, over objects it never checked).
_PRINTS_ONLY = frozenset({"get", "query"})
_READER_GONE = "stdout was closed (its reader went away) before the command finished"
_READER_GONE_HINT = (
    "what it did not check or do is not known; run it again with its output read to the end "
    "(or sent to a file)"
)


class _Command(typer.core.TyperCommand):
    """Every s3idx command: runs it and maps what it returns or raises to an exit status.

    Its help names arguments as click does (``KEY...``), without Typer's ``{KEY}`` usage braces
    and ``<list[str]>`` type labels, which read as Python to a user.
    """

    # --json means a summary: stdout then holds exactly one JSON document, whatever happens.
    json_is_one_document = True

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        cli_coercion.install(self.get_params(ctx))  # no pydantic for plain values
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> None:
        """Run the command (its function returns an ExitStatus or None); the one place where an
        S3idxError, Ctrl-C, SIGTERM, a broken pipe or a bug becomes an exit status.

        Raises typer.Exit with a non-zero status, so ``main`` (``standalone_mode=False``) gets
        it back as click's ``main`` returns it.
        """
        global _current_signals
        json = self.json_is_one_document and bool(ctx.params.get("json"))
        run = ctx.meta[_INVOCATION] = Invocation(_environment(ctx), json=json)
        signals = _current_signals = run.signals
        out = run.out
        remember_environment_secrets(run.env.environ)
        error: str | None = None
        with signals.installed():
            try:
                status = super().invoke(ctx)
            except (typer.Exit, typer.Abort, _CLICK_EXCEPTION):
                raise  # click's own ways out, as click's main handles them
            except S3idxError as exc:
                out.error(exc.message, exc.hint)
                error, status = exc.message, exc.exit_status
                if isinstance(exc, OutputError) and exc.output == "stdout":
                    _stdout_to_devnull(run.env)  # what is left in its buffer cannot go anywhere
                    json = False
            except KeyboardInterrupt:
                out.message("interrupted")
                status = signals.exit_status() or ExitStatus.INTERRUPTED
                error = "interrupted"
            except BrokenPipeError:
                _stdout_to_devnull(run.env)
                json = False  # stdout is gone
                status = ExitStatus.OK
                if self.name not in _PRINTS_ONLY:
                    # Its verdict (or its writes) stopped at that line: not a success.
                    error, status = _READER_GONE, ExitStatus.ERROR
                    out.error(_READER_GONE, _READER_GONE_HINT)
            except Exception as exc:
                if run.env.environ.get("S3IDX_DEBUG"):
                    raise
                limit = system_limit(exc)
                if limit is not None:  # a thread, process or memory the system refused
                    out.error(limit.message, limit.hint)
                    error, status = limit.message, limit.exit_status
                else:
                    # A bug, not a user mistake: one line, the traceback when asked for.
                    error = f"internal error: {type(exc).__name__}: {exc}"
                    out.error(
                        error,
                        hint="this is a bug in s3idx; run again with S3IDX_DEBUG=1 for the "
                        "traceback",
                    )
                    status = ExitStatus.ERROR
            if json and status and error is not None and not out.json_written:
                out.write_json({"error": error, "exit_status": int(status)})
        if status:
            raise typer.Exit(int(status))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                pieces.append(_argument_usage(param))
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((_argument_name(param), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class _JsonLinesCommand(_Command):
    """A command whose --json prints data as JSON lines (``query``), not one summary document."""

    json_is_one_document = False


def _argument_name(param: Any) -> str:
    name: str = param.metavar or param.name.upper()
    return name + ("..." if param.nargs != 1 else "")


def _argument_usage(param: Any) -> str:
    if param.required:
        return _argument_name(param)
    return f"[{param.metavar or param.name.upper()}]" + ("..." if param.nargs != 1 else "")


_CommandFunction = TypeVar("_CommandFunction", bound=Callable[..., Any])


class _Group(typer.core.TyperGroup):
    """The top-level command (``--version``, the choice of command)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        cli_coercion.install(self.get_params(ctx))  # no pydantic for plain values
        return super().parse_args(ctx, args)


class _Typer(typer.Typer):
    """Every command gets ``_Command``, including commands added later in this module."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", _Group)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[_CommandFunction], _CommandFunction]:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


class _Commands(MutableMapping[str, Any]):
    """The commands of a Typer app by name, in the order they were added, each built by Typer
    (its click command and parameters) when first looked up.

    Running one command looks up that one only; help, completion and the suggestions for an
    unknown command look every command up (or list the names), so they read what Typer's own
    group holds. Building all nine commands' parameters was ~10% of a query's start-up
    (issue 17).
    """

    def __init__(self, typer_app: typer.Typer) -> None:
        self._app = typer_app
        # A name to its CommandInfo until built, then to its click command.
        self._commands: dict[str, Any] = {
            info.name or typer.main.get_command_name(info.callback.__name__): info
            for info in typer_app.registered_commands
            if info.callback is not None
        }

    def __getitem__(self, name: str) -> Any:
        command = self._commands[name]
        if isinstance(command, typer.models.CommandInfo):
            command = self._commands[name] = typer.main.get_command_from_info(
                command,
                pretty_exceptions_short=self._app.pretty_exceptions_short,
                rich_markup_mode=self._app.rich_markup_mode,
            )
        return command

    def __setitem__(self, name: str, command: Any) -> None:
        self._commands[name] = command

    def __delitem__(self, name: str) -> None:
        del self._commands[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._commands)

    def __len__(self) -> int:
        return len(self._commands)


def _click_group(typer_app: typer.Typer) -> Any:
    """``typer_app`` as the click group Typer would build (``typer.main.get_command``), with
    its commands built on first use (``_Commands``)."""
    callback_only = copy.copy(typer_app)
    callback_only.registered_commands = []
    group = typer.main.get_group(callback_only)
    group.commands = _Commands(typer_app)
    return group


def _json_summary_asked(group: Any, argv: Sequence[str]) -> bool:
    """Whether ``argv`` gives ``--json`` to a command whose --json is one summary document:
    as its flag, not as an option's value, a file name after ``--`` or another command's flag.

    Read from the tokens, since a command line that parsing refuses has no parameters parsed.
    """
    tokens = iter(argv)
    for token in tokens:
        if token == "--" or not token.startswith("-"):
            command = group.commands.get(token)
            break
    else:
        return False
    if not getattr(command, "json_is_one_document", False):
        return False
    options = [param for param in command.params if param.param_type_name == "option"]
    if not any(param.name == "json" for param in options):
        return False
    takes_value = {
        name for param in options if not param.is_flag and not param.count for name in param.opts
    }
    for token in tokens:
        if token == "--json":
            return True
        if token == "--":
            return False
        if token in takes_value:
            next(tokens, None)
    return False


app = _Typer(
    name="s3idx",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# --- options shared by every command -------------------------------------------------------


def _option(annotation: Any, *names: str, **kwargs: Any) -> Any:
    kwargs.setdefault("show_default", False)
    kwargs.setdefault("rich_help_panel", "Locations")
    return Annotated[annotation, typer.Option(*names, **kwargs)]


LOCATION_OPTIONS = {
    "store": _option(
        str | None,
        "--store",
        metavar="LOCATION",
        help="Object store: a directory, file://PATH or s3://BUCKET/PREFIX. [env: S3IDX_STORE]",
    ),
    "index": _option(
        str | None,
        "--index",
        metavar="LOCATION",
        help="Index: a SQLite file, sqlite:///PATH or mongodb://HOST/DB. [env: S3IDX_INDEX]",
    ),
    "collection": _option(
        str | None,
        "--collection",
        metavar="NAME",
        help="MongoDB collection of the index. [default: s3idx] [env: S3IDX_COLLECTION]",
    ),
    "aws_profile": _option(
        str | None,
        "--aws-profile",
        metavar="NAME",
        help="Profile of ~/.aws/config for S3. [env: S3IDX_AWS_PROFILE]",
    ),
    "region": _option(
        str | None, "--region", metavar="REGION", help="S3 region. [env: S3IDX_REGION]"
    ),
    "endpoint_url": _option(
        str | None,
        "--endpoint-url",
        metavar="URL",
        help="S3 endpoint, for MinIO and other S3 services. [env: S3IDX_ENDPOINT_URL]",
    ),
    "transport": _option(
        Transport | None,
        "--transport",
        help="How S3 requests are made: boto3; obstore (faster; pip install 's3idx[fast]'); "
        "or http (boto3, with put's uploads on s3idx's own event loop: fastest). "
        "[default: boto3] [env: S3IDX_TRANSPORT]",
    ),
    "profile": _option(
        str | None,
        "--profile",
        metavar="NAME",
        help="Profile of the s3idx config file. [env: S3IDX_PROFILE]",
    ),
    "config": _option(
        Path | None,
        "--config",
        metavar="FILE",
        help=f"Config file (TOML). [default: {config_path()}] [env: S3IDX_CONFIG]",
    ),
}


def with_locations(command: Callable[..., ExitStatus | None]) -> Callable[..., ExitStatus | None]:
    """Give a command the shared location options, collected into its ``loc`` argument, and
    the running ``Invocation`` (environment, output, signals) as its ``run`` argument.

    One definition for every command, so the flags, their help and their resolution cannot
    drift apart between sibling commands.
    """
    return _Located(command)


class _Located:
    """A command with the shared location options (``with_locations``), as Typer reads it.

    Its signature is made when first read (when Typer builds this command), not at import:
    evaluating a command's string annotations one by one costs ~0.6 ms, and a run builds only
    the command it runs (start-up time, issue 17).
    """

    def __init__(self, command: Callable[..., ExitStatus | None]) -> None:
        self._command = command
        functools.update_wrapper(self, command)
        del self.__dict__["__wrapped__"]  # Typer must read the new signature, not the wrapped one
        # typing.get_type_hints (so Typer) evaluates the copied string annotations here.
        self.__globals__ = command.__globals__

    @functools.cached_property
    def __signature__(self) -> inspect.Signature:
        signature = inspect.signature(self._command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name not in ("loc", "run")]
        shared = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
            for name, kind in LOCATION_OPTIONS.items()
        ]
        # Typer passes click's context to a parameter annotated with it; it is no option.
        context = inspect.Parameter(
            "click_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context
        )
        return signature.replace(parameters=[*own, *shared, context])

    def __call__(self, click_context: typer.Context, **kwargs: Any) -> ExitStatus | None:
        loc = {name: kwargs.pop(name) for name in LOCATION_OPTIONS}
        return self._command(loc=loc, run=click_context.meta[_INVOCATION], **kwargs)


JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.")
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress and no summary; errors only.")
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        max=MAX_WORKERS,
        metavar="N",
        help=f"Concurrent object requests. [default: {DEFAULT_WORKERS}; {DEFAULT_HEAD_WORKERS} for "
        "rebuild-index, sync, reindex and verify, whose requests wait on S3, not on the CPU] "
        "[env: S3IDX_WORKERS; S3IDX_HEAD_WORKERS for those four]",
    ),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="I/N|auto",
        help="Only the keys of shard I of N (0-based); auto: from the SLURM, Kubernetes or "
        "AWS Batch array job.",
        show_default=False,
    ),
]


def _shard(text: str | None, run: Invocation) -> Shard | None:
    """``--shard``, read once here (auto: from the scheduler's variables)."""
    return None if text is None else parse_shard(text, run.env.environ)


# --- one run of a command: its environment, output and signals -------------------------------


class Invocation:
    """One run of one command: where it reads and writes (``env``, rendered through ``out``),
    whether ``--json`` promises one document, and its Ctrl-C/SIGTERM handling (``signals``).

    Made by ``_Command.invoke`` before the command's function runs, and handed to it as ``run``.
    """

    def __init__(self, env: Environment, *, json: bool = False) -> None:
        self.env = env
        self.out = output.Output(env)
        self.json = json
        self.signals = _Signals(self.out, json=json)


# A setting's flag, as refusals of its value name it (config.resolve_settings).
_FLAG_NAMES = {
    name: "--" + name.replace("_", "-")
    for name in ("store", "index", "collection", "key", "compress", "workers", "batch_size")
} | {
    "fields": "--field",
    "aws_profile": "--aws-profile",
    "region": "--region",
    "endpoint_url": "--endpoint-url",
    "transport": "--transport",
    "create_bucket": "--create-bucket",
}


class CommandContext:
    """What every command resolves first: settings, and its run (streams, output, signals)."""

    def __init__(
        self, run: Invocation, loc: dict[str, Any], *, quiet: bool = False, **flags: Any
    ) -> None:
        self.run = run
        self.env = run.env
        self.out = run.out
        self.signals = run.signals
        self.json = run.json
        self.quiet = quiet
        loc = dict(loc)
        if loc.get("transport") is not None:
            loc["transport"] = Transport(loc["transport"]).value  # a plain str from here on
        profile, config = loc.pop("profile"), loc.pop("config")
        self.config_file = config
        self.settings = resolve_settings(
            {**loc, **flags},
            profile=profile,
            config_file=config,
            env=run.env.environ,
            flag_names=_FLAG_NAMES,
        )
        progress_interval(run.env.environ)  # a bad one refused now, not when progress starts
        settings = self.settings
        remember_location_secrets(settings.index, settings.store, settings.endpoint_url)
        self._location_error: UsageError | None = None
        self._check_locations()
        self._check_key_and_fields(flags)

    def _check_locations(self) -> None:
        """A location or collection from the environment or a config file is checked now, its
        refusal naming where it came from, and raised where opening the backends would raise
        it (``engine``: ``info`` still shows the locations). A flag's refusal names the flag's
        value, a default is sound, and the engine checks every one anyway."""
        from s3idx.backends import location_checks

        for name, check in location_checks(self.settings):
            source = self.settings.sources.get(name)
            if source is None or source == _FLAG_NAMES.get(name):
                continue
            try:
                check()
            except UsageError as exc:
                self._location_error = UsageError(f"{source}: {exc.message}", hint=exc.hint)
                return

    def _check_key_and_fields(self, flags: dict[str, Any]) -> None:
        """A key field or a field no document can have is refused before any index records
        it, naming where it was given (the engine checks them too, without knowing that)."""
        if self.settings.key is not None:
            codec.check_new_key_field(self.settings.key, self._given_as("key", "--key", flags))
        if self.settings.fields:
            check_fields(self.settings.fields, self._given_as("fields", "--field", flags))

    def _given_as(self, name: str, flag: str, flags: dict[str, Any]) -> str:
        """Where a setting came from, as a message names it: the flag, the variable or the file."""
        if flags.get(name) not in (None, ()):
            return flag
        variable = "S3IDX_" + name.upper()
        if self.env.environ.get(variable):
            return variable
        return f"{name} in {self.config_file or config_path(self.env.environ)}"

    def engine(self) -> Engine:
        from s3idx.engine.core import Engine

        if self._location_error is not None:
            raise self._location_error
        return Engine.from_settings(self.settings)

    def events(self, *, command: str, rejects: IO[bytes] | None = None) -> output.CliEvents:
        return output.CliEvents(
            self.out, rejects=rejects, show_progress=not self.quiet, command=command
        )


def check_fields(paths: Sequence[str], given_as: str) -> None:
    """Field paths no document can have, refused naming where they were given."""
    from s3idx.engine.documents import check_new_field_path

    for path in paths:
        try:
            check_new_field_path(path)
        except UsageError as exc:
            raise UsageError(f"{given_as}: {exc.message}", hint=exc.hint) from None


# --- signals: the first stops a command cleanly, the second aborts ---------------------------

# SIGHUP too: a closed terminal or ssh session would otherwise kill a put between its uploads
# and their entries, leaving the index behind the bucket (Windows has no SIGHUP).
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class _Signals:
    """Ctrl-C, SIGTERM and SIGHUP during a command.

    The first one stops the command: cleanly where it cooperates (``cooperating``: it finishes
    the requests under way and indexes what was stored), else by raising KeyboardInterrupt.
    A second one aborts the process at once, whatever it is waiting for: every write is atomic
    on its own (an object, a batch of entries in one transaction), so an abort leaves what a
    crash leaves, which ``sync`` and ``rebuild-index --resume`` repair.
    """

    def __init__(self, out: output.Output | None = None, *, json: bool = False) -> None:
        self.stop = threading.Event()
        self.received: int | None = None
        self.out = out
        self.json = json
        self._cooperative = False
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            _abort_now(self.received, self)
        self.received = signum
        if not self._cooperative:
            raise KeyboardInterrupt
        self.stop.set()
        # Straight to the descriptor: the signal may have interrupted a write to sys.stderr.
        with contextlib.suppress(OSError):
            os.write(2, _STOPPING)

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Signals]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)

    @contextlib.contextmanager
    def cooperating(self) -> Iterator[threading.Event]:
        """While inside, a first signal sets the yielded event instead of raising."""
        self._cooperative = True
        try:
            yield self.stop
        finally:
            self._cooperative = False

    def exit_status(self) -> ExitStatus | None:
        return None if self.received is None else _signal_status(self.received)

    def json_pending(self) -> bool:
        """--json was given and its one document is not written yet."""
        return self.json and not (self.out is not None and self.out.json_written)


_STOPPING = b"s3idx: stopping: finishing requests under way (press Ctrl-C again to abort)\n"


def _signal_status(signum: int) -> ExitStatus:
    if signum == signal.SIGTERM:
        return ExitStatus.TERMINATED
    if signum == getattr(signal, "SIGHUP", None):
        return ExitStatus.HANGUP
    return ExitStatus.INTERRUPTED


def _abort_now(signum: int, signals: _Signals) -> NoReturn:
    """End the process now: no waiting for threads, requests or the interpreter's shutdown."""
    status = _signal_status(signum)
    with contextlib.suppress(Exception):
        (signals.out.env.stdout if signals.out is not None else sys.stdout).flush()
    # Straight to the file descriptors: the handler may have interrupted a write to sys.stderr.
    with contextlib.suppress(OSError):
        os.write(2, b"s3idx: aborted\n")
    if signals.json_pending():
        document: dict[str, Any] = {"error": "aborted", "exit_status": int(status)}
        with contextlib.suppress(Exception):  # the counts if they can be had, else without
            document = {**_counts_so_far(), **document}
        with contextlib.suppress(OSError):
            os.write(1, output.json_document(document))
    os._exit(int(status))


def _counts_so_far() -> dict[str, Any]:
    """The summary of the operation running, as far as it got (empty when none is)."""
    from s3idx.engine.results import in_progress

    summary = getattr(in_progress(), "as_dict", None)
    return summary() if summary is not None else {}


_current_signals = _Signals()  # of the command running, for main's handler outside its run


FilterFileOpt = Annotated[
    str | None,  # a str, not a Path: Path("") is ".", and an empty path must be said so
    typer.Option(
        "--filter-file",
        metavar="FILE",
        help="Read the filter (JSON) from FILE; '-' for stdin. For filters too big for a "
        "command line.",
    ),
]


# --- commands --------------------------------------------------------------------------------


def _version(ctx: typer.Context, value: bool) -> None:
    if value:
        output.Output(_environment(ctx)).echo(f"s3idx {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Top-level options."""


@app.command()
@with_locations
def put(
    files: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FILE",
            help="JSON lines files, JSON array files or .gz of either; '-' or a pipe is stdin.",
            show_default=False,
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            metavar="FIELD",
            help="Key field of the documents. [default: fs_id] [env: S3IDX_KEY]",
        ),
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            metavar="PATH",
            help="Searchable field to index (dotted paths allowed); repeat for more. "
            "[env: S3IDX_FIELDS, comma-separated]",
        ),
    ] = None,
    compress: Annotated[
        Compression | None,
        typer.Option(
            "--compress",
            help="Body compression; zstd needs pip install 's3idx[zstd]'. [default: zlib] "
            "[env: S3IDX_COMPRESS]",
            show_default=False,
        ),
    ] = None,
    workers: WorkersOpt = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            max=MAX_BATCH_SIZE,
            metavar="N",
            help=f"Index entries per bulk write. [default: {DEFAULT_BATCH_SIZE}] "
            "[env: S3IDX_BATCH_SIZE]",
        ),
    ] = None,
    skip_unchanged: Annotated[
        bool,
        typer.Option(
            "--skip-unchanged", help="Upload nothing for documents already stored identically."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and count; write nothing.")
    ] = False,
    rejects: Annotated[
        str | None,  # see _file_option
        typer.Option("--rejects", metavar="FILE", help="Write each rejected line to FILE as is."),
    ] = None,
    max_errors: Annotated[
        int | None,
        typer.Option(
            "--max-errors",
            min=1,
            max=INT64_MAX,
            metavar="N",
            help="Stop after N rejected records.",
        ),
    ] = None,
    shard: ShardOpt = None,
    create_bucket: Annotated[
        bool,
        typer.Option(
            "--create-bucket",
            help="Create the S3 bucket if it does not exist. [env: S3IDX_CREATE_BUCKET]",
        ),
    ] = False,
    processes: Annotated[
        int,
        typer.Option(
            "--processes",
            min=1,
            max=MAX_PROCESSES,
            metavar="N",
            help="Split the input over N worker processes by key, to use N cores. [default: 1]",
            show_default=False,
        ),
    ] = 1,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
    *,
    loc: dict[str, Any],
    run: Invocation,
) -> ExitStatus | None:
    """Store documents from JSON lines and index their fields.

    \b
    Example: printf '{"fs_id":"a","task_id":"mp-1"}\\n' | s3idx put --field task_id
    """
    only = _shard(shard, run)
    ctx = CommandContext(
        run,
        loc,
        quiet=quiet,
        key=key,
        fields=tuple(field or ()),
        compress=compress.value if compress else None,
        workers=workers,
        batch_size=batch_size,
        create_bucket=create_bucket or None,
    )
    paths = _input_paths(files, run.env)
    rejects_path = _file_option(rejects, "--rejects")
    return _put(ctx, paths, skip_unchanged, dry_run, rejects_path, max_errors, only, processes)


def _file_option(value: str | None, flag: str) -> Path | None:
    """A file option's path; an empty one refused as such (``Path("")`` would be ``.``)."""
    if value is None:
        return None
    if not value:
        raise UsageError(f"{flag} is an empty path", hint="give a file name")
    return Path(value)


def _input_paths(files: list[str] | None, env: Environment) -> list[str]:
    paths = list(files or [])
    if not paths:
        if env.stdin is None or env.stdin_isatty:
            raise UsageError(
                "no input: give FILE arguments or pipe JSON lines into s3idx put",
                hint="example: s3idx put docs.jsonl, or: cat docs.jsonl | s3idx put",
            )
        paths = ["-"]
    if paths.count("-") > 1:
        raise UsageError("'-' (stdin) can be given only once")
    if "-" in paths and env.stdin is None:
        raise UsageError(STDIN_CLOSED, hint=STDIN_CLOSED_HINT)
    from s3idx.engine.inputs import check_input_file

    for path in paths:
        if path != "-":
            check_input_file(path)
    return paths


def _put(
    ctx: CommandContext,
    paths: list[str],
    skip_unchanged: bool,
    dry_run: bool,
    rejects_path: Path | None,
    max_errors: int | None,
    shard: Shard | None = None,
    processes: int = 1,
) -> ExitStatus | None:
    refuse_outputs_over_inputs(
        {"--rejects": rejects_path},
        settings=ctx.settings,
        config_file=ctx.config_file,
        inputs=paths,
        stdin=ctx.env.stdin,
    )
    # Replaced once the run has read its input: a put refused before that leaves an earlier
    # run's rejects as they were; a dry run, which creates nothing, lists them on stderr only.
    opened = None
    if rejects_path is not None and not dry_run:
        opened = open_output(rejects_path, "--rejects", replace_when_written=True)
    with opened if opened is not None else contextlib.nullcontext() as rejects:
        result = _long_run(
            ctx,
            ctx.events(command="put", rejects=rejects),
            lambda engine, events, stop: engine.put_files(
                paths,
                stdin=ctx.env.stdin,
                skip_unchanged=skip_unchanged,
                dry_run=dry_run,
                max_errors=max_errors,
                events=events,
                stop=stop,
                shard=shard,
                processes=processes,
            ),
        )
        if rejects is not None:
            replace_now(rejects)
            _close_reporting(ctx, rejects, result)
    status = ctx.signals.exit_status()
    if status is None and (result.rejected or result.not_indexed or result.not_in_manifests):
        status = ExitStatus.PARTIAL
    if status is None and result.unstored:
        status = ExitStatus.UNAVAILABLE
    _name_keys(ctx, result)
    _report(ctx, result.as_dict(), output.put_summary(result), status)
    return status


def _name_keys(ctx: CommandContext, result: object) -> None:
    """On stderr (with --json, too), by key: the documents a put read and did not store, and
    the keys reconcile gave up on (a put's not indexed, another command's not settled)."""
    from s3idx.engine.results import PutResult

    if isinstance(result, PutResult):
        for line in output.unstored_lines(result):
            ctx.out.message(line)
    keys = getattr(result, "contended_keys", None)
    if keys:
        label = "not indexed" if isinstance(result, PutResult) else "not settled"
        for line in output.contended_lines(label, getattr(result, "contended", 0), keys):
            ctx.out.message(line)


_Result = TypeVar("_Result")
_Events = TypeVar("_Events", bound=output.CliEvents)


def _long_run(
    ctx: CommandContext,
    events: _Events,
    call: Callable[[Engine, _Events, threading.Event], _Result],
) -> _Result:
    """Run a long engine operation: progress shown while it runs, the first Ctrl-C or SIGTERM
    stops it cleanly (it finishes what is under way), and a failure still reports its counts."""
    with (
        events,
        ctx.engine() as engine,
        ctx.signals.cooperating() as stop,
        _summary_on_failure(ctx),
    ):
        return call(engine, events, stop)


@contextlib.contextmanager
def _summary_on_failure(ctx: CommandContext) -> Iterator[None]:
    """When a run stops on an error, still say what it had done, then report the error."""
    try:
        yield
    except S3idxError as exc:
        _report_failure(ctx, exc)
        raise
    except KeyboardInterrupt as exc:  # a first Ctrl-C where the operation does not cooperate
        _report_partial(
            ctx,
            getattr(exc, "partial_result", None),
            "interrupted",
            ctx.signals.exit_status() or ExitStatus.INTERRUPTED,
        )
        raise


def _report_failure(ctx: CommandContext, exc: S3idxError) -> None:
    _report_partial(ctx, exc.partial_result, exc.message, exc.exit_status)


def _report_partial(ctx: CommandContext, partial: object, error: str, status: ExitStatus) -> None:
    """What a run stopped by ``error`` had done: its summary, with the error."""
    _name_keys(ctx, partial)
    summary = getattr(partial, "as_dict", None)
    if summary is not None:
        _report(ctx, {**summary(), "error": error}, output.summary_line(partial), status)


def _close_reporting(ctx: CommandContext, output_file: IO[bytes], result: object) -> None:
    """Close an output file after a run: the rest of it is written only now, and a full disk
    then still reports what the run did, as a failure during it would."""
    try:
        output_file.close()
    except S3idxError as exc:
        exc.partial_result = result
        _report_failure(ctx, exc)
        raise


def _report(
    ctx: CommandContext, summary: dict[str, Any], line: str, status: ExitStatus | None = None
) -> None:
    if ctx.json:
        ctx.out.write_json({**summary, "exit_status": int(status or ExitStatus.OK)})
    elif not ctx.quiet:
        ctx.out.summary(line)


@app.command()
@with_locations
def get(
    keys: Annotated[list[str], typer.Argument(metavar="KEY", help="Document keys.")],
    output_path: Annotated[
        str | None,  # see _file_option
        typer.Option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout."),
    ] = None,
    workers: WorkersOpt = None,
    *,
    loc: dict[str, Any],
    run: Invocation,
) -> ExitStatus | None:
    """Print documents as JSON lines, in the order of the keys.

    \b
    Example: s3idx get a b > docs.jsonl
    """
    ctx = CommandContext(run, loc, workers=workers)
    output_file = _file_option(output_path, "--output")
    keys = [argument_text(key) for key in keys]
    for key in keys:  # every one, before an output is opened or a document read
        codec.check_key_argument(key)
    refuse_outputs_over_inputs(
        {"--output": output_file}, settings=ctx.settings, config_file=ctx.config_file
    )
    with contextlib.ExitStack() as stack:
        engine = stack.enter_context(ctx.engine())
        out = (
            stack.enter_context(open_output(output_file, "--output", replace_when_written=True))
            if output_file
            else run.env.stdout_binary
        )
        show = output_file is not None or not run.env.stdout_isatty
        events = stack.enter_context(
            output.CliEvents(run.out, rejects=None, show_progress=show, command="get")
        )
        try:
            result = engine.write_documents(keys, out, events=events)
        except S3idxError as exc:
            # The store failed every read from some key on: still name what went wrong before.
            from s3idx.engine.results import GetResult

            if isinstance(exc.partial_result, GetResult):
                _report_keys(run, exc.partial_result)
            raise
        out.flush()
    _report_keys(run, result)
    status = _unread_status(result)
    if status is None and result.unreadable:
        return ExitStatus.PARTIAL
    return status or (ExitStatus.NOT_FOUND if result.missing else None)


def _unread_status(result: GetResult) -> ExitStatus | None:
    """get's and query --full's status for the objects they could not read, the worst first."""
    if result.damaged:
        return ExitStatus.DAMAGED
    return _unavailable_status(len(result.unavailable), result.denied)


def _unavailable_status(unavailable: int, denied: int) -> ExitStatus | None:
    """The status for objects a command went on past, unread or unchanged: the store kept
    failing them (5: running again later may do), or denied them these credentials (6: it
    will not, until the permissions change)."""
    if denied:
        return ExitStatus.ACCESS_DENIED
    return ExitStatus.UNAVAILABLE if unavailable else None


def _report_keys(run: Invocation, result: GetResult) -> None:
    """One line per key that gave no document, by what went wrong."""
    for key in result.missing:
        run.out.message(f"not found: {shorten_key(key)}")
    for key, reason in result.unreadable + result.unavailable:
        run.out.message(f"cannot read {shorten_key(key)}: {reason}")
    for key, reason in result.damaged:
        run.out.message(f"damaged {shorten_key(key)}: {reason}")
    _print_hints(run.out, result)


def _print_hints(out: output.Output, result: GetResult) -> None:
    """What to do about the objects that could not be read: each hint once."""
    if result.undecodable:
        out.message(f"hint: {UNDECODABLE_ADVICE}")
    for hint in result.hints:
        out.message(f"hint: {hint}")


@app.command(cls=_JsonLinesCommand)
@with_locations
def query(
    filter: Annotated[
        str | None,
        typer.Argument(
            metavar="FILTER", help="MongoDB-style filter as JSON; all entries when omitted."
        ),
    ] = None,
    fields: Annotated[
        str | None,
        typer.Option("--fields", metavar="A,B", help="Fields to show (the key is always shown)."),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Print the whole documents from the store.")
    ] = False,
    sort: Annotated[
        str | None,
        typer.Option("--sort", metavar="A,-B", help="Sort by fields; '-' for descending."),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", min=0, max=INT64_MAX, metavar="N", help="At most N results (0: all)."
        ),
    ] = 0,
    skip: Annotated[
        int,
        typer.Option(
            "--skip",
            min=0,
            max=INT64_MAX,
            metavar="N",
            help="Skip the first N results.",
            show_default=False,
        ),
    ] = 0,
    count: Annotated[bool, typer.Option("--count", help="Print only the number of matches.")] = (
        False
    ),
    filter_file: FilterFileOpt = None,
    workers: WorkersOpt = None,
    json: Annotated[
        bool, typer.Option("--json", help="JSON lines even on a terminal (no table).")
    ] = False,
    *,
    loc: dict[str, Any],
    run: Invocation,
) -> ExitStatus | None:
    """Find index entries with a MongoDB-style filter.

    \b
    Example: s3idx query '{"task_id": {"$in": ["mp-1", "mp-2"]}}' --fields task_id
    """
    _refuse_query_flags(count=count, full=full, fields=fields, sort=sort, workers=workers)
    ctx = CommandContext(run, loc, workers=workers)
    spec = read_filter(filter, _file_option(filter_file, "--filter-file"), stdin=run.env.stdin)
    sort_spec = parse_sort(argument_text(sort)) if sort else None
    fields = argument_text(fields) if fields else fields
    projection = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
    with ctx.engine() as engine:
        if count:
            engine.check_query(spec, fields=projection, sort=sort_spec)
            matched = max(0, engine.count(spec) - skip)
            run.out.echo(str(min(matched, limit) if limit else matched))
            return None
        order = _field_order(engine.key_field, projection)
        if full:
            return _print_full(ctx, engine, spec, sort_spec, skip, limit, projection, order)
        entries = engine.query(spec, fields=projection, sort=sort_spec, skip=skip, limit=limit)
        if not _asks_bookkeeping(projection):
            entries = (_without_bookkeeping(e) for e in entries)
        entries = (output.in_field_order(e, order) for e in entries)
        if json or not run.env.stdout_isatty:
            out = run.env.stdout_binary
            for entry in entries:
                out.write(output.json_line(entry))
            out.flush()
            return None
        table, shown, more = output.entries_table(entries, columns=order)
        run.out.stdout_console().print(table)
        if more:
            first = plural(shown, "entry", "entries")
            run.out.message(f"showing the first {first}; use --json or a pipe for all")
    return None


def _refuse_query_flags(
    *, count: bool, full: bool, fields: str | None, sort: str | None, workers: int | None
) -> None:
    """Flags that could only be a mistake together: each would be ignored. --limit and --skip
    change a count, and --json with --count prints it as JSON, so those are kept."""
    if count:
        given = {"--full": full, "--fields": fields is not None, "--sort": sort is not None}
        for flag, present in given.items():
            if present:
                raise UsageError(
                    f"--count goes without {flag}: a count is the same whatever is shown of "
                    "each match, in whatever order"
                )
    if workers is not None and not full:
        raise UsageError("--workers goes with --full: only --full reads documents from the store")


def _asks_bookkeeping(projection: list[str] | None) -> bool:
    """--fields names the bookkeeping, or a part of it (``_s3idx.size``)."""
    return any(path.split(".", 1)[0] == codec.RESERVED_FIELD for path in projection or ())


def _without_bookkeeping(entry: dict[str, Any]) -> dict[str, Any]:
    entry.pop(codec.RESERVED_FIELD, None)
    return entry


def _field_order(key_field: str, projection: list[str] | None) -> list[str]:
    """Output order: the fields as --fields lists them, the key first unless listed there."""
    if projection is None:
        return [key_field]
    return projection if key_field in projection else [key_field, *projection]


def _print_full(
    ctx: CommandContext,
    engine: Engine,
    spec: dict[str, Any],
    sort_spec: Any,
    skip: int,
    limit: int,
    projection: list[str] | None,
    order: list[str],
) -> ExitStatus | None:
    out = ctx.env.stdout_binary
    failed = 0
    unread: GetResult | None = None  # the objects that could not be read, by why
    matched = max(0, engine.count(spec) - skip)
    total = min(matched, limit) if limit else matched
    show = not ctx.env.stdout_isatty
    documents = engine.query_documents(
        spec, sort=sort_spec, skip=skip, limit=limit, parse=projection is not None
    )
    with output.CliEvents(ctx.out, rejects=None, show_progress=show, command="query") as events:
        for done, (key, document) in enumerate(documents, start=1):
            events.progress(done, total, {"failed": failed} if failed else {})
            problem = _write_document(out, document, projection, order)
            if problem is not None:
                failed += 1
                if document is not None and document.error is not None and not document.drifted:
                    if unread is None:
                        # Imported at the first, not by every query (start-up, issue 17).
                        from s3idx.engine.results import GetResult

                        unread = GetResult()
                    unread.add_unread(key, document)
                events.say(f"index entry {quote_key(key)} {problem}")
    out.flush()
    if unread is None:
        return ExitStatus.PARTIAL if failed else None
    _print_hints(ctx.out, unread)
    return _unread_status(unread) or (ExitStatus.PARTIAL if failed else None)


def _write_document(
    out: IO[bytes], document: Any, projection: list[str] | None, order: list[str]
) -> str | None:
    """Write one document as a JSON line (cut down to ``projection``); else say why not."""
    if document is None:
        return "has no object in the store (run s3idx sync)"
    if document.drifted:  # the object may no longer match the filter the entry matched
        return "describes another version of its object than the store holds (run s3idx sync)"
    if document.error is not None:
        if document.damaged:
            return f"has a damaged object: {document.error}"
        return f"cannot be read: {document.error}"
    if projection is None:
        for chunk in document.iter_bytes():
            out.write(chunk)
    else:
        try:
            whole = document.parse()  # the read's own parse, which checked it
        except orjson.JSONDecodeError as exc:
            return f"cannot be read as JSON: {exc}"
        out.write(orjson.dumps(output.in_field_order(project(whole, order), order)))
    out.write(b"\n")
    return None


@app.command()
@with_locations
def delete(
    keys: Annotated[list[str] | None, typer.Argument(metavar="KEY", help="Keys to delete.")] = None,
    filter: Annotated[
        str | None,
        typer.Option("--filter", metavar="FILTER", help="Delete every entry matching FILTER."),
    ] = None,
    filter_file: FilterFileOpt = None,
    all_: Annotated[
        bool,
        typer.Option(
            "--all", help="Allow a filter that matches every document ('{}'): delete everything."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
    *,
    loc: dict[str, Any],
    run: Invocation,
) -> ExitStatus | None:
    """Delete documents: index entries first, then objects, finished even after a crash.

    \b
    Example: s3idx delete --filter '{"task_id": "mp-1"}' --dry-run
    """
    ctx = CommandContext(run, loc, quiet=quiet)
    by_filter = filter is not None or filter_file is not None
    if keys and by_filter:
        raise UsageError("give KEY arguments or a filter, not both")
    if keys and all_:
        raise UsageError(
            "--all goes with a filter, not with KEY arguments: it allows a filter that matches "
            "every document, and keys name what they delete"
        )
    if not keys and not by_filter:
        raise UsageError("nothing to delete: give KEY arguments or --filter FILTER")
    keys = [argument_text(key) for key in keys or ()]
    for key in keys:
        codec.check_key_argument(key)
    with (
        ctx.engine() as engine,
        ctx.events(command="delete") as events,
        _summary_on_failure(ctx),
    ):
        if by_filter:
            filter_path = _file_option(filter_file, "--filter-file")
            spec = read_filter(filter, filter_path, flag="--filter", stdin=run.env.stdin)
            if not all_ and parse_filter(spec).matches_everything():
                given = (
                    f"--filter {filter!r}" if filter is not None else f"the filter in {filter_path}"
                )
                raise UsageError(
                    f"{given} matches every document",
                    hint="add --all if you mean to delete everything",
                )
            result = engine.delete_matching(spec, dry_run=dry_run, events=events)
        else:
            result = engine.delete(keys or [], dry_run=dry_run, events=events)
    if dry_run and not ctx.json:
        for key in result.would_delete:
            run.out.echo(key)
    for key in result.missing:
        run.out.message(f"not found: {shorten_key(key)}")
    for key, reason in result.failed:
        run.out.message(f"could not delete {shorten_key(key)}: {reason}")
    without_entry = set(result.kept_without_entry)
    contended = set(result.contended_keys)  # named below: their entries may show neither
    for key in result.kept:
        if key in contended:
            continue
        if key in without_entry:
            run.out.message(
                f"not deleted: {shorten_key(key)}: its object changed since its entry was read "
                "(another program stored it again, or the index was out of date), and what is "
                "stored now cannot be indexed (not an s3idx object, or unreadable metadata); it "
                "was left, without an index entry: delete it again to delete it"
            )
            continue
        run.out.message(
            f"not deleted: {shorten_key(key)}: its object changed since its entry was read "
            "(another writer stored it again, or the index was out of date); its entry now "
            "shows the stored version: delete it again to delete that"
        )
    status = _unavailable_status(result.unavailable, result.denied)
    if status is None and (result.failed or result.kept or result.contended):
        status = ExitStatus.PARTIAL
    elif status is None and result.missing:
        status = ExitStatus.NOT_FOUND
    _name_keys(ctx, result)
    _report(ctx, result.as_dict(), output.delete_summary(result), status)
    return status


@app.command()
@with_locations
def info(
    json: JsonOpt = False,
    *,
    loc: dict[str, Any],
    run: Invocation,
) -> ExitStatus | None:
    """Show where documents and the index live, and what the index holds.

    \b
    Example: s3idx info --json
    """
    ctx = CommandContext(run, loc)
    data: dict[str, Any] = {
        "version": __version__,
        "store": redact_location(ctx.settings.store),
        "index": redact_location(ctx.settings.index),
        "config_file": str(ctx.config_file or config_path(run.env.environ)),
        "data_dir": str(data_dir(run.env.environ)),
    }
    # Print what can be known even when a backend is missing or down, then say what is.
    try:
        with ctx.engine() as engine:
            shown, problems = engine.describe()
    except S3idxError as exc:
        shown, problems = {}, [exc]
    data.update(shown)
    status = problems[0].exit_status if problems else None
    if problems:
        data["problems"] = [p.message for p in problems]
    if json:
        run.out.write_json({**data, "exit_status": int(status or ExitStatus.OK)})
    else:
        rows = {k: v for k, v in data.items() if k not in ("problems", "exit_status")}
        width = max(len(k) for k in rows)
        for name, value in rows.items():
            text = ", ".join(map(str, value)) if isinstance(value, list) else value
            run.out.echo(f"{name.replace('_', ' '):<{width}}  {text}")
    for problem in problems:
        run.out.error(problem.message, problem.hint)
    return status


RewriteOpt = Annotated[
    bool,
    typer.Option(
        "--rewrite",
        help="Rewrite objects written by maggma into the s3idx format (needs s3idx[maggma]).",
    ),
]


class CliScanEvents(output.CliEvents):
    """Progress over listed objects; skipped objects and drift reported as they are found."""

    def __init__(self, ctx: CommandContext, *, command: str, drift_lines: bool) -> None:
        super().__init__(
            ctx.out, rejects=None, show_progress=not ctx.quiet, command=command, unit="objects"
        )
        self._quiet = ctx.quiet
        self._drift_lines = drift_lines
        self._json = ctx.json
        self.drift_labels = DRIFT_LABELS
        # With --json the drift goes into the one JSON document, not onto lines before it.
        self.drift_keys: dict[str, list[str]] = {}

    def skipped(self, key: str, reason: str) -> None:
        if not self._quiet:
            self.say(f"{shorten_key(key)}: {reason}")

    def drift(self, kind: str, key: str) -> None:
        if not self._drift_lines:
            return
        label = self.drift_labels[kind]
        if self._json:
            keys = self.drift_keys.setdefault(label, [])
            if len(keys) < REPORTED_KEYS_LIMIT:
                keys.append(key)
        else:
            self.out.env.stdout.write(f"{label}\t{key}\n")


DRIFT_LABELS = {
    "bucket-only": "bucket-only",
    "index-only": "index-only",
    "changed": "changed",
    "interrupted-delete": "interrupted-delete",
    "interrupted-put": "interrupted-put",
}
ACTION_LABELS = {
    "bucket-only": "add",
    "index-only": "remove",
    "changed": "update",
    "interrupted-delete": "finish-delete",
    "interrupted-put": "repair-put",
}


@app.command("rebuild-index")
@with_locations
def rebuild_index(
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            metavar="FIELD",
            help="Expected key field. [default: as the objects say] [env: S3IDX_KEY]",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted rebuild from its checkpoint.")
    ] = False,
    rewrite: RewriteOpt = False,
    no_manifests: Annotated[
        bool,
        typer.Option(
            "--no-manifests",
            help="HEAD every object; neither read nor write manifests.",
        ),
    ] = False,
    shard: ShardOpt = None,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="With --shard: discard a rebuild in progress that this shard may not join "
            "(another shard count, not sharded, another key field, or this shard already "
            "started) and start over.",
        ),
    ] = False,
    workers: WorkersOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
    *,
    loc: dict[str, Any],
    run: Invocation,
) -> ExitStatus | None:
    """Rebuild the index from object metadata alone (no body is read), then swap it in.

    Manifests (.s3idx/manifests/, written by put) give most objects' metadata without a HEAD
    each; an object no manifest vouches for (same ETag, not stored since) is HEADed.

    Objects written by maggma's S3Store are indexed from their metadata too; --rewrite turns
    them into s3idx objects (reading and writing their bodies) so later rebuilds are exact.

    With --shard I/N, run N of these at once (any machines sharing the index): each indexes its
    shard's keys into one staging index, and the last to finish swaps it in.

    \b
    Example: s3idx rebuild-index --store s3://bucket/docs --index mongodb://host/db --workers 32
    """
    if resume and restart:
        raise UsageError(
            "--resume and --restart contradict each other: --resume continues the rebuild in "
            "progress, --restart discards it"
        )
    only = _shard(shard, run)
    if restart and only is None:
        raise UsageError(
            "--restart goes with --shard",
            hint="without --shard, rebuild-index (without --resume) always starts over",
        )
    ctx = CommandContext(run, loc, quiet=quiet, key=key, workers=workers)
    result = _long_run(
        ctx,
        CliScanEvents(ctx, command="rebuild-index", drift_lines=False),
        lambda engine, events, stop: engine.rebuild_index(
            resume=resume,
            rewrite=rewrite,
            events=events,
            stop=stop,
            manifests=not no_manifests,
            shard=only,
            restart=restart,
        ),
    )
    status = ctx.signals.exit_status() or _scan_status(
        result.skipped.undecodable, result.maggma.rewrite_failed
    )
    if status is None and result.contended:
        status = ExitStatus.PARTIAL
    _name_keys(ctx, result)
    _report(ctx, result.as_dict(), output.rebuild_summary(result), status)
    if result.interrupted:
        again = "" if only is None else f" --shard {only}"
        run.out.message(
            "rebuild stopped; the old index is unchanged; run again with"
            f"{again} --resume to continue"
        )
    return status


@app.command()
@with_locations
def reindex(
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            metavar="PATH",
            help="Also index this field (recorded first); repeat for more. "
            "[env: S3IDX_FIELDS, comma-separated]",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the objects to update; change nothing.")
    ] = False,
    workers: WorkersOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
    *,
    loc: dict[str, Any],
    run: Invocation,
) -> ExitStatus | None:
    """Backfill the index's fields into documents stored before the fields were added.

    Reads the body of each object whose metadata lacks a field, then replaces its metadata in
    place (a server-side copy on S3; the body is not uploaded again) and its index entry.
    Objects already up to date are skipped, so an interrupted run continues when run again.

    \b
    Example: s3idx reindex --field task_id --workers 32
    """
    ctx = CommandContext(run, loc, quiet=quiet, workers=workers)
    check_fields(field or (), "--field")
    result = _long_run(
        ctx,
        CliScanEvents(ctx, command="reindex", drift_lines=False),
        lambda engine, events, stop: engine.reindex(
            fields=field or (), dry_run=dry_run, events=events, stop=stop
        ),
    )
    partial = result.failed or result.not_in_manifests or result.pending_again
    status = ctx.signals.exit_status() or (ExitStatus.PARTIAL if partial else None)
    if status == ExitStatus.PARTIAL:
        status = _unavailable_status(result.unavailable, result.denied) or status
    _report(ctx, result.as_dict(), output.reindex_summary(result), status)
    return status


def _scan_status(undecodable: int, rewrite_failed: int) -> ExitStatus | None:
    return ExitStatus.PARTIAL if undecodable or rewrite_failed else None


@app.command()
@with_locations
def sync(
    check: Annotated[
        bool,
        typer.Option("--check", help="Change nothing; list the drift and exit 7 if there is any."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what sync would do; change nothing.")
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune/--no-prune", help="Remove entries whose objects are gone.", show_default=True
        ),
    ] = True,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="With --check: objects not written by s3idx count as drift too (exit 7).",
        ),
    ] = False,
    rewrite: RewriteOpt = False,
    shard: ShardOpt = None,
    workers: WorkersOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
    *,
    loc: dict[str, Any],
    run: Invocation,
) -> ExitStatus | None:
    """Make the index agree with the store: adopt new objects, update changed, drop stale.

    \b
    Example: s3idx sync --check || echo "index and bucket drifted"
    """
    if check and dry_run:
        raise UsageError("--check and --dry-run do the same reading; give one of them")
    if strict and not check:
        raise UsageError("--strict goes with --check")
    if check and not prune:
        raise UsageError(
            "--no-prune goes without --check: --check changes nothing, so there is nothing to "
            "keep (--dry-run --no-prune shows what sync --no-prune would do)"
        )
    if rewrite and (check or dry_run):
        raise UsageError("--rewrite changes objects; --check and --dry-run change nothing")
    only = _shard(shard, run)
    ctx = CommandContext(run, loc, quiet=quiet, workers=workers)
    events = CliScanEvents(ctx, command="sync", drift_lines=(check or dry_run))
    if dry_run:
        events.drift_labels = ACTION_LABELS if prune else {**ACTION_LABELS, "index-only": "keep"}
    result = _long_run(
        ctx,
        events,
        lambda engine, events, stop: engine.sync(
            prune=prune,
            check=check,
            dry_run=dry_run,
            rewrite=rewrite,
            events=events,
            stop=stop,
            shard=only,
        ),
    )
    run.env.stdout.flush()
    summary = result.as_dict()
    if json and (check or dry_run):
        summary["drift_keys"] = events.drift_keys
    status = ctx.signals.exit_status()
    if status is None and check and (result.drift or (strict and result.skipped.not_s3idx)):
        status = ExitStatus.DRIFT
    if status is None:
        status = _unavailable_status(result.unavailable, result.denied)
    if status is None:
        status = _scan_status(result.skipped.undecodable, result.maggma.rewrite_failed)
    if status is None and (result.not_in_manifests or result.contended):
        status = ExitStatus.PARTIAL
    _name_keys(ctx, result)
    _report(ctx, summary, output.sync_summary(result), status)
    return status


class CliVerifyEvents(CliScanEvents):
    """Damage and drift as one line each on stdout (``damaged\tKEY\tREASON``, ``KIND\tKEY``);
    with --json, both go into the one JSON document instead."""

    def __init__(self, ctx: CommandContext) -> None:
        super().__init__(ctx, command="verify", drift_lines=True)
        self.damage: list[dict[str, str]] = []

    def damaged(self, key: str, reason: str) -> None:
        if self._json:
            self.damage.append({"key": key, "reason": reason})
        else:
            self.out.env.stdout.write(f"damaged\t{key}\t{reason}\n")


@app.command()
@with_locations
def verify(
    sample: Annotated[
        float,
        typer.Option(
            "--sample",
            min=0.0,
            max=1.0,
            metavar="FRACTION",
            help="Read only this random fraction of the objects (drift is always counted).",
        ),
    ] = 1.0,
    workers: WorkersOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
    *,
    loc: dict[str, Any],
    run: Invocation,
) -> ExitStatus | None:
    """Read objects back and check each against its sha256, codec, document and index entry.

    Prints a line per damaged object and per drifted key; exits 8 if any object is damaged,
    else 7 if index and store drifted, else 6 if objects were denied these credentials, else 5
    if objects could not be read, else 0.

    \b
    Example: s3idx verify --sample 0.01 || echo "damaged objects or drift"
    """
    ctx = CommandContext(run, loc, quiet=quiet, workers=workers)
    events = CliVerifyEvents(ctx)
    result = _long_run(
        ctx,
        events,
        lambda engine, events, stop: engine.verify(sample=sample, events=events, stop=stop),
    )
    run.env.stdout.flush()
    status = ctx.signals.exit_status()
    if status is None and result.damaged:
        status = ExitStatus.DAMAGED
    if status is None and result.drift:
        status = ExitStatus.DRIFT
    if status is None:
        status = _unavailable_status(result.unavailable, result.denied)
    summary = {**result.as_dict(), "damage": events.damage}
    if json:
        summary["drift_keys"] = events.drift_keys
    _report(ctx, summary, output.verify_summary(result), status)
    return status


def main(
    args: Sequence[str] | None = None,
    *,
    env: Environment | None = None,
    held: list[int] | None = None,
) -> NoReturn:
    """Run the command line ``args`` (default: ``sys.argv[1:]``) and exit with its status.

    ``env`` replaces the process's streams, terminal flags, clock and environment variables
    (tests and embedding programs pass their own); it reaches every command as click's ``obj``.
    ``held``: signals received before (``entry`` holds those during the imports); this list
    holds those received until the command line is read.
    """
    global _current_signals
    held = [] if held is None else held
    # Held, not acted on, until it is known whether an abort writes a --json document.
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda received, frame: held.append(received))
    env = env if env is not None else Environment.from_process()
    argv = list(sys.argv[1:] if args is None else args)
    group = _click_group(app)
    one_document = _json_summary_asked(group, argv)
    # Until a command runs, a signal's abort writes the one document --json promises too.
    _current_signals = _Signals(json=one_document)
    # Outside a command's run (parsing; the interpreter's shutdown, which joins threads still
    # waiting on a slow server) a signal has nothing to stop cleanly: it aborts at once.
    for signum in STOP_SIGNALS:
        signal.signal(signum, abort_on_signal)
    if held:
        _abort_now(held[0], _current_signals)
    try:
        # As app(...) runs it (Typer's exception hook only matters with pretty exceptions).
        status = group(args=argv, prog_name="s3idx", standalone_mode=False, obj=env)
    except _CLICK_EXCEPTION as caught:  # a flag or argument that parsing refused
        exc = cast(_ParseError, caught)
        # The refusal quotes what was given: a location given in the wrong place (--index
        # forgotten), or a secret the environment holds, is hidden as everywhere else.
        remember_environment_secrets(env.environ)
        remember_location_secrets(*argv)
        shown = io.StringIO()
        exc.show(file=shown)
        env.stderr.write(redact(shown.getvalue()))
        if one_document:
            output.Output(env).write_json(
                {"error": exc.format_message(), "exit_status": exc.exit_code}
            )
        status = exc.exit_code
    except typer.Abort:
        output.Output(env).message("aborted")
        status = ExitStatus.ERROR
    if status in (ExitStatus.INTERRUPTED, ExitStatus.TERMINATED, ExitStatus.HANGUP):
        # Stopped by a signal: threads still waiting on a slow server are not waited for.
        with contextlib.suppress(Exception):
            env.stdout.flush()
            env.stderr.flush()
        os._exit(int(status))
    sys.exit(status if isinstance(status, int) else 0)


class _ParseError(Protocol):
    """What main() uses of click's ClickException (typed here: the class is found at run time)."""

    exit_code: int

    def show(self, file: IO[Any] | None = None) -> None: ...

    def format_message(self) -> str: ...


# Typer raises click's exceptions, from click or from its own copy of click (newer releases).
_CLICK_EXCEPTION: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def abort_on_signal(signum: int, frame: Any) -> None:
    """Outside a command's run (parsing, start-up, shutdown): a signal ends the process now."""
    _abort_now(_current_signals.received or signum, _current_signals)


if __name__ == "__main__":
    main()
