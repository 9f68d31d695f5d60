"""``pully deploy | destroy | status``: the AWS stack (ECS Fargate behind an ALB)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.text import Text

from .common import (
    AWS_FIELDS,
    action_text,
    console,
    load_deploy_settings,
    load_settings,
    progress_bar,
    settings_options,
    split_flags,
    state,
    table,
)

if TYPE_CHECKING:  # the deploy modules (and boto3) load only when a command runs
    from ..deploy.base import Change, Step
    from ..deploy.stack import OnChange, OnStep, Result, Stack

STACK_FIELDS = (*AWS_FIELDS, "redis_url")
CORE = ("ECS cluster", "ECS service", "Load balancer")  # none of them: not deployed


def _stack(flags: dict[str, Any], options: dict[str, Any] | None = None) -> Stack:
    """The stack the flags, environment and pully.toml describe (``options``: the command's
    own flags, over the ``[deploy]`` table)."""
    from ..deploy.aws import Aws
    from ..deploy.base import StackConfig
    from ..deploy.stack import Stack
    from ..deploy.templates import find

    settings = load_settings(flags, aws=True)
    section = state().project.section("deploy")
    opts = {k: v for k, v in (options or {}).items() if v is not None}

    def pick(key: str, default: Any = None) -> Any:
        return opts.get(key, section.get(key, default))

    subnets = pick("subnets", ())
    if isinstance(subnets, str):
        subnets = [s.strip() for s in subnets.split(",") if s.strip()]
    templates = pick("templates")
    config = StackConfig(
        stack=load_deploy_settings(flags).stack,
        region=settings.aws_region,
        bucket=settings.s3_bucket,
        templates=find(Path(templates) if templates else None, Path.cwd()),
        lambda_prefix=settings.lambda_prefix,
        image=pick("image"),
        redis_url=settings.redis_url,
        vpc_id=pick("vpc"),
        subnets=tuple(subnets),
        cpu=int(pick("cpu", 512)),
        memory=int(pick("memory", 1024)),
        min_tasks=int(pick("min_tasks", 1)),
        max_tasks=int(pick("max_tasks", 4)),
        certificate_arn=pick("certificate_arn"),
    )
    return Stack(config, Aws.from_settings(settings))


def _where(stack: Stack) -> str:
    aws = stack.aws
    where = f"region {aws.region}, account {aws.account_id()}"
    if aws.endpoint_url:
        where += f", endpoint {aws.endpoint_url}"
    return where


@contextmanager
def _progress(title: str) -> Iterator[tuple[OnStep, OnChange]]:
    """Callbacks for the stack: a bar over the steps, and a line per change as soon as it
    happens."""
    from ..deploy.stack import STEPS

    with progress_bar(len(STEPS)) as bar:
        started = [False]

        def on_step(step: Step) -> None:
            if started[0]:
                bar.advance()
            started[0] = True
            bar.describe(f"{title}: {step.title}")

        def on_change(change: Change) -> None:
            line = action_text(change.action)
            line.append(f" {change.resource.ljust(16)} {change.name}")
            if change.detail:
                line.append(" " * max(1, 21 - len(change.name)))
                line.append(change.detail, style="dim")
            bar.print(line)

        yield on_step, on_change


def _counts(result: Result) -> str:
    actions = ("created", "updated", "deleted", "unchanged", "absent", "kept")
    counts = {a: sum(1 for c in result.changes if c.action == a) for a in actions}
    return ", ".join(f"{n} {a}" for a, n in counts.items() if n)


@click.command("deploy", short_help="Create or update the AWS stack (ECS Fargate + ALB).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--image",
    envvar="PULLY_IMAGE",
    help="Container image built from the Dockerfile. [env PULLY_IMAGE]",
)
@click.option("--vpc", help="VPC id (default: the account's default VPC).")
@click.option("--subnets", help="Comma-separated subnet ids (default: every subnet of the VPC).")
@click.option("--cpu", type=int, help="Task CPU units (default 512).")
@click.option("--memory", type=int, help="Task memory in MiB (default 1024).")
@click.option("--min-tasks", type=int, help="Fewest tasks autoscaling keeps (default 1).")
@click.option("--max-tasks", type=int, help="Most tasks autoscaling starts (default 4).")
@click.option(
    "--certificate-arn",
    help="ACM certificate for HTTPS/WSS on 443 (HTTP then redirects to it).",
)
@click.option("--templates", help="Folder of ECS templates (default: ./ecs, else Pully's own).")
@settings_options(*STACK_FIELDS)
def deploy(yes: bool, **params: Any) -> None:
    """Create or update the AWS stack: S3 bucket, ECS cluster, task definition, load balancer,
    Fargate service and autoscaling. Running it again changes only what differs."""
    flags = split_flags(params, STACK_FIELDS)
    stack = _stack(flags, params)
    stack.config.check(deploying=True)
    if not yes:
        click.confirm(
            f"Deploy stack {stack.config.stack!r} ({_where(stack)}) with image "
            f"{stack.config.image}?",
            abort=True,
            err=True,
        )
    with _progress("deploying") as (on_step, on_change):
        result = stack.deploy(on_step, on_change)
    if not result.changed:
        click.echo(
            f"Nothing changed: stack {stack.config.stack!r} is up to date ({_counts(result)})."
        )
    else:
        click.echo(f"Deployed stack {stack.config.stack!r}: {_counts(result)}.")
    click.echo(f"URL: {result.url}  (WebSocket: {result.url.replace('http', 'ws', 1)}/ws)")
    if result.outputs.https:
        click.echo("Point your domain (the certificate's) at the load balancer with a DNS alias.")
    click.echo("Tasks take a minute or two to start: `pully status` shows when they are healthy.")


@click.command("destroy", short_help="Delete the AWS stack.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--templates", help="Folder of ECS templates (default: ./ecs, else Pully's own).")
@settings_options(*AWS_FIELDS)
def destroy(yes: bool, **params: Any) -> None:
    """Delete the AWS stack, in reverse order; parts already gone are skipped. The bucket is
    deleted only if `pully deploy` created it."""
    flags = split_flags(params, AWS_FIELDS)
    stack = _stack(flags, params)
    stack.config.check(deploying=False)
    if not yes:
        click.confirm(
            f"Destroy stack {stack.config.stack!r} ({_where(stack)}), its bucket "
            f"{stack.config.bucket} and its Lambda functions?",
            abort=True,
            err=True,
        )
    with _progress("destroying") as (on_step, on_change):
        result = stack.destroy(on_step, on_change)
    if not result.changed:
        click.echo(f"Nothing to destroy: stack {stack.config.stack!r} does not exist.")
    else:
        click.echo(f"Destroyed stack {stack.config.stack!r}: {_counts(result)}.")


@click.command("status", short_help="Show what is deployed and healthy.")
@click.option("--templates", help="Folder of ECS templates (default: ./ecs, else Pully's own).")
@settings_options(*AWS_FIELDS)
def status(**params: Any) -> None:
    """What is deployed and whether it is healthy; exit 1 unless everything is."""
    flags = split_flags(params, AWS_FIELDS)
    stack = _stack(flags, params)
    rows = stack.status()
    out = table("", "Resource", "Name", "State", "Detail")
    for r in rows:
        mark = Text("ok", style="green") if r.ok else Text("!!", style="bold red")
        out.add_row(mark, r.resource, r.name, r.state, Text(r.detail, style="dim"))
    console().print(out)
    bad = [r for r in rows if not r.ok]
    core = [r for r in rows if r.resource in CORE]
    if all(r.state == "missing" for r in core):
        click.echo(f"Stack {stack.config.stack!r} is not deployed (pully deploy).")
        raise SystemExit(1)
    if bad:
        click.echo(f"Stack {stack.config.stack!r}: {len(bad)} of {len(rows)} not healthy yet.")
        raise SystemExit(1)
    click.echo(f"Stack {stack.config.stack!r} is deployed and healthy.")
