"""S3 settings that no request can use: broken AWS files, a bad region or endpoint, a
credential_process printing no valid JSON. Each is refused while the store is built, before
any request, by every transport, with the exit status of what is wrong (2: settings, 6:
credentials); none needs a server."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointResolutionError

from s3idx.errors import AccessDeniedError, ExitStatus, UsageError
from s3idx.store.s3 import HttpS3Store, S3Store
from s3idx.store.s3_errors import translate_error
from tests.helpers import Run


def obstore_store(*args: Any, **kwargs: Any) -> Any:
    pytest.importorskip("obstore", reason="obstore is not installed (pip install 's3idx[fast]')")
    from s3idx.store.obstore_s3 import ObstoreS3Store

    return ObstoreS3Store(*args, **kwargs)


TRANSPORTS: dict[str, Callable[..., Any]] = {
    "boto3": S3Store,
    "http": HttpS3Store,
    "obstore": obstore_store,
}
DOC = b'{"fs_id": "a"}'
UNREACHABLE = "http://127.0.0.1:1"  # nothing is sent: every failure here comes first
SHAPE = "an endpoint URL is http(s)://HOST[:PORT]"
PATH = (
    f"it has a path after the host; {SHAPE}, and the bucket and prefix go in --store "
    "s3://BUCKET/PREFIX"
)
QUERY = f"it has a query ('?'); {SHAPE}"
FRAGMENT = f"it has a fragment ('#'); {SHAPE}"
USERINFO = (
    f"it names a user or password; {SHAPE}: S3 credentials come from the environment "
    "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or an AWS profile (--aws-profile)"
)
HINT = (
    "give the server's URL, e.g. --endpoint-url http://localhost:9000 (or "
    "S3IDX_ENDPOINT_URL, endpoint_url in the config file, AWS_ENDPOINT_URL)"
)


@pytest.fixture(params=list(TRANSPORTS))
def make(request: pytest.FixtureRequest) -> Callable[..., Any]:
    return TRANSPORTS[request.param]


@pytest.mark.parametrize("name", ["config", "credentials"])
def test_an_aws_file_that_cannot_be_parsed_is_a_usage_error(
    make: Callable[..., Any], fake_aws_env: Path, name: str
) -> None:
    (fake_aws_env / name).write_text("[default\nx=1\n")
    with pytest.raises(UsageError) as excinfo:
        make("bkt", "p", endpoint_url=UNREACHABLE)
    assert excinfo.value.message == (
        f"cannot read the AWS config files for s3://bkt/p: Unable to parse config file: "
        f"{fake_aws_env / name}"
    )
    assert excinfo.value.hint is not None and "[name]" in excinfo.value.hint


@pytest.mark.parametrize("region", ["us east 1", "us-east-1/", "-x"])
def test_an_invalid_region_is_a_usage_error(make: Callable[..., Any], region: str) -> None:
    with pytest.raises(UsageError) as excinfo:
        make("bkt", "p", region=region, endpoint_url=UNREACHABLE)
    assert excinfo.value.message == f"invalid AWS region {region!r} for s3://bkt/p"


def test_an_invalid_region_of_the_aws_profile_is_a_usage_error(fake_aws_env: Path) -> None:
    (fake_aws_env / "config").write_text("[profile p]\nregion = us east 1\n")
    with pytest.raises(UsageError, match="invalid AWS region 'us east 1' for s3://bkt"):
        S3Store("bkt", profile="p")


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("ftp://x", "the scheme is 'ftp'; S3 is reached over http or https"),
        ("http://h:99999", "Port out of range 0-65535"),
        ("http://h:port", "Port could not be cast to integer value as 'port'"),
        ("http://h:0", "port 0 cannot be connected to"),
        ("http://", "it names no host"),
        ("notaurl", "it has no scheme: write http:// or https:// before the host"),
        ("localhost:9000", "it has no scheme: write http:// or https:// before the host"),
        ("HTTP://h:9000", "the scheme 'HTTP' is not lowercase: write http:// or https://"),
        ("http://h:9000/path", PATH),
        ("http://h:9000/bkt/", PATH),
        ("http://h:9000/;p", PATH),
        ("http://h:9000//", PATH),
        ("http://h:9000?x=1", QUERY),
        ("http://h:9000/?", QUERY),
        ("http://h:9000#f", FRAGMENT),
        ("http://h:9000/#", FRAGMENT),
        ("http://h:9000\n", "it holds a blank or control character"),
        (" http://h:9000", "it holds a blank or control character"),
    ],
)
def test_an_endpoint_url_no_request_can_use_is_a_usage_error(
    make: Callable[..., Any], endpoint: str, reason: str
) -> None:
    with pytest.raises(UsageError) as excinfo:
        make("bkt", "p", endpoint_url=endpoint, region="us-east-1")
    shown = endpoint.replace("?x=1", "?x=***")  # a query's values may be secrets (tokens)
    assert excinfo.value.message == f"invalid S3 endpoint URL {shown!r}: {reason}"


@pytest.mark.parametrize(
    ("endpoint", "shown"),
    [
        ("http://u:pw-Secret1@h:9000", "http://u:***@h:9000"),
        ("http://u:pw-Secret1@h:9000/", "http://u:***@h:9000/"),
        ("https://u:pw-Secret1@h", "https://u:***@h"),
        ("http://u:pw-Secret1%40x@h:9000", "http://u:***@h:9000"),
        ("http://u:pw-Secret1@x@h:9000", "http://u:***@h:9000"),
        ("http://pw-Secret1@h:9000", "http://pw-Secret1@h:9000"),
    ],
)
def test_an_endpoint_url_with_a_user_or_password_is_refused_without_the_password(
    make: Callable[..., Any], endpoint: str, shown: str
) -> None:
    """The http transport would send the userinfo in its Host header (boto3 and obstore drop
    it): refused on every transport, before any request, the password hidden."""
    with pytest.raises(UsageError) as excinfo:
        make("bkt", "p", endpoint_url=endpoint, region="us-east-1")
    assert excinfo.value.message == f"invalid S3 endpoint URL {shown!r}: {USERINFO}"
    assert excinfo.value.hint == HINT
    if ":pw" in endpoint:
        assert "Secret1" not in str(excinfo.value)


@pytest.mark.parametrize(
    "endpoint", ["http://h:9000", "http://h:9000/", "https://h", "http://[::1]:9000/", "http://h:1"]
)
def test_an_endpoint_url_of_a_host_and_port_is_taken(
    make: Callable[..., Any], endpoint: str
) -> None:
    store = make("bkt", "p", endpoint_url=endpoint, region="us-east-1")  # no request made
    store.close()


def test_an_endpoint_from_aws_endpoint_url_is_checked_too(
    make: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "ftp://x")
    with pytest.raises(UsageError, match="invalid S3 endpoint URL 'ftp://x'"):
        make("bkt", "p", region="us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://u:pw-Secret1@h:9000/")
    with pytest.raises(UsageError) as excinfo:
        make("bkt", "p", region="us-east-1")
    assert excinfo.value.message == f"invalid S3 endpoint URL 'http://u:***@h:9000/': {USERINFO}"


def test_an_endpoint_botocore_cannot_resolve_at_a_request_is_a_usage_error() -> None:
    error = translate_error(
        EndpointResolutionError(msg="Custom endpoint `ftp://x` was not a valid URI"),
        bucket="bkt",
        key="k",
    )
    assert type(error) is UsageError
    assert error.message == (
        "cannot use the S3 endpoint for s3://bkt/k: Custom endpoint `ftp://x` was not a valid URI"
    )


def credential_process(aws: Path, output: str) -> None:
    script = aws / "process.py"
    script.write_text(f"print({output!r})\n")
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"
    (aws / "config").write_text(f"[profile cp]\ncredential_process = {command}\n")


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        (
            "{bad",
            "printed no JSON (Expecting property name enclosed in double quotes at line 1 "
            "column 2)",
        ),
        ('["not", "an object"]', "printed a JSON array, not an object"),
        (
            '{"Version": 1, "AccessKeyId": "AKIDCP", "SecretAccessKey": "cpsecretvalue1", '
            '"Expiration": "soon"}',
            "printed an Expiration that is no ISO 8601 time",
        ),
        (
            '{"Version": 1, "AccessKeyId": "AKIDCP", "SecretAccessKey": "cpsecretvalue1", '
            '"Expiration": 5}',
            "printed Expiration as a number, not an ISO 8601 time",
        ),
    ],
)
def test_a_credential_process_printing_no_valid_json_is_access_denied(
    make: Callable[..., Any], fake_aws_env: Path, output: str, reason: str
) -> None:
    credential_process(fake_aws_env, output)
    with pytest.raises(AccessDeniedError) as excinfo:
        make("bkt", "p", profile="cp", endpoint_url=UNREACHABLE)
    error = excinfo.value
    assert error.exit_status == ExitStatus.ACCESS_DENIED
    assert error.message == (
        f"AWS credentials for s3://bkt/p cannot be loaded: the credential_process of AWS "
        f"profile 'cp' {reason}"
    )
    assert error.hint is not None and "credential_process" in error.hint
    assert "cpsecretvalue1" not in str(error)


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (
            "/nonexistent/helper",
            "(program '/nonexistent/helper') cannot be started: No such file or directory",
        ),
        ("{not_executable}", "(program '{not_executable}') cannot be started: Permission denied"),
        ("", "names no program"),
    ],
    ids=["missing", "not-executable", "empty"],
)
def test_a_credential_process_that_cannot_run_is_access_denied(
    make: Callable[..., Any], fake_aws_env: Path, command: str, reason: str
) -> None:
    """Not s3idx's bug (it was 'internal error: FileNotFoundError', exit 1)."""
    not_executable = fake_aws_env / "helper.sh"
    not_executable.write_text("#!/bin/sh\n")
    command = command.format(not_executable=not_executable)
    reason = reason.format(not_executable=not_executable)
    (fake_aws_env / "config").write_text(f"[profile cp]\ncredential_process = {command}\n")
    with pytest.raises(AccessDeniedError) as excinfo:
        make("bkt", "p", profile="cp", endpoint_url=UNREACHABLE)
    assert excinfo.value.message == (
        f"AWS credentials for s3://bkt/p cannot be loaded: the credential_process of AWS "
        f"profile 'cp' {reason}"
    )
    assert excinfo.value.hint is not None and "credential_process" in excinfo.value.hint


@pytest.mark.parametrize("region", ["region = us-east-1\n", ""])
def test_an_endpoint_url_from_the_aws_profile_no_request_can_use_says_where_it_came_from(
    make: Callable[..., Any], fake_aws_env: Path, region: str
) -> None:
    """Not "cannot use S3 endpoint 'default' with region None": the profile's endpoint_url is
    no endpoint named 'default', and the region, given there, was not None."""
    (fake_aws_env / "config").write_text(f"[default]\n{region}endpoint_url = notaurl\n")
    with pytest.raises(UsageError) as excinfo:
        make("bkt", "p")
    assert excinfo.value.message == (
        "cannot use the S3 endpoint for s3://bkt/p that AWS_ENDPOINT_URL or the AWS profile's "
        "endpoint_url gives: Invalid endpoint: notaurl"
    )
    assert excinfo.value.hint is not None and "endpoint_url" in excinfo.value.hint


# --- through the CLI: the exit statuses, no request made -----------------------------------


def put(run: Run, tmp_path: Path, *flags: str) -> Any:
    index = str(tmp_path / "ix.db")
    return run("put", "--store", "s3://bkt/p", "--index", index, *flags, input=b'{"fs_id": "a"}')


def test_put_and_info_with_a_broken_credentials_file_exit_2(
    run: Run, fake_aws_env: Path, tmp_path: Path
) -> None:
    (fake_aws_env / "credentials").write_text("[default\nx=1\n")
    result = put(run, tmp_path)
    assert result.exit_code == ExitStatus.USAGE
    assert result.stderr.startswith(
        "s3idx: error: cannot read the AWS config files for s3://bkt/p: Unable to parse"
    )
    info = run("info", "--store", "s3://bkt/p", "--index", str(tmp_path / "ix.db"))
    assert info.exit_code == ExitStatus.USAGE, info.stderr


@pytest.mark.parametrize("transport", ["boto3", "obstore", "http"])
@pytest.mark.parametrize(
    "flags",
    [
        ["--region", "us east 1"],
        ["--endpoint-url", "ftp://x"],
        ["--endpoint-url", "http://h:99999"],
        ["--endpoint-url", "notaurl"],
        ["--endpoint-url", "http://127.0.0.1:1/path"],
        ["--endpoint-url", "http://127.0.0.1:1?x=1"],
        ["--endpoint-url", "http://127.0.0.1:1#f"],
        ["--endpoint-url", "HTTP://127.0.0.1:1"],
    ],
)
def test_put_with_a_bad_region_or_endpoint_exits_2(
    run: Run, tmp_path: Path, transport: str, flags: list[str]
) -> None:
    if transport == "obstore":
        pytest.importorskip("obstore")
    result = put(run, tmp_path, "--transport", transport, *flags)
    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert "put:" not in result.stderr  # refused before the first document


def test_put_with_a_credential_process_printing_no_json_exits_6(
    run: Run, fake_aws_env: Path, tmp_path: Path
) -> None:
    credential_process(fake_aws_env, "{bad")
    result = put(run, tmp_path, "--aws-profile", "cp", "--endpoint-url", UNREACHABLE)
    assert result.exit_code == ExitStatus.ACCESS_DENIED
    assert (
        "AWS credentials for s3://bkt/p cannot be loaded: the credential_process of AWS profile "
        "'cp' printed no JSON (Expecting property name" in result.stderr
    )


# Every command, on every transport (a query of the index alone too): an endpoint URL with a
# password is refused before a request, the password shown nowhere (the index and the store
# exist, so nothing else is refused first).
COMMANDS = [
    ["put"],
    ["get", "a"],
    ["query"],
    ["query", "--count"],
    ["query", "--full"],
    ["delete", "a"],
    ["sync"],
    ["sync", "--check"],
    ["verify"],
    ["reindex"],
    ["rebuild-index"],
    ["info"],
]


@pytest.mark.parametrize("transport", ["boto3", "obstore", "http"])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_refuses_an_endpoint_url_with_a_password_on_every_transport(
    run: Run, tmp_path: Path, s3_endpoint: str, transport: str, command: list[str]
) -> None:
    if transport == "obstore":
        pytest.importorskip("obstore")
    index = str(tmp_path / "ix.db")
    store = ["--store", "s3://bkt1/p", "--index", index]
    stored = run("put", *store, "--endpoint-url", s3_endpoint, "--create-bucket", input=DOC)
    assert stored.exit_code == 0, stored.stderr
    host = s3_endpoint.removeprefix("http://")
    given = f"http://u:pw-Secret1@{host}"

    result = run(*command, *store, "--endpoint-url", given, "--transport", transport, input=DOC)

    assert result.exit_code == ExitStatus.USAGE, result.stderr
    assert result.stderr.endswith(
        f"s3idx: error: invalid S3 endpoint URL 'http://u:***@{host}': {USERINFO}\n  hint: {HINT}\n"
    )
    assert "Secret1" not in result.stdout + result.stderr
    assert "put:" not in result.stderr  # refused before the first document


@pytest.mark.parametrize("place", ["flags", "environment"])
@pytest.mark.parametrize(
    "command", [*COMMANDS, ["info", "--json"], ["get", "zz", "--json"]], ids=" ".join
)
def test_a_local_store_uses_no_s3_setting_and_shows_no_password(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], place: str
) -> None:
    """A local store sends no request: an endpoint URL (one with a password too) and a region
    from the environment are neither used nor checked (a global S3IDX_ENDPOINT_URL must not
    stop a put to a directory); typed as flags, they are a forgotten s3:// and refused
    (tests/test_config.py). Nothing of them is shown either way."""

    def fresh(name: str) -> list[str]:
        where = ["--store", str(tmp_path / name), "--index", str(tmp_path / f"{name}.db")]
        assert run("put", *where, input=DOC).exit_code == 0
        return where

    settings = {"endpoint_url": "http://u:pw-Secret1@h:9000", "region": "us east 1"}
    flags: list[str] = []
    expected = run(*command, *fresh("without"), input=DOC)
    for name, value in settings.items():
        if place == "flags":
            flags += [f"--{name.replace('_', '-')}", value]
        else:
            monkeypatch.setenv(f"S3IDX_{name.upper()}", value)

    result = run(*command, *fresh("with"), *flags, input=DOC)

    if place == "flags":
        assert result.exit_code == ExitStatus.USAGE, result.stderr
        if expected.exit_code != ExitStatus.USAGE:  # not a refusal of the command line itself
            assert "--endpoint-url is for an S3 store" in result.stderr
    else:
        assert result.exit_code == expected.exit_code, result.stderr
    assert "Secret1" not in result.stdout + result.stderr
    assert "us east 1" not in result.stdout + result.stderr
