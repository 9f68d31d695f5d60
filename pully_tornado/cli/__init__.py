"""The ``pully`` command."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import click

from .. import __version__
from ..errors import ConfigError
from ..settings import OPTIONS, Settings


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """One flag per setting (``--port`` for ``PULLY_PORT``...); values stay raw strings so that
    :meth:`Settings.load` parses flags and environment alike and names the culprit."""
    for opt in reversed(OPTIONS):
        help_text = f"{opt.help} [env {opt.env}; default {opt.default!r}]"
        if opt.field == "uvloop":
            func = click.option("--uvloop/--no-uvloop", "uvloop", default=None, help=help_text)(
                func
            )
        else:
            func = click.option(opt.flag, opt.field, default=None, metavar="VALUE", help=help_text)(
                func
            )
    return func


def load_settings(flags: dict[str, Any]) -> Settings:
    raw = {k: (("true" if v else "false") if isinstance(v, bool) else v) for k, v in flags.items()}
    try:
        return Settings.load(overrides=raw)
    except ConfigError as exc:
        click.echo(f"pully: {exc}", err=True)
        sys.exit(2)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pully")
def main() -> None:
    """Pully: realtime messaging over WebSockets, with per-channel functions."""


@main.command()
@settings_options
def serve(**flags: Any) -> None:
    """Run a node: embedded (in-process broker) unless --redis-url / PULLY_REDIS_URL is set."""
    settings = load_settings(flags)
    configure_logging(settings.log_level)
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
