"""FerretDB v1 for the tests: a MongoDB wire-protocol server over SQLite, built from Go source.

The server is the small Go program in ``tests/ferretdb_server`` (it embeds FerretDB's
``ferretdb`` package; its ``main.go`` says why not ``go install .../cmd/ferretdb``). It is
built once into a cache outside the source tree::

    ${S3IDX_FERRETDB_CACHE:-~/.cache/s3idx/ferretdb-v1.24.2}/bin/s3idx-ferretdb-<source hash>

so a changed ``main.go``/``go.mod``/``go.sum`` builds a new binary. ``python -m tests.ferretdb``
builds it (``.ci/run`` does, before pytest) and prints its path.

Where neither a cached binary nor Go is there, the tests that need FerretDB are skipped with
that reason; under CI (``CI=true``) they fail instead, so CI cannot pass by skipping them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

FERRETDB_VERSION = "v1.24.2"
SOURCE_DIR = Path(__file__).resolve().parent / "ferretdb_server"
SOURCE_FILES = ("main.go", "go.mod", "go.sum")
# Read once at import: the tests' isolated environment removes S3IDX_* variables.
CACHE_DIR = Path(
    os.environ.get("S3IDX_FERRETDB_CACHE")
    or Path.home() / ".cache" / "s3idx" / f"ferretdb-{FERRETDB_VERSION}"
)
BUILD_TIMEOUT = 900  # seconds; a first build downloads and compiles FerretDB (~1-2 min)
START_TIMEOUT = 30.0


class FerretDBUnavailable(Exception):
    """FerretDB cannot be built or started here; the message says why."""


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def binary_path() -> Path:
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        digest.update((SOURCE_DIR / name).read_bytes())
    return CACHE_DIR / "bin" / f"s3idx-ferretdb-{digest.hexdigest()[:12]}"


_build_lock = threading.Lock()


def ensure_binary() -> Path:
    """The cached server binary, built first if it is missing."""
    path = binary_path()
    with _build_lock:
        if path.is_file() and os.access(path, os.X_OK):
            return path
        go = shutil.which("go")
        if go is None:
            raise FerretDBUnavailable(
                f"FerretDB is not built ({path} is missing) and Go is not installed to build it"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        # Built beside its final name and renamed: a concurrent build or an interrupted one
        # never leaves a half-written binary under that name.
        fd, partial = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
        os.close(fd)
        try:
            result = subprocess.run(
                [go, "build", "-mod=readonly", "-trimpath", "-o", partial, "."],
                cwd=SOURCE_DIR,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
            )
            if result.returncode != 0:
                raise FerretDBUnavailable(
                    f"building FerretDB {FERRETDB_VERSION} failed:\n{result.stderr[-3000:]}"
                )
            os.chmod(partial, 0o755)
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    return path


class FerretDBServer:
    """One FerretDB process over a SQLite directory; ``uri`` is ``mongodb://127.0.0.1:PORT/``."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        data = workdir / "data"
        data.mkdir(parents=True, exist_ok=True)  # FerretDB needs the directory to exist
        self.log_path = workdir / "ferretdb.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(binary), f"--sqlite-url=file:{data}/", "--listen-addr=127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
        )
        try:
            self.uri = self._read_uri()
            self._wait_for_ping()
        except BaseException:
            self.stop()
            raise
        self.host_port = self.uri.removeprefix("mongodb://").rstrip("/")

    def _read_uri(self) -> str:
        assert self.process.stdout is not None
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.process.stdout.readline()))  # type: ignore[union-attr]
        reader.daemon = True
        reader.start()
        reader.join(START_TIMEOUT)
        text = line[0].decode().strip() if line else ""
        if not text.startswith("listening mongodb://"):
            raise FerretDBUnavailable(f"FerretDB did not start: {text!r}; log:\n{self.log()}")
        return text.removeprefix("listening ")

    def _wait_for_ping(self) -> None:
        import pymongo

        deadline = time.monotonic() + START_TIMEOUT
        with pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=500) as client:
            while True:
                try:
                    client.admin.command("ping")
                    return
                except pymongo.errors.PyMongoError as exc:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise FerretDBUnavailable(
                            f"FerretDB does not answer a ping: {exc}; log:\n{self.log()}"
                        ) from None
                    time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """As a crash would: SIGKILL, no shutdown."""
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


def main() -> int:
    try:
        print(ensure_binary())
    except FerretDBUnavailable as exc:
        print(f"ferretdb: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
