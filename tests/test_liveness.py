"""Telling, on this machine, whether the process that wrote a record has died."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from s3idx import liveness
from s3idx.liveness import has_died, process_tag, tagged

pytestmark = pytest.mark.skipif(process_tag() is None, reason="no /proc to tell processes by")

_PRINT_A_TAG_AND_WAIT = """
import sys, time
from s3idx.liveness import tagged
print(tagged("run"), flush=True)
time.sleep(120)
"""


def _child() -> tuple[subprocess.Popen[bytes], str]:
    child = subprocess.Popen([sys.executable, "-c", _PRINT_A_TAG_AND_WAIT], stdout=subprocess.PIPE)
    assert child.stdout is not None
    return child, child.stdout.readline().decode().strip()


def test_a_live_process_has_not_died_and_a_killed_one_has() -> None:
    assert not has_died(tagged("me"))
    child, name = _child()
    try:
        assert name.startswith(f"run@{child.pid}.")
        assert not has_died(name)
        child.kill()
        deadline = time.monotonic() + 10
        while not has_died(name):  # killed, not yet reaped (a zombie): dead already
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()
    assert has_died(name)


def test_another_process_under_the_same_pid_is_not_the_writer() -> None:
    pid, start, machine = tagged("x").split("@")[1].split(".")
    assert has_died(f"x@{pid}.{int(start) + 1}.{machine}")


def test_nothing_is_known_of_other_machines_or_names_without_a_tag() -> None:
    pid, start, _ = tagged("x").split("@")[1].split(".")
    assert not has_died(f"x@{pid}.{int(start) + 1}.0123456789ab")
    for name in ("0f3a9c", "", "x@", "x@1.2", "x@a.b.c", f"x@-1.0.{liveness._machine()}"):
        assert not has_died(name), name


def test_a_forked_child_tags_itself_not_its_parent() -> None:
    mine = tagged("x")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, tagged("x").encode())
        os._exit(0)
    os.waitpid(pid, 0)
    theirs = os.read(read, 200).decode()
    assert theirs.startswith(f"x@{pid}.") and theirs != mine
    assert has_died(theirs)
