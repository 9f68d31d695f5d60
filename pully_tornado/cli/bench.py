"""``pully bench``: the benchmark of the source checkout (``python -m bench``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from .common import fail

CHECKOUT = Path(__file__).resolve().parents[2]


@click.command(
    "bench",
    short_help="Run the fan-out benchmark of a source checkout.",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the fan-out benchmark (python -m bench ARGS; try `pully bench --help`)."""
    if not (CHECKOUT / "bench" / "__main__.py").is_file():
        fail(
            "pully bench needs a Pully source checkout (bench/ is not installed with the "
            "package): clone the repository and run it there"
        )
    proc = subprocess.run([sys.executable, "-m", "bench", *args], cwd=CHECKOUT, check=False)
    raise SystemExit(proc.returncode)
