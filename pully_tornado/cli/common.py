"""What every ``pully`` command shares: settings from flags, environment and ``pully.toml``;
one-line errors (``--debug`` for the traceback); rich output."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table
from rich.text import Text

from ..deploy.options import DEPLOY_OPTIONS, DeploySettings
from ..errors import ConfigError, PullyError
from ..settings import OPTIONS, Settings
from .config import ProjectConfig

AWS_FIELDS = ("aws_region", "aws_endpoint_url", "s3_bucket", "lambda_role", "lambda_prefix",
              "stack", "functions_dir")  # fmt: skip
STYLES = {"created": "green", "updated": "yellow", "deleted": "red", "unchanged": "dim",
          "absent": "dim", "kept": "cyan"}  # fmt: skip


class CliError(click.ClickException):
    """A failure the user can act on: printed as ``pully: MESSAGE`` on stderr, exit 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    def show(self, file: Any = None) -> None:
        click.echo(f"pully: {self.message}", err=True)


class UsageFailure(CliError):
    """A bad setting, flag or argument: exit 2, like click's own usage errors."""

    exit_code = 2


def cli_error(message: str, exit_code: int = 1) -> CliError:
    return UsageFailure(message) if exit_code == 2 else CliError(message)


def one_line(exc: BaseException) -> str:
    """The message a user reads for ``exc``: no traceback, no newline."""
    from ..deploy.aws import describe_error  # boto3 only for the commands that use AWS

    aws = describe_error(exc)
    if aws is not None:
        return aws
    if isinstance(exc, PullyError):
        return exc.message
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return f"unexpected {type(exc).__name__}: {exc} (run `pully --debug ...` for the traceback)"


@dataclass
class State:
    """Group-level options, on ``click.Context.obj``."""

    debug: bool = False
    config: Path | None = None
    _project: ProjectConfig | None = None

    @property
    def project(self) -> ProjectConfig:
        if self._project is None:
            self._project = ProjectConfig.load(self.config)
        return self._project


class PullyGroup(click.Group):
    """A group whose commands fail with one line: any exception a command lets escape becomes
    ``pully: MESSAGE`` and exit status 1 (2 for configuration), unless ``--debug``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # the order they were added in: serve first, bench last

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except Exception as exc:
            state = ctx.find_object(State)
            if state is not None and state.debug:
                raise
            raise cli_error(one_line(exc), 2 if isinstance(exc, ConfigError) else 1) from exc


def state() -> State:
    ctx = click.get_current_context()
    obj = ctx.find_object(State)
    return obj if obj is not None else ctx.ensure_object(State)


def settings_options(*fields: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One flag per setting (``--port`` for ``PULLY_PORT``...): every node setting (OPTIONS)
    unless ``fields`` names some, of the node's or the deploy-only ones (DEPLOY_OPTIONS).
    Values stay raw strings so that :meth:`Settings.load` parses flags and environment alike
    and names the culprit."""
    chosen = [o for o in (*OPTIONS, *DEPLOY_OPTIONS) if o.field in fields] if fields else OPTIONS

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(chosen):
            help_text = f"{opt.help} [env {opt.env}; default {opt.default!r}]"
            if opt.field == "uvloop":
                func = click.option("--uvloop/--no-uvloop", "uvloop", default=None,
                                    help=help_text)(func)  # fmt: skip
            else:
                func = click.option(opt.flag, opt.field, default=None, metavar="VALUE",
                                    help=help_text)(func)  # fmt: skip
        return func

    return decorate


def load_settings(flags: dict[str, Any], aws: bool = False) -> Settings:
    """Settings from ``flags`` (the settings options only), the environment and pully.toml.
    For the commands that call AWS (``aws``), a region set nowhere in Pully's terms comes
    from boto's own resolution (``AWS_DEFAULT_REGION``, the profile) before the default, so
    that ``aws configure`` users deploy where they expect. Raises :class:`ConfigError` naming
    the variable, flag or file key."""
    raw = _raw(flags)
    environ = _environ()
    if aws and "AWS_REGION" not in environ and raw.get("aws_region") is None:
        region = _boto_region()
        if region:
            environ["AWS_REGION"] = region
    return Settings.load(environ, overrides=raw)


def load_deploy_settings(flags: dict[str, Any]) -> DeploySettings:
    """The deploy-only settings (``stack``, ``lambda_role``) from ``flags``, the environment
    and pully.toml, in the same order as :func:`load_settings`."""
    return DeploySettings.load(_environ(), overrides=_raw(flags))


def _raw(flags: dict[str, Any]) -> dict[str, Any]:
    return {k: (("true" if v else "false") if isinstance(v, bool) else v) for k, v in flags.items()}


def _environ() -> dict[str, str]:
    return {**state().project.environ, **os.environ}


def _boto_region() -> str | None:
    import botocore.session

    region = botocore.session.get_session().get_config_variable("region")
    return str(region) if region else None


def split_flags(params: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """Pop the settings flags out of a command's parameters."""
    return {f: params.pop(f) for f in list(fields) if f in params}


def fail(message: str, exit_code: int = 1) -> NoReturn:
    raise cli_error(message, exit_code)


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


class Bar:
    """Progress over ``total`` steps: a transient bar on a terminal, nothing elsewhere; lines
    printed through it appear above the bar, unwrapped, on stdout."""

    def __init__(self, out: Console, progress: Progress | None, total: int) -> None:
        self.out = out
        self._progress = progress
        self._task = progress.add_task("", total=total) if progress else None

    def describe(self, text: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=text)

    def advance(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def print(self, line: Text) -> None:
        line.rstrip()
        (self._progress.console if self._progress else self.out).print(line, soft_wrap=True)


@contextmanager
def progress_bar(total: int) -> Iterator[Bar]:
    out = console()
    if not out.is_terminal:
        yield Bar(out, None, total)
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn())  # fmt: skip
    with Progress(*columns, console=out, transient=True) as progress:
        yield Bar(out, progress, total)


def action_text(action: str) -> Text:
    return Text(action.ljust(9), style=STYLES.get(action, ""))


def table(*columns: str) -> Table:
    t = Table(*columns, box=None, header_style="bold", pad_edge=False)
    return t


def echo_lines(lines: Iterable[str], err: bool = False) -> None:
    for line in lines:
        click.echo(line, err=err)
