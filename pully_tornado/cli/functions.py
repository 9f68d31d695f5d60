"""``pully function add | status | deploy | delete``: local functions and their Lambda twins."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.text import Text

from ..deploy.errors import DeployError
from ..deploy.names import check_name

if TYPE_CHECKING:
    from ..deploy.functions import Functions
from .common import (
    AWS_FIELDS,
    PullyGroup,
    action_text,
    console,
    fail,
    load_deploy_settings,
    load_settings,
    progress_bar,
    settings_options,
    table,
)

SCAFFOLD = '''"""{name}: a Pully function.

Pully calls ``handler(event, context)`` for every message published on a channel that lists
"{name}" in relationships.json, before any subscriber sees the message. ``event`` is
``{{"channel": ..., "data": ..., "client": ...}}``. Return ``{{"data": ...}}`` to deliver that
data instead, or ``None`` to drop the message. The same file runs on AWS Lambda
(``pully function deploy {name}``, handler ``handler.handler``).
"""

from __future__ import annotations

from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any] | None:
    """Uppercase text messages (a string, or the "text" of an object); pass anything else
    through unchanged."""
    data = event["data"]
    if isinstance(data, str):
        return {{"data": data.upper()}}
    if isinstance(data, dict) and isinstance(data.get("text"), str):
        return {{"data": {{**data, "text": data["text"].upper()}}}}
    return {{"data": data}}
'''
STATE_STYLES = {"Create": "green", "Update": "yellow", "No Change": "dim",
                "Deleted locally": "red"}  # fmt: skip


def _valid_name(name: str) -> None:
    """A bad function name is a usage error: its message and exit status 2."""
    try:
        check_name(name)
    except DeployError as exc:
        fail(exc.message, 2)


def _functions(flags: dict[str, Any]) -> Functions:
    from ..deploy.aws import Aws
    from ..deploy.functions import Functions

    s = load_settings(flags, aws=True)
    d = load_deploy_settings(flags)
    return Functions(
        Aws.from_settings(s), Path(s.functions_dir), s.lambda_prefix, s.s3_bucket, d.lambda_role,
        d.stack,
    )  # fmt: skip


@click.group("function", cls=PullyGroup, short_help="Functions: add, status, deploy, delete.")
def function() -> None:
    """Pully functions: scaffold, compare with Lambda, deploy, delete."""


@function.command("add")
@click.argument("name")
@settings_options("functions_dir", "port")
def add(name: str, **flags: Any) -> None:
    """Scaffold functions/NAME/handler.py: a working example that uppercases text."""
    _valid_name(name)
    settings = load_settings(flags)
    folder = Path(settings.functions_dir) / name
    if folder.exists():
        fail(f"function {name!r} already exists: {folder}")
    folder.mkdir(parents=True)
    (folder / "handler.py").write_text(SCAFFOLD.format(name=name))
    click.echo(f"Created {folder / 'handler.py'}")
    example = f'{{"channels": {{"chat": ["{name}"]}}}}'
    click.echo(f"Attach it to a channel in relationships.json, e.g. {example}, then:")
    port = settings.port or "PORT"  # 0: the node picked a free port, logged at its start
    click.echo(f"  pully relationships push relationships.json --url http://127.0.0.1:{port}")


@function.command("status")
@settings_options(*AWS_FIELDS)
def status(**flags: Any) -> None:
    """Compare local functions with Lambda: Create, Update, No Change or Deleted locally."""
    fns = _functions(flags)
    rows = fns.status()
    if not rows:
        click.echo(
            f"No functions in {fns.folder} and none deployed under the prefix {fns.prefix!r}: "
            "create one with `pully function add NAME`."
        )
        return
    out = table("Function", "Lambda function", "Status", "Local SHA-256", "Deployed SHA-256")
    for r in rows:
        out.add_row(
            r.name, r.lambda_name, Text(r.state.value, style=STATE_STYLES[r.state.value]),
            (r.local_sha or "-")[:12], (r.deployed_sha or "-")[:12],
        )  # fmt: skip
    console().print(out)
    counts = {s: sum(1 for r in rows if r.state.value == s) for s in STATE_STYLES}
    click.echo(", ".join(f"{n} {s}" for s, n in counts.items() if n))


@function.command("deploy")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@settings_options(*AWS_FIELDS)
def deploy(names: tuple[str, ...], **flags: Any) -> None:
    """Zip, upload to S3 and create or update the Lambda function of each NAME (default: every
    local function). Unchanged code is left alone."""
    fns = _functions(flags)
    chosen = list(names) or fns.local()
    if not chosen:
        fail(f"no functions in {fns.folder}: create one with `pully function add NAME`")
    results = []
    with progress_bar(len(chosen)) as bar:

        def on_progress(name: str, what: str) -> None:
            bar.describe(f"{name}: {what}")

        for result in fns.deploy(chosen, on_progress):
            results.append(result)
            bar.advance()
            line = action_text(result.action)
            line.append(f" {result.name} -> {result.lambda_name} ({result.sha256[:12]})")
            bar.print(line)
    changed = [r for r in results if r.action != "unchanged"]
    if not changed:
        click.echo(f"Nothing to deploy: every function is up to date ({len(results)} unchanged).")
    else:
        counts = {a: sum(1 for r in results if r.action == a) for a in ("created", "updated")}
        click.echo(
            f"Deployed: {counts['created']} created, {counts['updated']} updated, "
            f"{len(results) - len(changed)} unchanged."
        )


@function.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--keep-local", is_flag=True, help="Delete from S3 and Lambda only.")
@settings_options(*AWS_FIELDS)
def delete(name: str, yes: bool, keep_local: bool, **flags: Any) -> None:
    """Delete function NAME locally, from S3 and from Lambda (a piece already gone is
    reported, not an error)."""
    _valid_name(name)
    fns = _functions(flags)
    where = [] if keep_local else [str(fns.folder / name)]
    if fns.bucket:
        where.append(f"s3://{fns.bucket}/{fns.s3_key(name)}")
    where.append(f"Lambda {fns.lambda_name(name)}")
    if not yes:
        click.confirm(f"Delete function {name!r}: {', '.join(where)}?", abort=True, err=True)
    changes = fns.delete(name, local=not keep_local)
    out = console()
    for c in changes:
        line = action_text(c.action)
        line.append(f" {c.resource}: {c.name}")
        if c.detail:
            line.append(f" ({c.detail})", style="dim")
        out.print(line, soft_wrap=True)
    if all(c.action != "deleted" for c in changes):
        fail(f"function {name!r} was not found locally, in S3 or in Lambda")
    click.echo(f"Deleted function {name!r}.")
