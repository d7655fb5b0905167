"""$regex matching is bounded in time and can be interrupted, as MongoDB's PCRE match limit."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from s3idx.errors import ExitStatus
from s3idx.query import filter as filter_module

# Patterns whose backtracking on VICTIM never ends in practice.
BACKTRACKING = ["(a|aa)+$", "(a|a)+$", "^(a|aa)+$"]
VICTIM = "a" * 40 + "b"


@pytest.fixture
def indexed(run: Callable[..., Any]) -> Callable[..., Any]:
    lines = "".join(f'{{"fs_id": "k{i}", "name": "{VICTIM}"}}\n' for i in range(3))
    result = run("put", "--field", "name", input=lines)
    assert result.exit_code == 0, result.stderr
    return run


@pytest.mark.parametrize("pattern", BACKTRACKING)
def test_catastrophic_backtracking_is_a_clear_error(indexed: Any, pattern: str) -> None:
    started = time.monotonic()
    result = indexed("query", f'{{"name": {{"$regex": "{pattern}"}}}}')
    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert f"$regex '{pattern}' took more than 1 s on one value" in result.stderr
    assert "rewrite it without the nesting" in result.stderr
    assert time.monotonic() - started < 30  # one limit per value, not a hang


@pytest.mark.parametrize("pattern", ["(a+)+$", "^(a+)+$", "(x+x+)+y"])
def test_nested_repetition_the_engine_can_optimise_answers(indexed: Any, pattern: str) -> None:
    # The standard re hangs on these; the regex engine recognises they cannot match.
    result = indexed("query", f'{{"name": {{"$regex": "{pattern}"}}}}', "--count")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_an_ordinary_regex_still_matches(indexed: Any) -> None:
    result = indexed("query", '{"name": {"$regex": "^A+b$", "$options": "i"}}', "--count")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "3"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_interrupts_a_regex_at_once(indexed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A limit far beyond the test: only the interrupt can end this match in time.
    monkeypatch.setattr(filter_module, "REGEX_TIME_LIMIT", 600.0)
    signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    started = time.monotonic()
    try:
        result = indexed("query", '{"name": {"$regex": "(a|aa)+$"}}')
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    assert result.exit_code == ExitStatus.INTERRUPTED, result.stderr
    assert "interrupted" in result.stderr
    assert time.monotonic() - started < 30


def _regex_filter(pattern: str) -> str:
    return json.dumps({"name": {"$regex": pattern}})


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("a{99999999}", "number too big in {} quantifier (at most 65535)"),
        ("x{1,65536}", "number too big in {} quantifier (at most 65535)"),
        ("[ab]{70000,}", "number too big in {} quantifier (at most 65535)"),
        ("(?:(?:(?:a{100}){100}){100}){100}", "its nested repetitions come to more than"),
        ("(b{60000}|c{60000}){20}", "its nested repetitions come to more than"),
        ("(?i:(?P<n>[ab]{1000}){1001})", "its nested repetitions come to more than"),
    ],
)
def test_a_repetition_too_large_to_compile_is_a_clear_error(
    indexed: Any, pattern: str, reason: str
) -> None:
    # The engine expands counted repetitions: a{99999999} took 16 GB before it was refused.
    result = indexed("query", _regex_filter(pattern))
    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert f"invalid $regex {pattern!r}: {reason}" in result.stderr


@pytest.mark.parametrize(
    ("pattern", "count"),
    [
        ("a{65535}", 0),
        ("(?:a{1000}){1000}", 0),
        ("[z{99999999}]", 0),
        (r"\{99999999}", 0),
        (r"\Qa{99999999}\E", 0),
        ("(?#{99999999})b", 3),
        ("(?x)b # {99999999}", 3),
        ("a{40}b", 3),
    ],
)
def test_counts_within_the_limits_or_not_counts_still_run(
    indexed: Any, pattern: str, count: int
) -> None:
    result = indexed("query", _regex_filter(pattern), "--count")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(count)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("[[:foo:]]", "unknown POSIX class name [:foo:]"),
        ("x[a[:^nope:]]", "unknown POSIX class name [:^nope:]"),
    ],
)
def test_a_pattern_pcre2_or_the_engine_refuses_is_a_usage_error(
    indexed: Any, pattern: str, reason: str
) -> None:
    result = indexed("query", _regex_filter(pattern), "--count")
    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert f"invalid $regex {pattern!r}: {reason}" in result.stderr


def test_a_pattern_recursing_without_end_is_a_usage_error(indexed: Any) -> None:
    # Depending on the value, regex runs out of time or of memory: either is the pattern's doing.
    result = indexed("query", _regex_filter("(?R)"), "--count")
    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert result.stderr.startswith("s3idx: error: $regex '(?R)' ")
