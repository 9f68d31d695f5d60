# ruff: noqa: F811 - a test's fixture argument shadows the fixture imported by name
"""``pully function add | status | deploy | delete`` against moto over real HTTP, each through
click's runner and as a subprocess (the ``cli`` fixture runs both)."""

from __future__ import annotations

import base64
import hashlib
import runpy

from .aws_support import BUCKET, Aws, Cli, aws, cli, local_cli, moto_url, one_line_error, sub_cli  # noqa: F401 - fixtures


def configure(cli: Cli, aws: Aws, role: bool = True) -> None:
    cli.env.update(aws.env, PULLY_S3_BUCKET=BUCKET)
    if role:
        cli.env["PULLY_LAMBDA_ROLE"] = aws.lambda_role()


def status_of(cli: Cli) -> dict[str, str]:
    """Function name -> state, read from the table a user sees."""
    result = cli("function", "status")
    assert result.exit_code == 0, result.output
    states = {}
    for line in result.stdout.splitlines():
        words = line.split()
        if len(words) < 3 or not words[1].startswith("pully-"):
            continue  # the header and the summary line
        for state in ("Create", "Update", "No Change", "Deleted locally"):
            if f" {state} " in f" {line} ":
                states[words[0]] = state
    return states


def test_add_scaffolds_a_working_uppercase_function(cli: Cli) -> None:
    result = cli("function", "add", "upper")
    assert result.exit_code == 0, result.output
    assert "Created functions/upper/handler.py" in result.stdout
    assert "pully relationships push" in result.stdout
    handler = runpy.run_path(str(cli.cwd / "functions" / "upper" / "handler.py"))["handler"]
    assert handler({"channel": "chat", "data": "hello", "client": "c1"}, None) == {"data": "HELLO"}
    assert handler({"channel": "chat", "data": {"n": 1}, "client": "c1"}, None) == {
        "data": {"n": 1}
    }
    # what docs/functions.md promises for a message object: its text uppercased
    chat = {"text": "hello", "user": "ann"}
    assert handler({"channel": "chat", "data": chat, "client": "c1"}, None) == {
        "data": {"text": "HELLO", "user": "ann"}
    }
    assert "--url http://127.0.0.1:8080" in result.stdout  # the default port


def test_add_hints_at_the_configured_port(local_cli: Cli) -> None:
    by_flag = local_cli("function", "add", "a", "--port", "9123")
    assert "pully relationships push relationships.json --url http://127.0.0.1:9123" in (
        by_flag.stdout
    )
    by_env = local_cli("function", "add", "b", env={"PULLY_PORT": "9124"})
    assert "--url http://127.0.0.1:9124" in by_env.stdout


def test_add_refuses_an_existing_or_invalid_name_with_one_line(cli: Cli) -> None:
    assert cli("function", "add", "upper").exit_code == 0
    before = (cli.cwd / "functions" / "upper" / "handler.py").read_text()
    one_line_error(cli("function", "add", "upper"), 1, "pully: function 'upper' already exists")
    assert (cli.cwd / "functions" / "upper" / "handler.py").read_text() == before
    one_line_error(cli("function", "add", "Bad/Name"), 2, "pully: invalid function name")
    assert not (cli.cwd / "functions" / "Bad").exists()


def test_add_honours_the_functions_dir_setting(local_cli: Cli) -> None:
    result = local_cli("function", "add", "echo", "--functions-dir", "lib/fns")
    assert result.exit_code == 0, result.output
    assert (local_cli.cwd / "lib" / "fns" / "echo" / "handler.py").is_file()


def test_status_goes_create_no_change_update_deleted_locally(cli: Cli, aws: Aws) -> None:
    configure(cli, aws)
    cli("function", "add", "upper")
    cli("function", "add", "lower")
    assert status_of(cli) == {"lower": "Create", "upper": "Create"}

    result = cli("function", "deploy")
    assert result.exit_code == 0, result.output
    assert "Deployed: 2 created, 0 updated, 0 unchanged." in result.stdout
    assert status_of(cli) == {"lower": "No Change", "upper": "No Change"}

    handler = cli.cwd / "functions" / "upper" / "handler.py"
    handler.write_text(handler.read_text().replace(".upper()", ".upper() + '!'"))
    assert status_of(cli) == {"lower": "No Change", "upper": "Update"}

    for path in sorted((cli.cwd / "functions" / "lower").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (cli.cwd / "functions" / "lower").rmdir()
    assert status_of(cli) == {"lower": "Deleted locally", "upper": "Update"}


def test_deploy_creates_lambda_functions_from_s3_and_is_idempotent(
    local_cli: Cli, aws: Aws
) -> None:
    configure(local_cli, aws)
    local_cli("function", "add", "upper")
    first = local_cli("function", "deploy", "upper")
    assert first.exit_code == 0, first.output
    assert "created" in first.stdout and "upper -> pully-upper" in first.stdout

    lam, s3 = aws.client("lambda"), aws.client("s3")
    config = lam.get_function(FunctionName="pully-upper")["Configuration"]
    assert config["Runtime"] == "python3.12"
    assert config["Handler"] == "handler.handler"
    assert config["Role"] == local_cli.env["PULLY_LAMBDA_ROLE"]
    zipped = s3.get_object(Bucket=BUCKET, Key="functions/upper.zip")["Body"].read()
    assert config["CodeSha256"] == base64.b64encode(hashlib.sha256(zipped).digest()).decode()

    again = local_cli("function", "deploy")
    assert again.exit_code == 0, again.output
    assert "Nothing to deploy: every function is up to date (1 unchanged)." in again.stdout
    assert (
        lam.get_function(FunctionName="pully-upper")["Configuration"]["LastModified"]
        == (config["LastModified"])
    )

    handler = local_cli.cwd / "functions" / "upper" / "handler.py"
    handler.write_text(handler.read_text() + "\n# v2\n")
    third = local_cli("function", "deploy")
    assert "Deployed: 0 created, 1 updated, 0 unchanged." in third.stdout, third.output
    updated = lam.get_function(FunctionName="pully-upper")["Configuration"]["CodeSha256"]
    assert updated != config["CodeSha256"]


def test_deploy_needs_a_bucket_a_role_and_a_known_function(local_cli: Cli, aws: Aws) -> None:
    local_cli.env.update(aws.env)
    local_cli("function", "add", "upper")
    one_line_error(local_cli("function", "deploy"), 1, "pully: PULLY_S3_BUCKET is not set")
    local_cli.env["PULLY_S3_BUCKET"] = BUCKET
    one_line_error(local_cli("function", "deploy"), 1, "pully: PULLY_LAMBDA_ROLE is not set")
    local_cli.env["PULLY_LAMBDA_ROLE"] = aws.lambda_role()
    one_line_error(local_cli("function", "deploy", "nope"), 1, "pully: no function 'nope'")
    empty = Cli(local_cli.mode, local_cli.cwd / "functions" / "upper", dict(local_cli.env))
    one_line_error(empty("function", "deploy"), 1, "pully: no functions in functions")


def test_delete_asks_then_removes_it_everywhere(cli: Cli, aws: Aws) -> None:
    configure(cli, aws)
    cli("function", "add", "upper")
    assert cli("function", "deploy").exit_code == 0

    refused = cli("function", "delete", "upper", input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert (cli.cwd / "functions" / "upper").is_dir()

    result = cli("function", "delete", "upper", input="y\n")
    assert result.exit_code == 0, result.output
    assert "Delete function 'upper'" in result.output
    for piece in ("local folder", "S3 object", "Lambda function"):
        assert any(
            line.startswith("deleted") and piece in line for line in result.stdout.splitlines()
        )
    assert not (cli.cwd / "functions" / "upper").exists()
    assert aws.client("lambda").list_functions()["Functions"] == []
    assert aws.client("s3").list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_delete_reports_missing_pieces_and_fails_only_when_nothing_existed(
    local_cli: Cli,
    aws: Aws,
) -> None:
    configure(local_cli, aws)
    local_cli("function", "add", "upper")
    result = local_cli("function", "delete", "upper", "--yes")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("deleted") and "local folder" in line for line in lines)
    assert any(line.startswith("absent") and "S3 object" in line for line in lines)
    assert any(line.startswith("absent") and "Lambda function pully-upper" in line.replace(":", "")
               for line in lines)  # fmt: skip
    again = local_cli("function", "delete", "upper", "--yes")
    assert again.exit_code == 1
    assert again.stderr.strip() == (
        "pully: function 'upper' was not found locally, in S3 or in Lambda"
    )


def test_status_with_nothing_anywhere_says_how_to_start(local_cli: Cli, aws: Aws) -> None:
    local_cli.env.update(aws.env)
    result = local_cli("function", "status")
    assert result.exit_code == 0, result.output
    assert "pully function add NAME" in result.stdout


def test_an_unreachable_endpoint_is_one_line_and_debug_shows_the_traceback(
    sub_cli: Cli,
    aws: Aws,
) -> None:
    sub_cli.env.update(aws.env, PULLY_AWS_ENDPOINT_URL="http://127.0.0.1:9")
    sub_cli("function", "add", "upper")
    one_line_error(
        sub_cli("function", "status"), 1, "pully: cannot reach AWS at http://127.0.0.1:9"
    )
    debug = sub_cli("--debug", "function", "status")
    assert debug.exit_code == 1 and "Traceback" in debug.stderr
    assert "EndpointConnectionError" in debug.stderr
