"""Which shard a key belongs to: one stable function for ``--shard`` and ``put --processes``.

A key's shard is the first 8 bytes of the SHA-256 of its UTF-8 bytes, read as a big-endian
unsigned integer, modulo the number of shards. It depends on nothing but the key, so every
version of s3idx, on every machine and in every language, puts a key in the same shard
(README, "Running on many machines", states it for users who split work themselves).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from s3idx.errors import UsageError

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
MAX_SHARDS = 1_000_000


def shard_of(key: str, count: int) -> int:
    """The shard (0 .. count-1) a key falls in."""
    # Here, not at the top: hashlib loads OpenSSL (~3 ms), which only --shard needs of every
    # command that imports this module (start-up time, issue 17).
    import hashlib

    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based), written ``index/count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        # Shard(0.5, 2) from Python would own no key at all: every document "another shard's".
        if any(isinstance(n, bool) or not isinstance(n, int) for n in (self.index, self.count)):
            raise UsageError(
                f"a shard's index and count must be whole numbers, not {self.index!r} and "
                f"{self.count!r}"
            )
        if not 1 <= self.count <= MAX_SHARDS:
            raise UsageError(
                f"the shard count must be between 1 and {MAX_SHARDS:,}, not {self.count}"
            )
        if not 0 <= self.index < self.count:
            raise UsageError(
                f"shard {self.index} does not exist in {self.count} shards",
                hint=f"shards are numbered from 0 to {self.count - 1}",
            )

    def owns(self, key: str) -> bool:
        return self.count == 1 or shard_of(key, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


# Scheduler variables, in the order they are tried: (index variable, count variable or None,
# variable giving the first index, scheduler name for messages).
_SCHEDULERS = (
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "a SLURM job array"),
    ("JOB_COMPLETION_INDEX", None, None, "a Kubernetes Indexed Job"),
    ("AWS_BATCH_JOB_ARRAY_INDEX", None, None, "an AWS Batch array job"),
)
COUNT_VARIABLE = "S3IDX_SHARD_COUNT"


def parse_shard(text: str, environ: Mapping[str, str]) -> Shard:
    """``I/N`` (0-based I), or ``auto``: I and N from the batch scheduler's variables."""
    if text.strip().lower() == "auto":
        return _from_scheduler(environ)
    match = _SHARD.fullmatch(text)
    if match is None:
        raise UsageError(
            f"--shard {text!r} is not I/N or auto",
            hint="give the shard as I/N (e.g. 0/4 for the first of 4), or auto inside a "
            "SLURM, Kubernetes or AWS Batch array job",
        )
    return Shard(int(match.group(1)), int(match.group(2)))


def _from_scheduler(environ: Mapping[str, str]) -> Shard:
    for index_name, count_name, first_name, scheduler in _SCHEDULERS:
        if index_name not in environ:
            continue
        index = _integer(environ, index_name)
        given = f"{index_name}={environ[index_name].strip()}"
        if first_name is not None and first_name in environ:
            index -= _integer(environ, first_name)
            given += f" minus {first_name}={environ[first_name].strip()}"
        count_source = count_name if count_name and count_name in environ else COUNT_VARIABLE
        if count_source not in environ:
            names = f"{count_name} or {COUNT_VARIABLE}" if count_name else COUNT_VARIABLE
            raise UsageError(
                f"--shard auto: running in {scheduler} ({index_name}={environ[index_name]}), "
                f"but {names} is not set, so the number of shards is unknown",
                hint=_COUNT_HINT,
            )
        count = _integer(environ, count_source)
        if count >= 1 and not 0 <= index < count:  # a count out of range: Shard says so
            counted = f"{count_source}={environ[count_source].strip()}"
            raise UsageError(
                f"--shard auto: {given} is shard {index}, but {counted} gives shards 0 to "
                f"{count - 1}",
                # Only SLURM's IDs can skip (a step or a list); the others count from 0.
                hint=_STEPPED_ARRAY_HINT if first_name is not None else _COUNT_HINT,
            )
        return Shard(index, count)
    raise UsageError(
        "--shard auto: no batch scheduler found (none of SLURM_ARRAY_TASK_ID, "
        "JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX is set)",
        hint="give --shard I/N, e.g. --shard 0/4",
    )


_COUNT_HINT = f"set {COUNT_VARIABLE} to the number of tasks, or give --shard I/N"
_STEPPED_ARRAY_HINT = (
    "a SLURM array whose task IDs are not consecutive (with a step, as 0-15:2, or a list, as "
    "1,5,9) cannot give shard numbers: use consecutive IDs (as 0-15), or give --shard I/N"
)


def _integer(environ: Mapping[str, str], variable: str) -> int:
    text = environ[variable].strip()
    # isdecimal, not isdigit: what int() reads (a superscript two is a digit, not a decimal).
    if not text.isdecimal():
        raise UsageError(f"--shard auto: {variable}={environ[variable]!r} is not a whole number")
    return int(text)
