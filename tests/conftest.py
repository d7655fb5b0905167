"""Shared fixtures: an isolated environment per test, and one store fixture per backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3idx.store.base import ObjectStore
from s3idx.store.local import LocalStore

STORE_KINDS = ["local"]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test sees the user's s3idx settings, data directory or config file."""
    home = tmp_path_factory.mktemp("home")
    for name in list(os.environ):
        if name.startswith("S3IDX_") and name != "S3IDX_TEST_MONGODB_URI":
            monkeypatch.delenv(name)
    monkeypatch.setenv("S3IDX_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    return home


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """Each object-store backend in turn, empty."""
    if request.param == "local":
        backend: ObjectStore = LocalStore(tmp_path / "store")
    else:  # pragma: no cover - kinds are added with their backends
        raise AssertionError(request.param)
    yield backend
    backend.close()
