# ruff: noqa: F811 - a test's fixture argument shadows the fixture imported by name
"""``pully relationships validate | push``: the local schema check, and the push against a
live ``pully serve`` (``POST /relationships``), through click's runner and as a subprocess."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from pully_tornado.relationships import InvalidRelationships, loads

from .aws_support import Cli, cli, local_cli, one_line_error  # noqa: F401 - fixtures
from .support import PullyProcess, free_port

VALID = {
    "channels": {"chat": ["profanity", "upper"], "orders:*": ["enrich"]},
    "functions": {"enrich": {"runtime": "lambda", "timeout": 2.0}},
}
INVALID = {
    "channels": {"chat": ["upper", "upper"], "bad channel": ["x"]},
    "functions": {"enrich": {"runtime": "cobol"}, "slow": {"timeout": -1}},
}


def problems_of(doc: Any) -> list[str]:
    """What the server's own schema says about ``doc``."""
    with pytest.raises(InvalidRelationships) as caught:
        loads(json.dumps(doc))
    return caught.value.problems


INVALID_PROBLEMS = len(problems_of(INVALID))


def write(cli: Cli, doc: Any, name: str = "relationships.json") -> None:
    text = doc if isinstance(doc, str) else json.dumps(doc, indent=2)
    (cli.cwd / name).write_text(text)


def current(node: PullyProcess, token: str | None = None) -> dict[str, Any]:
    request = urllib.request.Request(node.url + "/relationships")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        return dict(json.loads(resp.read()))


def test_validate_a_valid_file_exits_0(cli: Cli) -> None:
    write(cli, VALID)
    result = cli("relationships", "validate")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "relationships.json is valid: 2 channels, 3 functions"


def test_validate_lists_every_problem_and_exits_1(cli: Cli) -> None:
    write(cli, INVALID, "rel.json")
    result = cli("relationships", "validate", "rel.json")
    assert result.exit_code == 1, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"rel.json is invalid ({INVALID_PROBLEMS} problems):"
    problems = [line.removeprefix("  - ") for line in lines[1:]]
    assert problems == problems_of(INVALID)
    assert INVALID_PROBLEMS >= 4  # duplicate, channel name, runtime, timeout
    for where in ("channels.chat[1]:", "channels.bad channel:", "functions.enrich.runtime:",
                  "functions.slow.timeout:"):  # fmt: skip
        assert any(p.startswith(where) for p in problems), (where, problems)


def test_validate_reports_json_errors_and_unreadable_files_in_one_line(local_cli: Cli) -> None:
    write(local_cli, "{not json")
    result = local_cli("relationships", "validate")
    assert result.exit_code == 1
    assert "document: not valid JSON" in result.stdout
    one_line_error(
        local_cli("relationships", "validate", "missing.json"),
        2,
        "pully: cannot read missing.json: No such file or directory",
    )


def test_validate_uses_the_file_named_in_pully_toml(local_cli: Cli) -> None:
    (local_cli.cwd / "conf").mkdir()
    write(local_cli, VALID, "conf/rel.json")
    (local_cli.cwd / "pully.toml").write_text('[relationships]\nfile = "conf/rel.json"\n')
    result = local_cli("relationships", "validate")
    assert result.exit_code == 0, result.output
    assert "conf/rel.json is valid" in result.stdout


def test_push_saves_on_a_live_node_and_prints_its_answer(
    cli: Cli, processes: Callable[..., PullyProcess]
) -> None:
    node = processes()
    write(cli, VALID)
    result = cli("relationships", "push", "--url", node.url)
    assert result.exit_code == 0, result.output
    answer = current(node)
    version = answer["version"]
    assert answer["relationships"]["channels"] == VALID["channels"]
    assert result.stdout.strip().splitlines() == [
        "relationships.json is valid: 2 channels, 3 functions",
        f"Pushed relationships.json to {node.url}/relationships: "
        f"relationships saved as version {version}",
    ]


def test_push_prints_the_servers_error_list_and_exits_1(
    cli: Cli, processes: Callable[..., PullyProcess]
) -> None:
    node = processes()
    write(cli, VALID)
    assert cli("relationships", "push", "--url", node.url + "/").exit_code == 0
    before = current(node)
    write(cli, INVALID)
    result = cli("relationships", "push", "--url", node.url, "--no-validate")
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"pully: push to {node.url}/relationships failed: HTTP 400: ")
    assert any("duplicate function 'upper'" in line for line in lines), lines
    assert current(node) == before  # nothing changed


def test_push_validates_locally_first_and_sends_nothing_invalid(
    local_cli: Cli, processes: Callable[..., PullyProcess]
) -> None:
    node = processes()
    before = current(node)
    write(local_cli, INVALID)
    result = local_cli("relationships", "push", "--url", node.url)
    assert result.exit_code == 1
    assert f"relationships.json is invalid ({INVALID_PROBLEMS} problems):" in result.stdout
    assert current(node) == before


def test_push_with_a_token_and_a_bad_token(
    local_cli: Cli, processes: Callable[..., PullyProcess]
) -> None:
    token = "t" * 40
    node = processes(env={"PULLY_ADMIN_TOKEN": token})
    write(local_cli, VALID)
    refused = local_cli("relationships", "push", "--url", node.url, "--token", "wrong")
    assert refused.exit_code == 1
    assert refused.stderr.startswith(
        f"pully: push to {node.url}/relationships failed: HTTP 403: admin token rejected"
    )
    missing = local_cli("relationships", "push", "--url", node.url)
    assert missing.exit_code == 1 and "HTTP 401" in missing.stderr
    ok = local_cli("relationships", "push", "--url", node.url, env={"PULLY_ADMIN_TOKEN": token})
    assert ok.exit_code == 0, ok.output
    assert current(node, token)["relationships"]["channels"] == VALID["channels"]


def test_push_to_a_closed_port_is_one_clear_line(cli: Cli) -> None:
    write(cli, VALID)
    port = free_port()
    one_line_error(
        cli("relationships", "push", "--url", f"http://127.0.0.1:{port}"),
        1,
        f"pully: cannot reach http://127.0.0.1:{port}/relationships: connection refused",
    )


def test_push_needs_a_url(local_cli: Cli) -> None:
    write(local_cli, VALID)
    one_line_error(local_cli("relationships", "push"), 2, "pully: no --url")
    one_line_error(
        local_cli("relationships", "push", "--url", "localhost:8080"), 2, "pully: invalid --url"
    )
