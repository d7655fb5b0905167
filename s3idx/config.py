"""Settings, resolved once: flags > ``S3IDX_*`` environment > config file profile > defaults."""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus

from s3idx.errors import ConfigError
from s3idx.frozen import Frozen, init_field
from s3idx.text import argument_text

DEFAULT_KEY_FIELD = "fs_id"
DEFAULT_COLLECTION = "s3idx"
COMPRESSIONS = ("zlib", "none", "zstd")
DEFAULT_WORKERS = 8  # concurrent object requests
# Concurrent requests of HEAD-bound work (rebuild-index, sync, reindex, verify): each waits
# 10-30 ms on S3 for ~1 ms of client CPU, so 16 in flight give ~800 objects/s where the CPU
# allows ~2,700 (obstore, 2 cores); 64 reach that (tests/bench/bench_heads.py). --workers
# (or `workers` in a config file or S3IDX_WORKERS) sets both.
DEFAULT_HEAD_WORKERS = 64
DEFAULT_BATCH_SIZE = 1000  # index entries per bulk write
# put reads up to twice a batch ahead, so a batch is held in memory: MongoDB's largest bulk
# write is a bound no faster ingest needs to pass.
MAX_BATCH_SIZE = 100_000
# More requests in flight than this gain nothing (S3 takes ~3,500 PUTs/s per prefix) and cost a
# thread, with its stack, each.
MAX_WORKERS = 1024
# Each of put's worker processes is an interpreter of its own (tenths of a second to start, tens
# of MB): more than the cores of a large machine only add start-up and memory.
MAX_PROCESSES = 256
# Seconds a request may go unanswered: longer is no deadline at all, and far longer does not fit
# the clocks of sockets (an overflow).
MAX_TIMEOUT = 86_400
# How S3 requests are made; obstore is optional (s3idx[fast]); http is boto3 with put's uploads
# on s3idx's own event loop.
TRANSPORTS = ("boto3", "obstore", "http")
# After how long without a heartbeat sync and verify take a put for dead (its journal records
# then settled). It must exceed the longest a running put goes without one: an upload
# (S3IDX_TIMEOUT of silence per attempt, a few attempts) and an entry write.
DEFAULT_PUT_STALE_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a command needs to open its backends and shape its work."""

    store: str
    index: str
    collection: str = DEFAULT_COLLECTION
    key: str | None = None  # None: the key field the index recorded, else fs_id
    fields: tuple[str, ...] = ()
    compress: str = "zlib"
    workers: int = DEFAULT_WORKERS
    head_workers: int = DEFAULT_HEAD_WORKERS
    batch_size: int = DEFAULT_BATCH_SIZE
    aws_profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    transport: str = "boto3"
    create_bucket: bool = False
    timeout: float = 60.0  # seconds a request to S3 may go unanswered before it fails
    put_stale_seconds: float = DEFAULT_PUT_STALE_SECONDS
    # setting -> where its value came from, as refusals name it (a flag, S3IDX_*, "FILE: name");
    # absent for a default. Not a setting: no layer gives it.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)


# name in the config file and after S3IDX_ in the environment -> parser
_PARSERS: dict[str, Any] = {
    "store": "path",
    "index": "path",
    "collection": str,
    "key": str,
    "fields": "list",
    "compress": str,
    "workers": int,
    "head_workers": int,
    "batch_size": int,
    "aws_profile": str,
    "region": str,
    "endpoint_url": str,
    "transport": str,
    "create_bucket": bool,
    "timeout": float,
    "put_stale_seconds": "seconds0",
}
SETTING_NAMES = tuple(_PARSERS)
assert set(SETTING_NAMES) <= {f.name for f in fields(Settings)}


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The per-user directory of the embedded default store and index."""
    env = os.environ if env is None else env
    if env.get("S3IDX_HOME"):
        return Path(env["S3IDX_HOME"]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "s3idx"
    if sys.platform == "win32":
        return Path(env.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "s3idx"
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "s3idx"


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("S3IDX_CONFIG"):
        return Path(env["S3IDX_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "s3idx" / "config.toml"


def default_store(env: Mapping[str, str] | None = None) -> str:
    return str(data_dir(env) / "store")


def default_index(env: Mapping[str, str] | None = None) -> str:
    return str(data_dir(env) / "index.sqlite3")


def resolve_settings(
    flags: Mapping[str, Any],
    *,
    profile: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    flag_names: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the layers; ``flags`` holds only what the user gave (None means not given).

    Every refusal names where the value came from: the config file (and profile), the
    ``S3IDX_*`` variable, or the flag (``flag_names``: a setting's flag, as the CLI spells it;
    else the keyword's own name, as a library caller gave it).
    """
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    given: dict[str, str] = {}  # setting -> where its value came from, as messages name it
    layers = (
        _from_file(config_file, profile or env.get("S3IDX_PROFILE"), env),
        _from_env(env),
        _from_flags(flags, flag_names or {}),
    )
    for layer, where in layers:
        # A workers given anywhere sets HEAD-bound work's too, unless that place set it.
        if "workers" in layer and "head_workers" not in layer:
            layer["head_workers"] = layer["workers"]
            where["head_workers"] = where["workers"]
        merged.update(layer)
        given.update(where)
    merged.setdefault("store", default_store(env))
    merged.setdefault("index", default_index(env))
    if "fields" in merged:
        merged["fields"] = tuple(merged["fields"])
    settings = Settings(**merged, sources=given)
    _validate(settings, given)
    _refuse_s3_flags_for_a_local_store(settings, flags, given)
    return settings


# Where an S3 store is and whose it is: typed with a local store, a forgotten s3://. (How to
# reach one, --transport and --create-bucket, a script may pass whatever the store.)
_S3_ONLY = ("endpoint_url", "region", "aws_profile")


def _refuse_s3_flags_for_a_local_store(
    settings: Settings, flags: Mapping[str, Any], given: Mapping[str, str]
) -> None:
    """A flag (or a library caller's keyword) only an S3 store takes, given with a local
    store: the documents would go to a local directory without a word. From the environment
    or the config file it is a default for S3 stores, which a local one leaves unused."""
    scheme, sep, _ = settings.store.partition("://")
    if sep and scheme != "file" and "/" not in scheme:
        return  # s3://, or a URL refused as a location later
    for name in _S3_ONLY:
        if flags.get(name) in (None, ""):
            continue
        store_from = given.get("store", "the default store")
        raise ConfigError(
            f"{given[name]} is for an S3 store, and the store is a local directory "
            f"({store_from}: {settings.store})",
            hint=f"give the S3 store with --store s3://BUCKET/PREFIX, or leave out {given[name]}",
        )


def _validate(settings: Settings, given: Mapping[str, str]) -> None:
    """Each setting's range or choices; a refusal starts with where the value was given, as a
    type error does (``_parse``). Defaults are never refused, so each refused one is found."""
    for name, value, choices in (
        ("compress", settings.compress, COMPRESSIONS),
        ("transport", settings.transport, TRANSPORTS),
    ):
        if value not in choices:
            raise ConfigError(
                f"{given.get(name, name)}: unknown {_CHOICE_NOUNS[name]} {value!r}; "
                f"choose one of: {', '.join(choices)}"
            )
    for name, number, most in (
        ("workers", settings.workers, MAX_WORKERS),
        ("head_workers", settings.head_workers, MAX_WORKERS),
        ("batch_size", settings.batch_size, MAX_BATCH_SIZE),
    ):
        # Typed already (_parse_int): a library caller's keywords are parsed as flags are.
        if number < 1:
            raise ConfigError(f"{given.get(name, name)}: must be at least 1, got {number}")
        if number > most:
            raise ConfigError(f"{given.get(name, name)}: must be at most {most}, got {number}")
    timeout = settings.timeout  # positive and finite already (_parse_seconds)
    if timeout > MAX_TIMEOUT:
        raise ConfigError(
            f"{given.get('timeout', 'timeout')}: must be at most {MAX_TIMEOUT} seconds (a day), "
            f"got {timeout:g}"
        )


_CHOICE_NOUNS = {"compress": "compression", "transport": "transport"}


def _from_env(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    for name, parser in _PARSERS.items():
        var = "S3IDX_" + name.upper()
        if env.get(var):
            values[name] = _parse(parser, env[var], var)
            where[name] = var
    return values, where


def _from_flags(
    flags: Mapping[str, Any], flag_names: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Flags (or a library caller's keywords) typed as the same settings of the file and the
    environment are: a float for workers is refused here too, not truncated."""
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    for name, raw in flags.items():
        if raw is None or raw == ():
            continue
        parser = _PARSERS.get(name)
        where[name] = flag_names.get(name, name)
        values[name] = raw if parser is None else _parse(parser, raw, where[name])
    return values, where


def progress_interval(env: Mapping[str, str] | None = None) -> float:
    """``S3IDX_PROGRESS_INTERVAL``: seconds between progress lines off a terminal (0: every
    update; default 60), refused as any bad ``S3IDX_*`` value is."""
    env = os.environ if env is None else env
    text = env.get(PROGRESS_INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_PROGRESS_INTERVAL
    return _parse_seconds(text, PROGRESS_INTERVAL_ENV, zero=True)


PROGRESS_INTERVAL_ENV = "S3IDX_PROGRESS_INTERVAL"
DEFAULT_PROGRESS_INTERVAL = 60.0  # seconds between progress lines when stderr is not a terminal


def _parse(parser: Any, raw: Any, where: str) -> Any:
    """``raw`` as the setting's type: one check, whether it came from the file, the
    environment or a flag (``where`` names it in the message)."""
    if parser == "list":
        if isinstance(raw, str) and where.startswith("S3IDX_"):
            raw = _comma_list(raw, where)
        if isinstance(raw, list | tuple) and all(isinstance(p, str) for p in raw):
            return tuple(_text(p, where) for p in raw)
        raise ConfigError(f"{where}: expected a list of strings")
    if parser is bool:
        return _parse_bool(raw, where)
    if parser is float:
        return _parse_seconds(raw, where)
    if parser == "seconds0":
        return _parse_seconds(raw, where, zero=True)
    if parser is int:
        return _parse_int(raw, where)
    if parser == "path" and isinstance(raw, os.PathLike):
        raw = os.fspath(raw)  # a library caller's Path
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: expected a string, got {_shown(raw)}")
    # A local path may hold any bytes the file system allows; every other setting is text
    # that goes into S3 requests, MongoDB names or JSON, which take UTF-8 only.
    return raw if parser == "path" else _text(raw, where)


def _comma_list(raw: str, where: str) -> list[str]:
    """``a, b.c`` as ``["a", "b.c"]``. An empty item (``a,,b``, a comma at an end) is refused,
    as an empty path is from a flag or the file: a path was meant there and would be lost."""
    items = [p.strip() for p in raw.split(",")]
    if "" in items:
        raise ConfigError(
            f"{where}: empty field path in {raw!r}",
            hint=f"give field paths separated by single commas, e.g. {where}=task_id,meta.owner",
        )
    return items


def _parse_bool(raw: Any, where: str) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower() if isinstance(raw, str | int) else ""
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{where}: expected true or false, got {_shown(raw)}")


def _parse_seconds(raw: Any, where: str, *, zero: bool = False) -> float:
    """A finite number of seconds, positive (or, with ``zero``, 0 or more)."""
    value = None
    if isinstance(raw, int | float | str) and not isinstance(raw, bool):
        try:
            value = float(raw)
        except (ValueError, OverflowError):  # not a number, or an integer beyond any float
            value = None
    if zero:
        if value is None or not 0 <= value < float("inf"):
            raise ConfigError(
                f"{where}: expected a number of seconds, 0 or more, got {_shown(raw)}"
            )
        return value
    if value is None:
        raise ConfigError(f"{where}: expected a number of seconds, got {_shown(raw)}")
    if not 0 < value < float("inf"):
        raise ConfigError(f"{where}: expected a positive number of seconds, got {_shown(raw)}")
    return value


def _parse_int(raw: Any, where: str) -> int:
    # A float is refused wherever it comes from (3.5, 1e3, 1e400), as --workers refuses it:
    # truncating 3.5 to 3 would be a silent guess.
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected a whole number, got {_shown(raw)}")


def _text(raw: str, where: str) -> str:
    """``raw`` when it is valid Unicode: bytes that are not UTF-8 in an environment variable or
    an argument arrive as lone surrogates, which no encoder (JSON, BSON, HTTP) accepts (UTF-8
    under another locale is read as UTF-8: ``argument_text``)."""
    raw = argument_text(raw)
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{where}: not valid UTF-8 text: {_shown(raw)}") from None
    return raw


def _shown(raw: Any, limit: int = 60) -> str:
    text = repr(raw)
    return text if len(text) <= limit else f"{text[:limit]}…"


def _from_file(
    path: str | os.PathLike[str] | None, profile: str | None, env: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    explicit = path is not None or bool(env.get("S3IDX_CONFIG"))
    file = Path(path) if path is not None else config_path(env)
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is not a TOML statement.
        text = file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{file}: not UTF-8 text (byte {exc.object[exc.start]:#04x} on line {line})",
            hint="a config file is TOML, which is UTF-8: save it as UTF-8 text",
        ) from None
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file not found: {file}") from None
        if profile:
            raise ConfigError(
                f"no profile {profile!r}: there is no config file at {file}"
            ) from None
        return {}, {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror or exc}") from None
    # Imported only when there is a file to parse: ~2 ms of every command's start (issue 17).
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    except (ValueError, RecursionError) as exc:
        # tomllib's own limits: an integer of more than 4,300 digits (ValueError), arrays
        # or tables nested thousands deep (RecursionError). Nothing a config file needs.
        reason = (
            "nested too deeply"
            if isinstance(exc, RecursionError)
            else str(exc).split(";")[0]  # without "use sys.set_int_max_str_digits()"
        )
        raise ConfigError(f"{file}: not valid TOML: {reason}") from None
    profiles = data.pop("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{file}: [profiles] must be a table of profile tables")
    values, where = _settings_table(data, f"{file}")
    if profile:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(f"no profile {profile!r} in {file}; profiles: {known}")
        in_profile, where_in_profile = _settings_table(
            profiles[profile], f"{file} [profiles.{profile}]"
        )
        values.update(in_profile)
        where.update(where_in_profile)
    return values, where


def _settings_table(table: Any, where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A table's settings, typed, and where each was given (``FILE: name``)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = sorted(set(table) - set(_PARSERS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting {unknown[0]!r}; known: {', '.join(SETTING_NAMES)}"
        )
    given = {name: f"{where}: {name}" for name in table}
    return {name: _parse(_PARSERS[name], v, given[name]) for name, v in table.items()}, given


# --- secrets: never printed ------------------------------------------------------------------


# Each pattern here is compiled on first use: ~1.3 ms in all, which a command that redacts
# nothing need not pay (start-up time, issue 17).
#
# In free text (a message, a library's error) a URI is found by its scheme, then ":" with any
# slashes or "//" alone (so "mongodb:/u:pw@h" and "mongodb//u:pw@h" too), and its password is
# hidden greedily up to the last "@" of the token: a password may hold an unescaped "/" or "@",
# and hiding too much is safe where hiding too little is not. A location the user gave is
# redacted from its structure instead (``redact_location``), and its secrets are known by value.
@functools.cache
def _userinfo() -> re.Pattern[str]:
    return re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*(?::/*|//+))(?P<user>[^:/@\s]*):\S*@")


# URI query options whose values may be shown: MongoDB's own options that hold no secret
# (tests/test_config.py checks each is one pymongo knows). Every other option's value is hidden:
# authMechanismProperties (an AWS session token), tlsCertificateKeyFilePassword, and any name
# s3idx does not know, such as a misspelled "tlsCertificateKeyFilePasword".
SHOWN_OPTIONS = frozenset(
    (
        "appname",
        "authmechanism",
        "authsource",
        "compressors",
        "connecttimeoutms",
        "directconnection",
        "heartbeatfrequencyms",
        "journal",
        "loadbalanced",
        "localthresholdms",
        "maxconnecting",
        "maxidletimems",
        "maxpoolsize",
        "maxstalenessseconds",
        "minpoolsize",
        "readconcernlevel",
        "readpreference",
        "readpreferencetags",
        "replicaset",
        "retryreads",
        "retrywrites",
        "servermonitoringmode",
        "serverselectiontimeoutms",
        "sockettimeoutms",
        "srvmaxhosts",
        "srvservicename",
        "ssl",
        "timeoutms",
        "tls",
        "tlsallowinvalidcertificates",
        "tlsallowinvalidhostnames",
        "tlscafile",
        "tlscertificatekeyfile",
        "tlscrlfile",
        "tlsdisableocspendpointcheck",
        "tlsinsecure",
        "uuidrepresentation",
        "w",
        "waitqueuetimeoutms",
        "wtimeoutms",
        "zlibcompressionlevel",
    )
)
_OPTION_NAME = r"[^=&;?#\s]+"


# Options named as secrets are: their values are hidden wherever they show up, like a password.
# Other hidden options' values are hidden where the option is written (a short value such as
# "1" hidden everywhere would mangle the rest of the text).
@functools.cache
def _secret_name() -> re.Pattern[str]:
    return re.compile(r"(?i)authMechanismProp|pass|pwd|secret|token|credential")


def hidden_option(name: str) -> bool:
    """Whether the value of URI option ``name`` is never shown (see ``SHOWN_OPTIONS``)."""
    return name.strip().lower() not in SHOWN_OPTIONS


@functools.cache
def _secret_option() -> re.Pattern[str]:
    return re.compile(rf"(?<=[?&;])(?P<name>\s*{_OPTION_NAME})(?P<equals>\s*=\s*)[^&;\s]*")


# In a location, an option's value runs to the next option or the end, whatever it holds
# (quotes, spaces: pymongo takes them).
@functools.cache
def _location_option() -> re.Pattern[str]:
    return re.compile(rf"(?<=[?&;])\s*(?P<name>{_OPTION_NAME})\s*=(?P<value>[^&;]*)")


# The start of a location as typed: blanks or quotes, a scheme-like word (or none) and its colon,
# with whatever slashes follow. Only that colon matters: it is not the one between a user and a
# password. "mongodb//u:pw@h" has none; its user is then "mongodb//u", which is no secret.
@functools.cache
def _location_scheme() -> re.Pattern[str]:
    return re.compile(r"""[\s'"`]*(?:[A-Za-z][A-Za-z0-9+.-]*)?\s*:(?P<slashes>[/\\\s]*)""")


# An AWS access key id: the user of a MONGODB-AWS URI, as secret as the key that goes with it.
_AWS_KEY_ID = r"(?:AKIA|ASIA|AIDA|AROA|AIPA|ANPA|ANVA|APKA|ABIA|ACCA|AGPA)[A-Z0-9]{8,}"
# Secrets known by value (credentials from the environment, a URI's password) are hidden
# wherever any piece of them of this many characters shows up: a message that quotes part of
# a token (a header value, one segment of a JWT) must not reveal that part either.
SECRET_FRAGMENT = 8
_secret_fragments: set[str] = set()
# Locations with secrets, as given (and as the path made of them), and how they are shown.
_location_masks: dict[str, str] = {}
_AWS_SECRET_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",  # sent to a container credentials endpoint
)


# What an AWS credential looks like, for text from a server or a library (botocore, obstore),
# which may quote one not known by value: access key ids, the pieces of a SigV4 Authorization
# header, long base64 runs (secret keys, session tokens) and JWTs. Not applied to s3idx's own
# text, where a 40-character run is a document key or a hash rather than a secret.
@functools.cache
def _credential_shapes() -> re.Pattern[str]:
    return re.compile(
        rf"(?<![A-Za-z0-9]){_AWS_KEY_ID}"
        r"|(?<=Credential=)[^,\s]+"
        r"|(?<=Signature=)[0-9A-Fa-f]+"
        r"|(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40,}"
        r"|eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)*"  # a JWT, all of its segments
    )


def redact(text: str, secrets: Iterable[str] = (), *, vendor_text: bool = False) -> str:
    """Text fit to print: URI passwords, secret URI options and every known secret hidden.

    The one redaction every message, summary and progress line goes through. ``secrets`` are
    hidden whole too, however short (a backend's own, e.g. the password of its URI, which it
    must hide from its messages even where nothing told ``remember_secret`` of it).
    ``vendor_text``: the text comes from a server or a vendor library, so anything shaped like
    an AWS credential is hidden too, known or not.
    """
    for given in sorted(_location_masks, key=len, reverse=True):  # quoted whole, or as a path
        text = text.replace(given, _location_masks[given])
    text = _userinfo().sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _secret_option().sub(
        lambda m: f"{m['name']}{m['equals']}***" if hidden_option(m["name"]) else m[0], text
    )
    if vendor_text:
        text = _credential_shapes().sub("***", text)
    text = _hide_known_secrets(text) if _secret_fragments else text
    # Longest first, so that a secret containing another is hidden whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def redact_location(location: str, *, vendor_text: bool = False) -> str:
    """A location as given (``--index``, ``--store``, ``--endpoint-url``), fit to print.

    Decided from its structure, however mistyped: its password and secret options are hidden
    whole, and so is every other place in it where one of them shows up (a short password that
    is part of the database name), as ``MongoLocation.describe`` hides them; then ``redact``.
    """
    return redact(_masked(location), vendor_text=vendor_text)


class LocationParts(Frozen):
    """What a location as given holds: the user it names, and its secrets."""

    __slots__ = ("after_userinfo", "has_password", "secrets", "spans", "user")
    _fields = ("user", "has_password", "after_userinfo", "secrets", "spans")
    user: str  # as given, "***" when it is a secret itself (an AWS access key id)
    has_password: bool
    after_userinfo: str  # what follows the last "@" (all after the scheme when there is none)
    secrets: tuple[str, ...]  # as written and decoded, longest first
    spans: tuple[tuple[int, int], ...]  # where the location holds them

    def __init__(
        self,
        user: str,
        has_password: bool,
        after_userinfo: str,
        secrets: tuple[str, ...],
        spans: tuple[tuple[int, int], ...],
    ) -> None:
        init_field(self, "user", user)
        init_field(self, "has_password", has_password)
        init_field(self, "after_userinfo", after_userinfo)
        init_field(self, "secrets", secrets)
        init_field(self, "spans", spans)


def location_parts(location: str) -> LocationParts:
    """Split a location, well-formed or not, into what may be shown and what may not.

    Everything between the scheme (when there is one) and the last "@" is userinfo; its part
    after the first ":" is the password. With no ":" in it, the userinfo is the user, unless
    what came first was a word and a colon with no slashes ("u:pw@host", "mongodb:u@host"): that
    word may have been the user, so it is all hidden. Each secret option's value runs to the
    next "&" or ";" or the end.
    """
    scheme = _location_scheme().match(location)
    start = scheme.end() if scheme else 0
    at = location.rfind("@", start)
    user, password = "", ""
    spans: list[tuple[int, int]] = []
    if at >= 0:
        colon = location.find(":", start, at)
        if colon >= 0:
            user, password = location[start:colon], location[colon + 1 : at]
            spans.append((colon + 1, at))
        elif scheme is not None and not scheme["slashes"]:
            password = location[start:at]
            spans.append((start, at))
        else:
            user = location[start:at]
    secrets = list(_written_and_decoded(password))
    options = [
        option
        for option in _location_option().finditer(location, start)
        if hidden_option(option["name"])
    ]
    for option in options:
        if _secret_name().search(option["name"]):
            secrets += _written_and_decoded(option["value"])
        spans.append(option.span("value"))
    # An access key id (MONGODB-AWS) is a secret; so is a "user" holding a secret option.
    if user and (
        re.fullmatch(_AWS_KEY_ID, unquote_plus(user).strip())
        or any(option.start() < start + len(user) for option in options)
    ):
        secrets += _written_and_decoded(user)
        spans.append((start, start + len(user)))
        user = "***"
    return LocationParts(
        user=user,
        has_password=bool(password),
        after_userinfo=location[at + 1 :] if at >= 0 else location[start:],
        secrets=tuple(sorted(set(secrets), key=len, reverse=True)),
        spans=tuple(spans),
    )


def at_after_host(location: str) -> bool:
    """Whether a URI holds an '@' after its host part ("mongodb://u:pa/ss@host/db"): a user or
    password with an unescaped '/', '?' or '#', where every URI parser ends the host part, so
    that the rest of the password would be read, and quoted, as a path, option, fragment or
    port (an '@' in an option value must be escaped too: %40)."""
    _, sep, rest = location.partition("://")
    if not sep:
        return False
    ends = [at for at in (rest.find(c) for c in "/?#") if at >= 0]
    return "@" in rest[min(ends) :] if ends else False


AT_AFTER_HOST_HINT = (
    "percent-escape '/', '?', '#' and '@' in the user and password (%2F, %3F, %23, %40), and "
    "an '@' anywhere else in the URI (%40)"
)


def _written_and_decoded(value: str) -> list[str]:
    """A secret as written, without stray blanks or quotes, and percent-decoded as pymongo
    decodes it (``unquote_plus``) or another library might (``unquote``)."""
    forms = {value, value.strip(), value.strip(" \t'\"")}
    forms |= {unquote(form) for form in forms} | {unquote_plus(form) for form in forms}
    return [form for form in forms if form]


def hide_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret hidden, however short."""
    return _masked(text, secrets, structure=False)


def _masked(text: str, secrets: Iterable[str] = (), *, structure: bool = True) -> str:
    hidden = bytearray(len(text))
    if structure:
        parts = location_parts(text)
        secrets = (*secrets, *parts.secrets)
        for start, end in parts.spans:
            hidden[start:end] = b"\x01" * (end - start)
    for secret in {s for s in secrets if s}:
        found = text.find(secret)
        while found >= 0:
            hidden[found : found + len(secret)] = b"\x01" * len(secret)
            found = text.find(secret, found + 1)
    return _collapsed(text, hidden)


def remember_secret(value: str | None) -> None:
    """From now on, ``redact`` hides every piece of ``value`` of 8 characters or more.

    Every piece of all of it, spaces and line breaks included: a password "Ab3 Cd4 Ef5" has no
    8-character word, but 8-character pieces all the same.
    """
    if not value:
        return
    for start in range(len(value) - SECRET_FRAGMENT + 1):
        _secret_fragments.add(value[start : start + SECRET_FRAGMENT])


def remember_environment_secrets(env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    for name in _AWS_SECRET_VARIABLES:
        remember_secret(env.get(name))


def remember_location_secrets(*locations: str | None) -> None:
    """Make the secrets of locations as given known to ``redact``, however they are spelled.

    Each secret's every 8-character piece is hidden anywhere from now on; and the location
    itself, quoted whole or as the path s3idx made of it (a mistyped URL may be a relative
    path), is shown as ``redact_location`` shows it, short secrets hidden too.
    """
    for location in locations:
        if not location:
            continue
        secrets = location_parts(location).secrets
        if not secrets:
            continue
        for secret in secrets:
            remember_secret(secret)
        for form in {location, str(Path(location))}:
            _location_masks[form] = _masked(form, secrets)


def _hide_known_secrets(text: str) -> str:
    width = SECRET_FRAGMENT
    hidden = bytearray(len(text))
    for start in range(len(text) - width + 1):
        if text[start : start + width] in _secret_fragments:
            hidden[start : start + width] = b"\x01" * width
    return _collapsed(text, hidden)


def _collapsed(text: str, hidden: bytearray) -> str:
    """``text`` with each run of hidden characters shown as one "***"."""
    if not any(hidden):
        return text
    parts: list[str] = []
    for position, char in enumerate(text):
        if not hidden[position]:
            parts.append(char)
        elif position == 0 or not hidden[position - 1]:
            parts.append("***")
    return "".join(parts)
