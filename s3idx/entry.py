"""The ``s3idx`` console script and ``python -m s3idx``.

``s3idx --version`` is answered here, before the command line (Typer, click, the engine) is
imported: that import is most of the time the answer would otherwise take (issue 17).
Everything else goes to ``s3idx.cli.main``.
"""

from __future__ import annotations

import errno
import gc
import signal
import sys

TYPE_CHECKING = False  # not typing's: `--version` imports nothing it does not need
if TYPE_CHECKING:
    from typing import NoReturn


def main() -> NoReturn:
    if sys.argv[1:] == ["--version"]:
        _version()
    # A signal while the command line is imported is held, not raised: a KeyboardInterrupt
    # inside an extension module's import printed a traceback, or crashed the interpreter
    # (SIGSEGV in orjson's), and SIGTERM killed the process without its exit status.
    held: list[int] = []
    stops = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    for signum in stops:
        signal.signal(signum, lambda received, frame: held.append(received))
    # Imports make many objects and no garbage cycles worth finding: the collector's passes over
    # them were ~9% of a query's start-up instructions. Resumed once the command line is built.
    gc.disable()
    try:
        from s3idx import cli
    finally:
        gc.freeze()
        gc.enable()
    cli.main(held=held)  # which goes on holding them until it has read the command line


def _version() -> NoReturn:
    from s3idx._version import __version__

    try:
        if sys.stdout is None:  # started with stdout closed (`>&-`)
            raise OSError(errno.EBADF, "it is closed")
        sys.stdout.write(f"s3idx {__version__}\n")
        sys.stdout.flush()
    except OSError as exc:  # a full disk: said as every command says it (OutputError)
        if sys.stderr is not None:
            sys.stderr.write(f"s3idx: error: cannot write stdout: {exc.strerror or exc}\n")
        # What stdout still holds cannot go anywhere: the interpreter's last flush must not try.
        sys.stdout = None
        sys.exit(1)
    sys.exit(0)
