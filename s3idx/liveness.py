"""Whether the process that wrote a record has died: told for certain on the same machine.

A writer that leaves marks behind (a put's journal records, a FerretDB entry lock, a local
store's temporary file) names itself with ``tagged(name)``: ``name@pid.start.machine``, where
``start`` is when the process started (clock ticks since boot) and ``machine`` names this boot
and PID namespace. Another process with the same ``machine`` reads ``/proc/<pid>/stat``: no
such process, another process under that PID (another start), or a zombie means the writer
has died, so what it left can be taken over rather than after a stale bound. Anywhere else
(another machine, a container with its own PIDs, a name without a tag, a system without
``/proc``) nothing is known, and the stale bounds decide as before.

A process killed may still have requests on the wire: an upload whose body was sent, an index
write the server has not applied yet. So journal records and locks a dead writer left are
taken over only ``DEATH_SETTLE_SECONDS`` after its death is first seen (a temporary file at
once: nothing in flight can still use it).
"""

from __future__ import annotations

import functools
import os

# After seeing a writer dead, how long to wait before taking over what it left: requests it
# sent before dying are answered by then.
DEATH_SETTLE_SECONDS = 10.0

_PROC = "/proc"
_SEPARATOR = "@"
# Process states of /proc/<pid>/stat that are a process ended, not yet reaped (zombie, dead).
_DEAD_STATES = ("Z", "X", "x")


def tagged(name: str) -> str:
    """``name`` with this process's tag, or ``name`` alone where processes cannot be told."""
    tag = process_tag()
    return name if tag is None else f"{name}{_SEPARATOR}{tag}"


def has_died(name: str) -> bool:
    """Whether the process that made ``name`` with ``tagged`` has died, for certain: False
    when alive, when it ran elsewhere, and when ``name`` carries no tag."""
    _, separator, tag = name.rpartition(_SEPARATOR)
    return bool(separator) and tag_has_died(tag)


def tag_has_died(tag: str) -> bool:
    """Whether the process of ``tag`` (a ``process_tag``) has died, for certain."""
    if _machine() is None:
        return False
    try:
        pid_text, start, machine = tag.split(".")
        pid = int(pid_text)
    except ValueError:
        return False
    if machine != _machine() or pid <= 0:
        return False
    try:
        stat = _stat(pid)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if stat is None:
        return False  # unreadable: nothing is known
    state, started = stat
    return started != start or state in _DEAD_STATES


def process_tag() -> str | None:
    """``pid.start.machine`` of this process, or None where it cannot be known. Not cached
    across processes: a forked child is another process."""
    pid = os.getpid()
    if pid not in _tags:
        machine = _machine()
        try:
            stat = None if machine is None else _stat(pid)
        except OSError:
            stat = None
        _tags[pid] = None if stat is None else f"{pid}.{stat[1]}.{machine}"
    return _tags[pid]


_tags: dict[int, str | None] = {}


@functools.cache
def _machine() -> str | None:
    """This boot and PID namespace: processes with the same one see each other's /proc. The
    boot's ID is random, 60 bits of it tell machines apart. None where there is no /proc."""
    try:
        with open(f"{_PROC}/sys/kernel/random/boot_id", "rb") as file:
            boot = file.read().decode("ascii", "replace").replace("-", "").strip()
        namespace = os.stat(f"{_PROC}/self/ns/pid").st_ino
    except OSError:
        return None
    if len(boot) < 16 or not boot.isalnum():
        return None
    return f"{boot[:16].lower()}n{namespace:x}"


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of process ``pid`` from ``/proc/<pid>/stat``; None if unreadable.
    Raises FileNotFoundError when there is no such process."""
    with open(f"{_PROC}/{pid}/stat", "rb") as file:
        text = file.read().decode("ascii", "replace")
    # The command name (field 2) is in parentheses and may hold spaces and parentheses.
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return fields[0], fields[19]  # field 3, state; field 22, starttime
