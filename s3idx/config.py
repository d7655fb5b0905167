"""Settings, resolved once: flags > ``S3IDX_*`` environment > config file profile > defaults."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from s3idx.errors import ConfigError

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


# name in the config file and after S3IDX_ in the environment -> parser
_PARSERS: dict[str, Any] = {
    "store": str,
    "index": str,
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
) -> Settings:
    """Merge the layers; ``flags`` holds only what the user gave (None means not given)."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    layers = (
        _from_file(config_file, profile or env.get("S3IDX_PROFILE"), env),
        _from_env(env),
        {k: v for k, v in flags.items() if v is not None and v != ()},
    )
    for layer in layers:
        if "workers" in layer:  # a workers given anywhere sets HEAD-bound work's too
            layer.setdefault("head_workers", layer["workers"])
        merged.update(layer)
    merged.setdefault("store", default_store(env))
    merged.setdefault("index", default_index(env))
    if "fields" in merged:
        merged["fields"] = tuple(merged["fields"])
    settings = Settings(**merged)
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    if settings.compress not in COMPRESSIONS:
        raise ConfigError(
            f"unknown compression {settings.compress!r}; choose one of: {', '.join(COMPRESSIONS)}"
        )
    if settings.transport not in TRANSPORTS:
        raise ConfigError(
            f"unknown transport {settings.transport!r}; choose one of: {', '.join(TRANSPORTS)}"
        )
    for name, value, most in (
        ("workers", settings.workers, MAX_WORKERS),
        ("head_workers", settings.head_workers, MAX_WORKERS),
        ("batch size", settings.batch_size, MAX_BATCH_SIZE),
    ):
        if isinstance(value, bool) or not isinstance(value, int):  # a library caller's value
            raise ConfigError(f"{name} must be a whole number, got {value!r}")
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
        if value > most:
            raise ConfigError(f"{name} must be at most {most}, got {value}")
    timeout = settings.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigError(f"timeout must be more than 0 seconds, got {timeout!r}")
    if not timeout <= MAX_TIMEOUT:  # NaN too
        raise ConfigError(f"timeout must be at most {MAX_TIMEOUT} seconds (a day), got {timeout:g}")


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, parser in _PARSERS.items():
        var = "S3IDX_" + name.upper()
        if env.get(var):
            values[name] = _parse(parser, env[var], var)
    return values


def _parse(parser: Any, raw: Any, where: str) -> Any:
    if parser == "list":
        if isinstance(raw, str) and where.startswith("S3IDX_"):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if isinstance(raw, list) and all(isinstance(p, str) for p in raw):
            return tuple(raw)
        raise ConfigError(f"{where}: expected a list of strings")
    if parser is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {raw!r}")
    if parser is float:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number of seconds, got {raw!r}") from None
        if isinstance(raw, bool) or not 0 < value < float("inf"):
            raise ConfigError(f"{where}: expected a positive number of seconds, got {raw!r}")
        return value
    if parser is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{where}: expected a whole number, got {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a whole number, got {raw!r}") from None
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: expected a string, got {raw!r}")
    return raw


def _from_file(
    path: str | os.PathLike[str] | None, profile: str | None, env: Mapping[str, str]
) -> dict[str, Any]:
    explicit = path is not None or bool(env.get("S3IDX_CONFIG"))
    file = Path(path) if path is not None else config_path(env)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file not found: {file}") from None
        if profile:
            raise ConfigError(
                f"no profile {profile!r}: there is no config file at {file}"
            ) from None
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror or exc}") from None
    # Imported only when there is a file to parse: ~2 ms of every command's start (issue 17).
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    profiles = data.pop("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{file}: [profiles] must be a table of profile tables")
    values = _settings_table(data, f"{file}")
    if profile:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(f"no profile {profile!r} in {file}; profiles: {known}")
        values.update(_settings_table(profiles[profile], f"{file} [profiles.{profile}]"))
    return values


def _settings_table(table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = sorted(set(table) - set(_PARSERS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting {unknown[0]!r}; known: {', '.join(SETTING_NAMES)}"
        )
    return {name: _parse(_PARSERS[name], v, f"{where}: {name}") for name, v in table.items()}


# --- secrets: never printed ------------------------------------------------------------------

# Greedy up to the last "@" of the token: a password may hold an unescaped "/" or "@", and
# hiding too much is safe where hiding too little is not.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):\S*@")
# URI query options whose values are secrets (MongoDB's authMechanismProperties carries an AWS
# session token; tlsCertificateKeyFilePassword; anything named like a password or token).
_SECRET_OPTION = re.compile(
    r"(?i)(?<=[?&;])(?P<name>authMechanismProperties|[\w.-]*(?:password|secret|token|credential)"
    r"[\w.-]*)=[^&;\s'\"]*"
)
# Secrets known by value (credentials from the environment, a URI's password) are hidden
# wherever any piece of them of this many characters shows up: a message that quotes part of
# a token (a header value, one segment of a JWT) must not reveal that part either.
SECRET_FRAGMENT = 8
_secret_fragments: set[str] = set()
_AWS_SECRET_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)


# What an AWS credential looks like, for text from a server or a library (botocore, obstore),
# which may quote one not known by value: access key ids, the pieces of a SigV4 Authorization
# header, long base64 runs (secret keys, session tokens) and JWTs. Not applied to s3idx's own
# text, where a 40-character run is a document key or a hash rather than a secret.
_CREDENTIAL_SHAPES = re.compile(
    r"(?<![A-Za-z0-9])(?:AKIA|ASIA|AIDA|AROA|AIPA|ANPA|ANVA|APKA|ABIA|ACCA|AGPA)[A-Z0-9]{8,}"
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
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _SECRET_OPTION.sub(lambda m: f"{m['name']}=***", text)
    if vendor_text:
        text = _CREDENTIAL_SHAPES.sub("***", text)
    text = _hide_known_secrets(text) if _secret_fragments else text
    # Longest first, so that a secret containing another is hidden whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def remember_secret(value: str | None) -> None:
    """From now on, ``redact`` hides ``value`` and every piece of it of 8 characters or more."""
    if not value:
        return
    for piece in re.split(r"[\s\x00-\x1f]+", value):
        for start in range(len(piece) - SECRET_FRAGMENT + 1):
            _secret_fragments.add(piece[start : start + SECRET_FRAGMENT])


def remember_environment_secrets(env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    for name in _AWS_SECRET_VARIABLES:
        remember_secret(env.get(name))


def remember_location_secrets(location: str) -> None:
    """The password and the secret query options of a URI (e.g. a MongoDB index)."""
    _, sep, rest = location.partition("://")
    if not sep:
        return
    userinfo = rest.rpartition("@")[0]
    password = userinfo.partition(":")[2]
    remember_secret(password)
    remember_secret(unquote(password))
    for match in _SECRET_OPTION.finditer(rest):
        value = match.group(0).partition("=")[2]
        remember_secret(value)
        remember_secret(unquote(value))


def _hide_known_secrets(text: str) -> str:
    width = SECRET_FRAGMENT
    hidden = bytearray(len(text))
    for start in range(len(text) - width + 1):
        if text[start : start + width] in _secret_fragments:
            hidden[start : start + width] = b"\x01" * width
    if not any(hidden):
        return text
    parts: list[str] = []
    for position, char in enumerate(text):
        if not hidden[position]:
            parts.append(char)
        elif position == 0 or not hidden[position - 1]:
            parts.append("***")
    return "".join(parts)
