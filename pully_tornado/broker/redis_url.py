"""``PULLY_REDIS_URL``: which Redis topology, which servers, which credentials.

* ``redis://[USER:PASSWORD@]HOST[:PORT][/DB]`` (``rediss://``: TLS), ``unix:///PATH[?db=N]``:
  one Redis;
* ``redis+cluster://[USER:PASSWORD@]H1:P1,H2:P2`` (``rediss+cluster://``): Redis Cluster seeds;
* ``redis+sentinel://[USER:PASSWORD@]S1:P1,S2:P2/MASTER[/DB]`` (``rediss+sentinel://``).

USER:PASSWORD (percent-encoded) authenticate to the Redis servers (``AUTH``; an ACL user, or
only ``:PASSWORD``). ``?ssl_ca_certs=PATH`` in the URL, or ``PULLY_REDIS_TLS_CA``, names the CA
that signed the servers' certificates; ``PULLY_REDIS_TLS_SKIP_VERIFY`` turns verification off.
Pure stdlib: the settings parser checks a URL with :func:`redis_url_problem` at start.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, unquote, urlsplit

# scheme -> (topology, TLS)
SCHEMES: dict[str, tuple[str, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
URL_FORMS = (
    "redis://HOST:PORT/DB, redis+cluster://H1:P1,H2:P2, redis+sentinel://S1:P1,S2:P2/MASTER "
    "(rediss...:// for TLS) or unix:///PATH"
)
DEFAULT_PORT = {"single": 6379, "cluster": 6379, "sentinel": 26379}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One server to connect to, with what a connection needs (credentials, db, TLS)."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket instead of host:port
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0
    ca_file: str | None = None
    verify: bool = True

    def at(self, host: str, port: int) -> Endpoint:
        """The same credentials and TLS at another address (a cluster node, a new master)."""
        return replace(self, host=host, port=port, path=None)

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def __str__(self) -> str:
        return self.path or f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed ``PULLY_REDIS_URL``: the topology, its seed addresses and a template endpoint."""

    topology: str  # single | cluster | sentinel
    seeds: tuple[tuple[str, int], ...]
    endpoint: Endpoint  # credentials, db and TLS for every server of the topology
    master: str | None = None  # sentinel: the monitored master's name

    def seed_endpoints(self) -> list[Endpoint]:
        if self.endpoint.path:
            return [self.endpoint]
        return [self.endpoint.at(host, port) for host, port in self.seeds]


def _hosts(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    seeds = []
    for item in netloc.split(","):
        if not item:
            raise ValueError("has an empty host in its host list")
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ValueError("must name a host, e.g. redis://127.0.0.1:6379/0")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise ValueError(f"has an invalid port in {item!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"has an invalid port in {item!r}")
        seeds.append((host, port))
    return tuple(seeds)


def parse_redis_url(url: str, ca_file: str | None = None, verify: bool = True) -> RedisTarget:
    """Parse ``url``; raises ``ValueError`` with the reason (never naming the password)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"must be a {URL_FORMS}")
    topology, tls = SCHEMES[parts.scheme]
    query = parse_qs(parts.query)
    ca_file = query.get("ssl_ca_certs", [ca_file])[0]
    userinfo, _, netloc = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    common = {
        "tls": tls,
        "username": unquote(username) or None,
        "password": unquote(password) or None,
        "ca_file": ca_file,
        "verify": verify,
    }
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("must name a socket, e.g. unix:///run/redis.sock")
        db = _db(query.get("db", ["0"])[0])
        return RedisTarget("single", (), Endpoint(path=parts.path, db=db, **common))  # type: ignore[arg-type]
    if not netloc:
        raise ValueError("must name a host, e.g. redis://127.0.0.1:6379/0")
    seeds = _hosts(netloc, DEFAULT_PORT[topology])
    path = [p for p in parts.path.split("/") if p]
    master = None
    if topology == "single":
        if len(seeds) > 1:
            raise ValueError(
                "lists several hosts: use redis+cluster:// for a Redis Cluster or "
                "redis+sentinel://.../MASTER for Sentinel"
            )
        db = _db(path[0] if path else query.get("db", ["0"])[0])
        if len(path) > 1:
            raise ValueError("has a path past the database number")
    elif topology == "cluster":
        if path and path != ["0"]:
            raise ValueError("names a database: a Redis Cluster has only database 0")
        db = 0
    else:
        if not path:
            raise ValueError(
                "must name the master, e.g. redis+sentinel://h1:26379,h2:26379/mymaster"
            )
        master = unquote(path[0])
        db = _db(path[1]) if len(path) > 1 else 0
        if len(path) > 2:
            raise ValueError("has a path past /MASTER/DB")
    host, port = seeds[0]
    endpoint = Endpoint(host=host, port=port, db=db, **common)  # type: ignore[arg-type]
    return RedisTarget(topology, seeds, endpoint, master)


def _db(text: str) -> int:
    try:
        db = int(text)
    except ValueError:
        raise ValueError(f"has an invalid database number {text!r}") from None
    if db < 0:
        raise ValueError(f"has an invalid database number {text!r}")
    return db


SUPPORTED = ("single", "cluster", "sentinel")
SUPPORTED_FORMS = URL_FORMS


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable ``PULLY_REDIS_URL``, or None."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        return f"must be a {SUPPORTED_FORMS}"
    if SCHEMES[scheme][0] not in SUPPORTED:
        return f"uses {scheme}://, not supported yet (use a {SUPPORTED_FORMS})"
    try:
        parse_redis_url(url)
    except ValueError as exc:
        return str(exc)
    return None


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and /healthz)."""
    parts = urlsplit(url)
    userinfo, at, netloc = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()
