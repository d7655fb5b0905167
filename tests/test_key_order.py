"""The merges of sync, verify and a rebuild's re-check read two streams in key order: a stream
out of order is an error naming the command, never a wrong report or a dropped entry."""

from __future__ import annotations

import pytest

from s3idx.engine.probe import in_key_order
from s3idx.errors import S3idxError
from s3idx.store.base import ObjectInfo


def _listed(*keys: str) -> list[ObjectInfo]:
    return [ObjectInfo(key=k, etag='"e"', size=1) for k in keys]


def test_streams_in_key_order_pass_through() -> None:
    assert [o.key for o in in_key_order(iter(_listed("a", "b", "é")), "store listing", "sync")] == [
        "a",
        "b",
        "é",
    ]
    assert list(in_key_order(iter([("a", 1), ("b", 2)]), "index", "verify")) == [("a", 1), ("b", 2)]


@pytest.mark.parametrize("keys", [("a", "c", "b"), ("a", "a")])
def test_a_key_out_of_order_or_repeated_is_an_error_naming_the_command(
    keys: tuple[str, ...],
) -> None:
    stream = in_key_order(iter(_listed(*keys)), "store listing", "rebuild-index")
    with pytest.raises(S3idxError) as raised:
        list(stream)
    assert raised.value.message.startswith("the store listing is not in key order (")
    assert raised.value.message.endswith("; rebuild-index cannot compare it")
