"""The examples in docs/relationships.md and docs/functions.md, run as written against a live
`pully serve`: code blocks become the function files, shell commands run (with the node's
address for localhost:8080) and must print what the comments under them say."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pully_tornado.relationships import load

from .support import ROOT, PullyProcess, WSClient

EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\n```(\w+)\n(.*?)```", re.S)


def examples(doc: str) -> dict[str, tuple[str, str]]:
    text = (ROOT / doc if doc == "README.md" else ROOT / "docs" / doc).read_text()
    return {name: (lang, body) for name, lang, body in EXAMPLE.findall(text)}


def commands(script: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs: a command, then the ``# `` lines under it."""
    pairs: list[tuple[str, str]] = []
    command, expected = "", []
    for line in script.replace("\\\n", " ").splitlines():
        if line.startswith("# "):
            expected.append(line[2:])
        elif line.strip():
            if command:
                pairs.append((command, "".join(expected)))
            command, expected = line, []
    pairs.append((command, "".join(expected)))
    return pairs


def matches(got: Any, want: Any) -> bool:
    """Equal, where the docs write "..." for a value that changes from run to run."""
    if want == "...":
        return True
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(matches(got[k], want[k]) for k in want)
        )
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(matches(g, w) for g, w in zip(got, want, strict=True))
        )
    return bool(got == want)


def run_shell(script: str, node: PullyProcess, cwd: Path | None = None) -> None:
    """Run each command; one followed by ``# `` lines must print that JSON."""
    for command, expected in commands(script):
        command = command.replace("localhost:8080", f"127.0.0.1:{node.port}")
        command = command.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
        out = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=20, cwd=cwd
        )
        assert out.returncode == 0, out.stderr
        if not expected:
            continue
        got, want = orjson.loads(out.stdout), orjson.loads(expected)
        assert matches(got, want), f"{command}\n got: {got}\nwant: {want}"


def test_the_documented_relationships_document_is_valid() -> None:
    lang, body = examples("relationships.md")["relationships-document"]
    assert lang == "json"
    rel = load(orjson.loads(body))
    assert rel.pipeline_for("orders:eu:42") == ("enrich", "gdpr")


def test_the_documented_options_are_valid() -> None:
    lang, body = examples("relationships.md")["options-document"]
    assert lang == "json"
    rel = load(orjson.loads(body))
    assert rel.options_for("ticker:eurusd").to_json() == {
        "history_size": 1000, "history_ttl": 60, "publish": "server"}  # fmt: skip
    assert rel.options_for("room:lobby").to_json() == {"presence": False}  # exact name wins
    assert rel.options_for("room:42").presence is True
    assert rel.options_for("elsewhere").to_json() == {}


@pytest.mark.slow
@pytest.mark.gen_test(timeout=60)
async def test_options_examples_run_as_written(processes: Callable[..., PullyProcess]) -> None:
    node = processes()
    run_shell(examples("relationships.md")["post-options"][1], node)
    client = await WSClient.connect(node.ws_url)
    refused = await client.publish("ticker:eurusd", 1.0843)
    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    assert refused["message"] == "only the server publishes to 'ticker:eurusd' (its options say so)"


@pytest.mark.slow
@pytest.mark.gen_test(timeout=60)
async def test_relationships_examples_run_as_written(
    processes: Callable[..., PullyProcess],
) -> None:
    node = processes()
    run_shell(examples("relationships.md")["post-relationships"][1], node)
    run_shell(examples("relationships.md")["post-relationships-invalid"][1], node)


@pytest.mark.slow
@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("uppercase", ["written", "scaffolded"])
async def test_functions_examples_run_as_written(
    processes: Callable[..., PullyProcess], tmp_path: Path, uppercase: str
) -> None:
    """The doc's uppercase function either way it offers: copied from the page, or made by
    ``pully function add``; the subscriber sees the same message."""
    docs = examples("functions.md")
    node = processes()  # in tmp_path, like `./scripts/serve` in the project folder
    for name in ("uppercase", "no-spam"):
        lang, code = docs[name]
        target = code.splitlines()[0].removeprefix("# ")
        assert lang == "python" and target == f"functions/{name}/handler.py"
        if name == "uppercase" and uppercase == "scaffolded":
            run_shell(docs["add-uppercase"][1], node, cwd=tmp_path)
            assert (tmp_path / target).is_file()
            continue
        (tmp_path / target).parent.mkdir(parents=True)
        (tmp_path / target).write_text(code)
    subscriber = await WSClient.connect(node.ws_url)
    await subscriber.subscribe("chat")
    run_shell(docs["attach-and-publish"][1], node)
    [message] = await subscriber.messages(1)
    assert (message["data"], message["offset"]) == ({"text": "HELLO"}, 1)
    await subscriber.no_message(0.3)  # the spam was dropped


@pytest.mark.slow
@pytest.mark.gen_test(timeout=60)
async def test_the_readme_functions_example_runs_as_written(
    processes: Callable[..., PullyProcess], tmp_path: Path
) -> None:
    node = processes()  # in tmp_path, with ./functions empty: the example scaffolds it
    subscriber = await WSClient.connect(node.ws_url)
    await subscriber.subscribe("chat")
    run_shell(examples("README.md")["readme-functions"][1], node, cwd=tmp_path)
    assert (tmp_path / "functions" / "uppercase" / "handler.py").is_file()
    [message] = await subscriber.messages(1)
    assert (message["data"], message["offset"]) == ("HELLO", 1)
