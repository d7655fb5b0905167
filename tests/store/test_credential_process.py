"""A credential_process (an AWS profile's helper printing credentials as JSON) that fails, or
prints an answer botocore cannot use, is an access error (exit 6) naming the profile and what
is wrong: never an internal error (exit 1), never a traceback, never a secret. What the helper
wrote to stderr is not quoted: it may hold secrets of any shape, which no redaction can tell
from other text. No server is needed: everything here fails before the first request."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from s3idx.errors import ExitStatus
from s3idx.store import s3_errors
from tests.helpers import Run

UNREACHABLE = "http://127.0.0.1:1"
# Secrets shorter than the 40 characters of an AWS secret key: the redaction of vendor text
# cannot tell them from words.
SECRETS = ("AKIDSHORT", "shortsecret9", "tok-12345", "cpsecretvalue1", "tokensecret7")
CANNOT_LOAD = "s3idx: error: AWS credentials for s3://bkt/p cannot be loaded: "


def helper(aws: Path, body: str, profile: str = "cp", extra: str = "") -> Path:
    """An AWS profile whose credential_process runs the Python ``body``."""
    script = aws / f"process_{profile}.py"
    script.write_text(f"import json, sys\n{body}\n")
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"
    config = aws / "config"
    config.write_text(f"{extra}[profile {profile}]\ncredential_process = {command}\n")
    return config


def _changed(base: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``fields`` set, or removed where their value is ``KeyError``."""
    for name, value in fields.items():
        if value is KeyError:
            del base[name]
        else:
            base[name] = value
    return base


def answer(**fields: Any) -> str:
    base: dict[str, Any] = {
        "Version": 1,
        "AccessKeyId": "AKIDSHORT",
        "SecretAccessKey": "cpsecretvalue1",
        "SessionToken": "tokensecret7",
        "Expiration": "2099-01-01T00:00:00Z",
    }
    return f"print({json.dumps(_changed(base, fields))!r})"


def put(run: Run, tmp_path: Path, *flags: str) -> Any:
    return run(
        "put",
        "--store",
        "s3://bkt/p",
        "--index",
        str(tmp_path / "ix.db"),
        "--endpoint-url",
        UNREACHABLE,
        *flags,
        input=b'{"fs_id": "a"}\n',
    )


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text
    assert "Traceback" not in text and "internal error" not in text, text


@pytest.mark.parametrize("transport", ["boto3", "http"])
def test_a_failing_credential_process_is_named_but_its_messages_are_not_shown(
    run: Run, fake_aws_env: Path, tmp_path: Path, transport: str
) -> None:
    config = helper(
        fake_aws_env,
        f"{answer()}\n"
        "sys.stderr.write('login failed for AKIDSHORT / shortsecret9 (tok-12345)\\n')\n"
        "sys.exit(3)",
    )
    result = put(run, tmp_path, "--aws-profile", "cp", "--transport", transport)
    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    assert_no_secret(result.stdout + result.stderr)
    assert result.stderr.startswith(
        f"{CANNOT_LOAD}the credential_process of AWS profile 'cp' (program "
        f"'{sys.executable}') exited with status 3; what it wrote is not shown, as it may "
        "hold secrets\n"
    ), result.stderr
    assert (
        f"run the credential_process line of AWS profile 'cp' (in {config} or "
        f"{config.parent / 'credentials'}) by hand" in result.stderr
    ), result.stderr


def test_a_credential_process_killed_by_a_signal_is_said_so(
    run: Run, fake_aws_env: Path, tmp_path: Path
) -> None:
    helper(fake_aws_env, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    result = put(run, tmp_path, "--aws-profile", "cp")
    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    assert "(program " in result.stderr and "was killed by signal 9 (SIGKILL)" in result.stderr


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            "print('{bad')",
            "printed no JSON (Expecting property name enclosed in double quotes "
            "at line 1 column 2)",
        ),
        ("pass", "printed nothing"),
        ("print('[\"AKIDSHORT\"]')", "printed a JSON array, not an object"),
        ("print('null')", "printed a JSON null, not an object"),
        (answer(Version=KeyError), "printed no Version (it must be 1)"),
        (answer(Version=2), "printed Version 2 (it must be 1)"),
        (answer(Version="tokensecret7"), "printed Version as a string (it must be 1)"),
        (answer(AccessKeyId=KeyError), "printed no AccessKeyId"),
        (answer(SecretAccessKey=KeyError), "printed no SecretAccessKey"),
        (answer(AccessKeyId=5), "printed AccessKeyId as a number, not a string"),
        (answer(AccessKeyId=""), "printed an empty AccessKeyId"),
        (
            answer(SecretAccessKey=["cpsecretvalue1"]),
            "printed SecretAccessKey as an array, not a string",
        ),
        (
            answer(SessionToken={"t": "tokensecret7"}),
            "printed SessionToken as an object, not a string",
        ),
        (answer(SessionToken=True), "printed SessionToken as a boolean, not a string"),
        (answer(Expiration=5), "printed Expiration as a number, not an ISO 8601 time"),
        (answer(Expiration="soon tokensecret7"), "printed an Expiration that is no ISO 8601 time"),
        (
            answer(Expiration="2099-01-01T00:00:00"),
            "printed an Expiration without a time zone (add Z for UTC)",
        ),
        (
            answer(Expiration="2001-02-03T04:05:06Z"),
            "printed credentials that expired at 2001-02-03T04:05:06+00:00",
        ),
    ],
    ids=lambda value: value[:40] if isinstance(value, str) else value,
)
def test_every_answer_botocore_cannot_use_exits_6_naming_the_profile_and_what_is_wrong(
    run: Run, fake_aws_env: Path, tmp_path: Path, body: str, problem: str
) -> None:
    """Not 'internal error' (exit 1): a SessionToken that is an object, an expired answer, a
    naive Expiration failed only once the first request was signed."""
    helper(fake_aws_env, body)
    result = put(run, tmp_path, "--aws-profile", "cp")
    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    assert_no_secret(result.stdout + result.stderr)
    assert result.stderr.startswith(
        f"{CANNOT_LOAD}the credential_process of AWS profile 'cp' {problem}\n"
    ), result.stderr
    assert "put:" not in result.stderr  # refused before the first document


def test_a_credential_process_of_a_source_profile_is_checked_alike(
    run: Run, fake_aws_env: Path, tmp_path: Path
) -> None:
    """A role's source_profile with a credential_process: botocore builds that provider itself."""
    helper(
        fake_aws_env,
        answer(SessionToken={"t": "tokensecret7"}),
        profile="src",
        extra="[profile role]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = src\n",
    )
    result = put(run, tmp_path, "--aws-profile", "role")
    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    assert_no_secret(result.stdout + result.stderr)
    assert result.stderr.startswith(
        f"{CANNOT_LOAD}the credential_process of AWS profile 'src' printed SessionToken as an "
        "object, not a string\n"
    ), result.stderr


def test_a_role_needing_an_mfa_code_with_no_terminal_exits_6_and_leaves_stdin_alone(
    run: Run, fake_aws_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore asks for a role's MFA code with getpass, which reads stdin when there is no
    terminal (cron): it took put's first document for the code. With no terminal to ask on,
    the role's credentials are refused instead."""
    monkeypatch.setattr(s3_errors, "TERMINAL", str(tmp_path / "no-tty"))
    (fake_aws_env / "config").write_text(
        "[profile base]\naws_access_key_id = AKIDSHORT\naws_secret_access_key = secret\n"
        "[profile role]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = base\n"
        "mfa_serial = arn:aws:iam::123456789012:mfa/me\n"
    )
    result = put(run, tmp_path, "--aws-profile", "role")
    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    assert ": put: 0 read, 0 stored" in result.stderr  # no document taken for the code
    assert result.stderr.endswith(
        f"{CANNOT_LOAD}AWS profile 'role' needs an MFA code (mfa_serial), and there is no "
        "terminal to ask for it on: s3idx does not read it from stdin\n"
        "  hint: run the command from a terminal, or give it credentials that need no MFA "
        "code (e.g. a session exported by `aws configure export-credentials` into AWS_* "
        "variables)\n"
    ), result.stderr


def test_a_credential_process_answer_that_can_be_used_is_used(
    run: Run, fake_aws_env: Path, tmp_path: Path
) -> None:
    """The checks refuse nothing botocore can use: the put goes as far as the endpoint. An
    AccountId of any JSON type is left alone (no S3 request uses it), and so is a Version
    of 1.0."""
    helper(
        fake_aws_env,
        answer(Version=1.0, SessionToken=None, Expiration=None, AccountId=123456789012),
    )
    result = put(run, tmp_path, "--aws-profile", "cp")
    assert result.exit_code == ExitStatus.UNAVAILABLE, result.stderr
    assert "cannot reach S3 at http://127.0.0.1:1" in result.stderr


@pytest.mark.parametrize("good_answers", [1, 2])
@pytest.mark.parametrize("transport", ["boto3", "http", "obstore"])
def test_a_refresh_that_fails_mid_run_exits_6(
    run: Run,
    fake_aws_env: Path,
    tmp_path: Path,
    s3_endpoint: str,
    s3_bucket: str,
    transport: str,
    good_answers: int,
) -> None:
    """Credentials expiring within botocore's mandatory refresh window (10 minutes) are asked
    for again before each use: a later answer is checked as the first was (it was 'internal
    error', exit 1, once a request was signed). After one good answer the bucket check's
    refresh is refused; after two, the first upload's (the http transport's event loop and
    obstore read them for their own signatures)."""
    if transport == "obstore":
        pytest.importorskip("obstore")
    count = fake_aws_env / "count"
    soon = "(__import__('datetime').datetime.now(__import__('datetime').timezone.utc)"
    soon += " + __import__('datetime').timedelta(minutes=5)).isoformat()"
    helper(
        fake_aws_env,
        f"import pathlib\np = pathlib.Path({str(count)!r})\n"
        "n = int(p.read_text()) if p.exists() else 0\np.write_text(str(n + 1))\n"
        f"if n >= {good_answers}:\n"
        "    print(json.dumps({'Version': 1, 'AccessKeyId': 'AKIDSHORT', "
        "'SecretAccessKey': 'cpsecretvalue1', 'SessionToken': {'t': 1}}))\n"
        f"else:\n    print(json.dumps({{'Version': 1, 'AccessKeyId': 'AKIDSHORT', "
        f"'SecretAccessKey': 'cpsecretvalue1', 'Expiration': {soon}}}))",
    )
    result = run(
        "put",
        "--store",
        f"s3://{s3_bucket}/p",
        "--index",
        str(tmp_path / "ix.db"),
        "--endpoint-url",
        s3_endpoint,
        "--aws-profile",
        "cp",
        "--transport",
        transport,
        input=b'{"fs_id": "a"}\n{"fs_id": "b"}\n',
    )
    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    assert_no_secret(result.stdout + result.stderr)
    assert (
        "the credential_process of AWS profile 'cp' printed SessionToken as an object, not a "
        "string" in result.stderr
    ), result.stderr


# --- the container credentials endpoint (ECS, EKS Pod Identity, a local credentials server) --


def container_endpoint(status: int, body: str) -> Any:
    """A credentials server on a loopback port answering every GET so; yields its URL."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


CONTAINER = "the container credentials endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI) "


def container_answer(**fields: Any) -> str:
    base: dict[str, Any] = {
        "AccessKeyId": "AKIDSHORT",
        "SecretAccessKey": "cpsecretvalue1",
        "Token": "tokensecret7",
        "Expiration": "2099-01-01T00:00:00Z",
    }
    return json.dumps(_changed(base, fields))


def test_a_credential_process_that_never_answers_is_stopped_and_said_so(
    run: Run, fake_aws_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore waits for a credential_process for ever: a cron job's s3idx hung with it. It
    is given CREDENTIAL_PROCESS_TIMEOUT, then killed, and the run exits 6 saying so, even
    when a program it started still holds its output open."""
    monkeypatch.setattr(s3_errors, "CREDENTIAL_PROCESS_TIMEOUT", 0.5)
    pids = tmp_path / "pids"
    helper(
        fake_aws_env,
        "import os, subprocess, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)",
    )
    started = time.monotonic()
    result = put(run, tmp_path, "--aws-profile", "cp")
    assert time.monotonic() - started < 20
    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    assert result.stderr.startswith(
        f"{CANNOT_LOAD}the credential_process of AWS profile 'cp' (program "
        f"'{sys.executable}') did not answer within 0.5 s: it was stopped\n"
    ), result.stderr
    process, child = map(int, pids.read_text().split())
    os.kill(child, signal.SIGKILL)  # left running (see _stop); this test's to end
    with pytest.raises(ProcessLookupError):
        os.kill(process, 0)  # killed, and reaped


@pytest.mark.parametrize(
    ("status", "body", "problem"),
    [
        (
            500,
            "denied: token shortsecret9, auth tok-12345",
            "answered HTTP 500; its answer is not shown, as it may hold secrets",
        ),
        (200, "{}", "answered no AccessKeyId"),
        (200, container_answer(Token=KeyError), "answered no Token"),
        (200, container_answer(Expiration=KeyError), "answered no Expiration"),
        (
            200,
            container_answer(Token={"t": "tokensecret7"}),
            "answered Token as an object, not a string",
        ),
        (
            200,
            container_answer(Expiration="2001-02-03T04:05:06Z"),
            "answered credentials that expired at 2001-02-03T04:05:06+00:00",
        ),
    ],
    ids=["500", "empty", "no-token", "no-expiration", "token-object", "expired"],
)
def test_a_container_credentials_answer_that_cannot_be_used_exits_6(
    run: Run,
    fake_aws_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    body: str,
    problem: str,
) -> None:
    """The siblings of a credential_process's answer: they were 'internal error' (exit 1), and
    an error answer's body was quoted, the authorization token s3idx sent included."""
    server = container_endpoint(status, body)
    try:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name)
        port = server.server_address[1]
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{port}/c")
        monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "tok-12345")
        result = put(run, tmp_path)
    finally:
        server.shutdown()
    assert result.exit_code == ExitStatus.ACCESS_DENIED, result.stderr
    assert_no_secret(result.stdout + result.stderr)
    assert result.stderr.startswith(f"{CANNOT_LOAD}{CONTAINER}{problem}\n"), result.stderr


@pytest.mark.parametrize(
    ("provider", "error_msg", "shown"),
    [
        ("custom-process", "login failed for shortsecret9\n", "its answer is not shown"),
        (
            "container-role",
            "Error retrieving metadata: Received non 200 response 403 from container "
            "metadata: token tok-12345",
            "its answer is not shown",
        ),
    ],
)
def test_a_credential_source_botocore_reports_itself_is_not_quoted_either(
    provider: str, error_msg: str, shown: str
) -> None:
    """Should botocore build one of these providers where s3idx does not check it (its
    internals changed), its error is still said without what the source said."""
    from botocore.exceptions import CredentialRetrievalError

    from s3idx.store.s3_errors import translate_error

    error = translate_error(
        CredentialRetrievalError(provider=provider, error_msg=error_msg), bucket="bkt"
    )
    assert error.exit_status == ExitStatus.ACCESS_DENIED
    assert error.message == (
        f"AWS credentials for s3://bkt cannot be used: {provider} failed; {shown}, as it may "
        "hold secrets"
    )
    assert_no_secret(str(error))


# --- the other credential sources the prober's findings border on: already right, pinned ----

SSO = "sso_account_id = 123456789012\nsso_role_name = R\n"


@pytest.mark.parametrize(
    ("environment", "config", "status", "said"),
    [
        ({"AWS_SESSION_TOKEN": "tok-12345"}, "", 6, "no AWS credentials found for s3://bkt/p"),
        ({"AWS_SECRET_ACCESS_KEY": "shortsecret9"}, "", 6, "no AWS credentials found"),
        (
            {"AWS_ACCESS_KEY_ID": "AKIDSHORT", "AWS_SESSION_TOKEN": "tok-12345"},
            "",
            6,
            "Partial credentials found in env, missing: AWS_SECRET_ACCESS_KEY",
        ),
        ({"AWS_PROFILE": "nobody"}, "", 2, "AWS profile 'nobody' is not defined"),
        (
            {"AWS_PROFILE": "s"},
            "[profile s]\nsso_start_url = https://x.awsapps.com/start\n"
            f"sso_region = us-east-1\n{SSO}",
            6,
            "Error loading SSO Token: Token for https://x.awsapps.com/start does not exist",
        ),
        (
            {"AWS_PROFILE": "s"},
            f"[profile s]\nsso_session = my\n{SSO}[sso-session my]\n"
            "sso_start_url = https://x.awsapps.com/start\nsso_region = us-east-1\n",
            6,
            "Error loading SSO Token: Token for my does not exist",
        ),
        (
            {"AWS_PROFILE": "s"},
            f"[profile s]\nsso_session = gone\n{SSO}",
            6,
            'The specified sso-session does not exist: "gone"',
        ),
        (
            {"AWS_PROFILE": "r"},
            "[profile r]\nrole_arn = arn:aws:iam::123456789012:role/x\nsource_profile = gone\n",
            6,
            'The source_profile "gone" referenced in the profile "r" does not exist.',
        ),
    ],
    ids=[
        "token-only",
        "secret-only",
        "key-and-token",
        "unknown-profile",
        "sso-no-cache",
        "sso-session-no-cache",
        "sso-session-missing",
        "source-profile-missing",
    ],
)
def test_other_credential_sources_that_cannot_be_used_say_why_without_a_secret(
    run: Run,
    fake_aws_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    environment: dict[str, str],
    config: str,
    status: int,
    said: str,
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    (fake_aws_env / "config").write_text(config)
    result = put(run, tmp_path)
    assert result.exit_code == status, result.stderr
    assert said in result.stderr, result.stderr
    assert_no_secret(result.stdout + result.stderr)


def test_a_credential_process_reading_stdin_does_not_take_the_documents_of_put(
    fake_aws_env: Path, tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    """It ran with s3idx's stdin, the put's input: one that reads it (to prompt for an MFA code,
    say, behind a stderr no one sees) took every document, and the put stored none, exit 0.
    Its stdin is now empty. A real process: the CLI runner's stdin is no descriptor."""
    import subprocess

    from tests.helpers import subprocess_env

    helper(fake_aws_env, f"sys.stdin.read()\n{answer(SessionToken=None, Expiration=None)}")
    where = ["--store", f"s3://{s3_bucket}/p", "--index", str(tmp_path / "ix.db")]
    where += ["--endpoint-url", s3_endpoint, "--aws-profile", "cp"]
    result = subprocess.run(
        [sys.executable, "-m", "s3idx", "put", *where],
        input=b'{"fs_id": "a"}\n{"fs_id": "b"}\n',
        capture_output=True,
        env=subprocess_env(tmp_path / "home"),
        timeout=60,
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "put: 2 read, 2 stored" in stderr, stderr
