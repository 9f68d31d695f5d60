"""``pully relationships validate | push``: check a document locally, send it to a node."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from ..relationships import InvalidRelationships, loads
from .common import PullyGroup, echo_lines, fail, state

DEFAULT_FILE = "relationships.json"


def _file(file: str | None) -> Path:
    return Path(file or state().project.section("relationships").get("file") or DEFAULT_FILE)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", 2)
    except UnicodeDecodeError:
        fail(f"cannot read {path}: not UTF-8 text", 2)


def _check(path: Path, text: str) -> int:
    """Validate; print every problem and return 1, or print a summary and return 0."""
    try:
        doc = loads(text)
    except InvalidRelationships as exc:
        n = len(exc.problems)
        click.echo(f"{path} is invalid ({n} problem{'s' if n != 1 else ''}):")
        echo_lines(f"  - {p}" for p in exc.problems)
        return 1
    functions = {f for names in doc.channels.values() for f in names}
    click.echo(
        f"{path} is valid: {len(doc.channels)} channel{'s' if len(doc.channels) != 1 else ''}, "
        f"{len(functions)} function{'s' if len(functions) != 1 else ''}"
    )
    return 0


@click.group("relationships", cls=PullyGroup, short_help="Validate and push relationships.json.")
def relationships() -> None:
    """The relationships document: which functions run on which channels."""


@relationships.command("validate")
@click.argument("file", required=False)
def validate(file: str | None) -> None:
    """Check FILE (default ./relationships.json) with the server's schema; list every problem
    and exit 1 when it is invalid."""
    path = _file(file)
    raise SystemExit(_check(path, _read(path)))


def _endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        fail(f"invalid --url {url!r}: must be http(s)://HOST[:PORT], e.g. http://127.0.0.1:8080", 2)
    path = parts.path.rstrip("/")
    if not path.endswith("/relationships"):
        path += "/relationships"
    return parts._replace(path=path, query="", fragment="").geturl()


@relationships.command("push")
@click.argument("file", required=False)
@click.option(
    "--url",
    envvar="PULLY_URL",
    help="The node (or load balancer): http://HOST:PORT. [env PULLY_URL]",
)
@click.option("--token", envvar="PULLY_ADMIN_TOKEN", help="Admin token. [env PULLY_ADMIN_TOKEN]")
@click.option("--no-validate", is_flag=True, help="Send without checking locally first.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait.")
def push(
    file: str | None, url: str | None, token: str | None, no_validate: bool, timeout: float
) -> None:
    """Validate FILE (default ./relationships.json), then POST it to the node's
    /relationships route; every node of the cluster reloads it."""
    path = _file(file)
    url = url or state().project.section("relationships").get("url")
    if not url:
        fail("no --url: pass the node's address, e.g. --url http://127.0.0.1:8080", 2)
    endpoint = _endpoint(url)
    text = _read(path)
    if not no_validate and _check(path, text):
        raise SystemExit(1)
    status, answer = _post(endpoint, {"relationshipString": text}, token, timeout)
    message = str(answer.get("message", "")) if isinstance(answer, dict) else ""
    if status == 200:
        version = answer.get("version") if isinstance(answer, dict) else None
        suffix = (
            f" (version {version})" if version is not None and str(version) not in message else ""
        )
        click.echo(f"Pushed {path} to {endpoint}: {message or 'saved'}{suffix}")
        return
    errors = answer.get("error", []) if isinstance(answer, dict) else []
    click.echo(f"pully: push to {endpoint} failed: HTTP {status}: {message}", err=True)
    echo_lines(
        (f"  - {e.get('message', e) if isinstance(e, dict) else e}" for e in errors
         if not (isinstance(e, dict) and e.get("message") == message)),
        err=True,
    )  # fmt: skip
    raise SystemExit(1)


def _post(
    endpoint: str, body: dict[str, Any], token: str | None, timeout: float
) -> tuple[int, Any]:
    """(HTTP status, decoded JSON answer). Network failures end the command with one line."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        endpoint, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            fail(f"cannot reach {endpoint}: connection refused (is the node running?)")
        if isinstance(reason, socket.gaierror):
            fail(f"cannot reach {endpoint}: unknown host")
        fail(f"cannot reach {endpoint}: {getattr(reason, 'strerror', None) or reason}")
    except TimeoutError:
        fail(f"no answer from {endpoint} within {timeout:g} s")
    try:
        return status, json.loads(raw)
    except ValueError:
        fail(f"unexpected answer from {endpoint}: HTTP {status}, not JSON")
