"""What a setting is: its row in the ``OPTIONS`` table (:class:`Option`) and the parsers of
raw values. A parser takes the string from a variable, a flag or ``pully.toml`` and returns the
typed value, or raises ``ValueError`` with the reason, which
:meth:`pully_tornado.settings.Settings.load` turns into a ``ConfigError`` naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .broker.redis_url import redis_url_problem
from .errors import ConfigError

# The URL schemes of one Redis (PULLY_STORE may name one); PULLY_REDIS_URL also takes the
# cluster and sentinel forms: broker/redis_url.py parses them all.
REDIS_SCHEMES = ("redis", "rediss", "unix")


def integer(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip().replace("_", ""))
        except ValueError:
            raise ValueError("must be an integer") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise ValueError(f"must be {bound}")
        return value

    return parse


def number(lo: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("must be a number") from None
        if not value >= lo:  # also rejects NaN
            raise ValueError(f"must be a number >= {lo:g}")
        return value

    return parse


def text(raw: str) -> str:
    return raw


def optional(raw: str) -> str | None:
    return raw or None


def choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw

    return parse


def redis_url(raw: str) -> str | None:
    """A Redis URL (one Redis, a Cluster or Sentinel), or None (unset: the in-process broker)."""
    if not raw:
        return None
    problem = redis_url_problem(raw)
    if problem is not None:
        raise ValueError(problem)
    return raw


def store(raw: str) -> str:
    if raw in ("", "redis"):
        return raw
    scheme = urlsplit(raw).scheme
    if scheme in REDIS_SCHEMES:
        problem = redis_url_problem(raw)
        if problem is not None:
            raise ValueError(problem)
        return raw
    if scheme not in ("file", "s3"):
        raise ValueError("must be redis, a redis:// URL, s3://BUCKET/KEY or file://PATH")
    return raw


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")  # _ too: Docker service names


def host(raw: str) -> str:
    """An IP address, a host name, or empty (every interface). ``256.1.1.1`` is neither: a
    name whose last label is all digits would only be sent to DNS to fail there."""
    if not raw:
        return raw
    try:
        ipaddress.ip_address(raw)
        return raw
    except ValueError:
        pass
    labels = raw.removesuffix(".").split(".")
    valid = len(raw) <= 253 and all(_HOST_LABEL.match(label) for label in labels)
    if not valid or labels[-1].isdigit():
        raise ValueError("is not an IP address or a host name")
    return raw


def globs(check: Callable[[str], str | None], strip: str = "") -> Callable[[str], tuple[str, ...]]:
    """A comma-separated list of globs, each refused with ``check``'s reason (None: valid)."""

    def parse(raw: str) -> tuple[str, ...]:
        found = tuple(g.strip().rstrip(strip) for g in raw.split(",") if g.strip())
        for glob in found:
            problem = check(glob)
            if problem is not None:
                raise ValueError(f"holds {glob!r}, an invalid glob: {problem}")
        return found

    return parse


def channel_glob_problem(glob: str) -> str | None:
    """Why ``glob`` can match no channel (the relationships document's rules), or None."""
    from .relationships.rules import key_problem  # the channel grammar has one home

    return key_problem(glob)


def origin_glob_problem(glob: str) -> str | None:
    """Why ``glob`` is no glob ``fnmatch`` reads as written (a class never closed, or empty),
    or None."""
    i = glob.find("[")
    while i >= 0:
        start = i + 2 if glob.startswith("!", i + 1) else i + 1
        end = glob.find("]", start)
        if end < 0:
            return f"'[' at position {i + 1} is never closed"
        if end == start:
            return f"{glob[i : end + 1]!r} is empty: it matches no character"
        i = glob.find("[", end + 1)
    return None


def host_glob_problem(glob: str) -> str | None:
    """Why ``glob`` is no host name glob (``pully.example.com``, ``*.example.com``), or None."""
    if any(c in glob for c in ":/@"):
        return "give a host name without scheme, port or path, e.g. pully.example.com"
    return origin_glob_problem(glob)


def hosts(raw: str) -> tuple[str, ...]:
    return globs(host_glob_problem)(raw.lower())


def secret(raw: str) -> str | None:
    if raw and len(raw.encode()) < 32:
        raise ValueError("must be at least 32 bytes (an HS256 key shorter than its hash is weak)")
    return raw or None


def readable_file(raw: str) -> str | None:
    """A path to a readable file, or None (unset)."""
    if not raw:
        return None
    try:
        with open(raw, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {raw!r}: {exc.strerror}") from None
    return raw


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


_NODE_ID = re.compile(r"^[A-Za-z0-9_.:@=-]{1,64}$")


def node_id(raw: str) -> str:
    if raw and not _NODE_ID.match(raw):
        raise ValueError("must be 1-64 chars of A-Z a-z 0-9 _ . : @ = -")
    return raw


@dataclass(frozen=True)
class Option:
    """One setting: its field on :class:`Settings`, its variable, parser, default and meaning."""

    field: str
    env: str
    parse: Callable[[str], Any]
    default: str
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.env.removeprefix("PULLY_").lower().replace("_", "-")


def parse_options(
    options: tuple[Option, ...],
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """Each of ``options``' typed value, by field: its flag in ``overrides`` (raw strings by
    field name; ``None``: not given), else its variable in ``environ`` (default ``os.environ``),
    else its default. Raises :class:`ConfigError` naming the first bad flag or variable."""
    env = os.environ if environ is None else environ
    parsed: dict[str, Any] = {}
    for opt in options:
        given = (overrides or {}).get(opt.field)
        source = f"{opt.flag} / {opt.env}" if given is not None else opt.env
        raw = given if given is not None else env.get(opt.env, opt.default)
        try:
            parsed[opt.field] = opt.parse(raw)
        except ValueError as exc:
            raise ConfigError(source, f"{raw!r} {exc}") from None
    return parsed


# The default of every field of a settings class: its OPTIONS row's raw default, parsed once at
# import, so the table (README, --help, pully.toml) and the class cannot disagree.
FROM_OPTIONS: Any = object()
_T = TypeVar("_T")


def defaults_from(options: tuple[Option, ...]) -> Callable[[type[_T]], type[_T]]:
    """A class decorator (under ``@dataclass``) giving each field, every one declared
    ``= FROM_OPTIONS``, the parsed default of its row in ``options``; a field without a row,
    a row without a field or a default written on a field fails the import."""
    by_field = {o.field: o for o in options}

    def decorate(cls: type[_T]) -> type[_T]:
        fields = cls.__annotations__
        if set(fields) != set(by_field):
            raise TypeError(
                f"{cls.__name__} fields and options differ: {set(fields) ^ set(by_field)}"
            )
        for name in fields:
            if getattr(cls, name) is not FROM_OPTIONS:
                raise TypeError(f"{cls.__name__}.{name}: its default belongs in its option")
            setattr(cls, name, by_field[name].parse(by_field[name].default))
        return cls

    return decorate
