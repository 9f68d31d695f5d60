"""``pully serve``: run a node until SIGTERM/SIGINT drains it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

import click

from ..errors import ConfigError
from .common import load_settings, settings_options


def configure_logging(level: str, fmt: str = "text") -> None:
    from ..logs import configure

    configure(level, fmt)


@click.command(short_help="Run a node (embedded, or a cluster with Redis).")
@settings_options()
def serve(**flags: Any) -> None:
    """Run a node: embedded (in-process broker) unless --redis-url / PULLY_REDIS_URL is set."""
    try:
        settings = load_settings(flags)
    except ConfigError as exc:
        click.echo(f"pully: {exc}", err=True)
        sys.exit(2)
    configure_logging(settings.log_level, settings.log_format)
    from ..app import run

    try:
        _run(run(settings), settings.uvloop)
    except ConfigError as exc:
        click.echo(f"pully: {exc}", err=True)
        sys.exit(2)


def _run(main_coro: Coroutine[Any, Any, None], use_uvloop: bool) -> None:
    if use_uvloop:
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            click.echo("pully: invalid --uvloop / PULLY_UVLOOP: uvloop is not installed", err=True)
            sys.exit(2)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main_coro)
        return
    asyncio.run(main_coro)
