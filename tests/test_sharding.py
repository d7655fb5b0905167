"""The shard function is stable and parse_shard reads I/N and the schedulers' variables."""

import pytest

from s3idx.errors import UsageError
from s3idx.sharding import Shard, parse_shard, shard_of


def test_shard_of_is_pinned() -> None:
    # These values are part of the public contract (README): a change here breaks every
    # user's running split. sha256("mp-1")[:8] as a big-endian integer, modulo the count.
    import hashlib

    expected = int.from_bytes(hashlib.sha256(b"mp-1").digest()[:8], "big")
    assert shard_of("mp-1", 7) == expected % 7
    assert [shard_of(k, 4) for k in ("a", "b", "c", "mp-1", "é")] == [
        shard_of(k, 4) for k in ("a", "b", "c", "mp-1", "é")
    ]
    assert {shard_of(f"k{i}", 4) for i in range(200)} == {0, 1, 2, 3}


def test_shards_partition_keys() -> None:
    keys = [f"doc-{i}" for i in range(1000)]
    owners = [[s for s in range(3) if Shard(s, 3).owns(k)] for k in keys]
    assert all(len(o) == 1 for o in owners)
    counts = [sum(1 for o in owners if o == [s]) for s in range(3)]
    assert min(counts) > 250  # roughly even


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("2/5", {}, Shard(2, 5)),
        (" 0 / 1 ", {}, Shard(0, 1)),
        ("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, Shard(3, 4)),
        (
            "auto",
            {
                "SLURM_ARRAY_TASK_ID": "11",
                "SLURM_ARRAY_TASK_MIN": "10",
                "SLURM_ARRAY_TASK_COUNT": "4",
            },
            Shard(1, 4),
        ),
        ("auto", {"JOB_COMPLETION_INDEX": "2", "S3IDX_SHARD_COUNT": "3"}, Shard(2, 3)),
        ("AUTO", {"AWS_BATCH_JOB_ARRAY_INDEX": "0", "S3IDX_SHARD_COUNT": "2"}, Shard(0, 2)),
    ],
)
def test_parse_shard(text: str, environ: dict[str, str], expected: Shard) -> None:
    assert parse_shard(text, environ) == expected


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("3/3", {}, "shard 3 does not exist in 3 shards"),
        ("1/0", {}, "the shard count must be between 1 and 1,000,000, not 0"),
        ("1-3", {}, "--shard '1-3' is not I/N or auto"),
        ("auto", {}, "--shard auto: no batch scheduler found"),
        (
            "auto",
            {"JOB_COMPLETION_INDEX": "1"},
            "--shard auto: running in a Kubernetes Indexed Job (JOB_COMPLETION_INDEX=1), but "
            "S3IDX_SHARD_COUNT is not set",
        ),
        (
            "auto",
            {"AWS_BATCH_JOB_ARRAY_INDEX": "x", "S3IDX_SHARD_COUNT": "2"},
            "--shard auto: AWS_BATCH_JOB_ARRAY_INDEX='x' is not a whole number",
        ),
        # Digits int() cannot read (a superscript two) are not a number either: no crash.
        (
            "auto",
            {"JOB_COMPLETION_INDEX": "1", "S3IDX_SHARD_COUNT": "\u00b2"},
            "--shard auto: S3IDX_SHARD_COUNT='\u00b2' is not a whole number",
        ),
        (
            "auto",
            {"JOB_COMPLETION_INDEX": "\u00b2", "S3IDX_SHARD_COUNT": "4"},
            "--shard auto: JOB_COMPLETION_INDEX='\u00b2' is not a whole number",
        ),
        # A scheduler's index outside 0..N-1 (a SLURM array with a step, --array=0-15:2, has
        # IDs 0, 2, ..., 14 of a count of 8): the variables that gave it are named.
        (
            "auto",
            {
                "SLURM_ARRAY_TASK_ID": "10",
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_COUNT": "8",
            },
            "--shard auto: SLURM_ARRAY_TASK_ID=10 minus SLURM_ARRAY_TASK_MIN=0 is shard 10, "
            "but SLURM_ARRAY_TASK_COUNT=8 gives shards 0 to 7",
        ),
        (
            "auto",
            {"JOB_COMPLETION_INDEX": "5", "S3IDX_SHARD_COUNT": "4"},
            "--shard auto: JOB_COMPLETION_INDEX=5 is shard 5, but S3IDX_SHARD_COUNT=4 gives "
            "shards 0 to 3",
        ),
        (
            "auto",
            {"JOB_COMPLETION_INDEX": "0", "S3IDX_SHARD_COUNT": "0"},
            "the shard count must be between 1 and 1,000,000, not 0",
        ),
    ],
)
def test_parse_shard_refusals(text: str, environ: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_shard(text, environ)
    assert caught.value.message.startswith(message)


def test_a_slurm_array_with_a_step_is_explained() -> None:
    environ = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "3"}
    with pytest.raises(UsageError) as caught:
        parse_shard("auto", environ)
    assert caught.value.hint == (
        "a SLURM array whose task IDs are not consecutive (with a step, as 0-15:2, or a list, "
        "as 1,5,9) cannot give shard numbers: use consecutive IDs (as 0-15), or give "
        "--shard I/N"
    )


@pytest.mark.parametrize(
    ("index", "count", "message"),
    [
        (0.5, 2, "a shard's index and count must be whole numbers, not 0.5 and 2"),
        (1, 2.0, "a shard's index and count must be whole numbers, not 1 and 2.0"),
        ("0", 4, "a shard's index and count must be whole numbers, not '0' and 4"),
        (True, 2, "a shard's index and count must be whole numbers, not True and 2"),
    ],
)
def test_a_shard_of_other_types_is_refused(index: object, count: object, message: str) -> None:
    # Shard(0.5, 2) owned no key: a put with it stored nothing and counted every document as
    # another shard's.
    with pytest.raises(UsageError) as caught:
        Shard(index, count)  # type: ignore[arg-type]
    assert caught.value.message == message
