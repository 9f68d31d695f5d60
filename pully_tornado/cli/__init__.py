"""The ``pully`` command.

``serve`` runs a node; ``function``, ``relationships``, ``deploy``, ``destroy`` and ``status``
manage functions, the relationships document and the AWS stack; ``outbox init`` creates the
PostgreSQL outbox; ``bench`` runs the benchmark.
Every command reads flags, then environment variables, then ``pully.toml`` (see
:mod:`.config`), and fails with one line (``pully --debug ...`` shows the traceback).
"""

from __future__ import annotations

from pathlib import Path

import click

from .. import __version__
from .bench import bench
from .common import PullyGroup, State, load_settings, settings_options
from .functions import function
from .outbox import outbox
from .relationships import relationships
from .serve import configure_logging, serve
from .stack import deploy, destroy, status

__all__ = ["configure_logging", "load_settings", "main", "settings_options"]


@click.group(cls=PullyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pully")
@click.option(
    "--debug", is_flag=True, envvar="PULLY_DEBUG", help="Show tracebacks. [env PULLY_DEBUG]"
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Project file (default: ./pully.toml when it exists).",
)
@click.pass_context
def main(ctx: click.Context, debug: bool, config: Path | None) -> None:
    """Pully: realtime messaging over WebSockets, with per-channel functions."""
    ctx.obj = State(debug=debug, config=config)


for command in (serve, function, relationships, outbox, deploy, destroy, status, bench):
    main.add_command(command)
