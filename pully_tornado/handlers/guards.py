"""What a node refuses from browsers: the origin rule of the WebSocket handshake and of the admin
routes, the ``Host`` names it trusts as its own, and the JSON content type admin writes need.

A browser lets any page send a WebSocket handshake, or a "simple" POST (``text/plain``, forms;
no CORS preflight), to any address it reaches, the node's loopback address included. The
browser says who is asking (``Origin``; ``Sec-Fetch-Site`` on https and loopback URLs), but
``Host`` is no proof of who the node is: a page on ``http://evil.example:8080`` whose DNS name
is re-pointed at 127.0.0.1 (DNS rebinding) sends ``Host: evil.example:8080`` with ``Origin:
http://evil.example:8080``, a perfect match, and the browser calls it same-origin. So:

- A **trusted host** is a ``Host`` whose name is an IP address, ``localhost``, or matches
  ``PULLY_ALLOWED_HOSTS``: no page can re-point it at the node behind the browser's back (an IP
  address has no DNS, browsers resolve ``localhost`` themselves), unless the operator says so.
- An ``Origin`` is **the node's own** when its ``host[:port]`` is the ``Host`` header and that
  host is trusted. The scheme is not compared: behind a TLS-terminating load balancer the node
  cannot know it.
- The WebSocket handshake takes a request without ``Origin`` (not a browser), from the node's own
  origin, or from an origin matching ``PULLY_ALLOWED_ORIGINS``.
- Admin routes take no browser request from another site at all (:func:`admin_refusal`), and
  their writes need ``Content-Type: application/json`` (:func:`json_content_type`), which no page
  can send to another origin without a preflight that the node never answers.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from urllib.parse import urlsplit

from tornado.httputil import HTTPHeaders

from ..settings import Settings

# host[:port] as a Host header carries it: a bracketed IPv6 address or a name / IPv4 address
_HOST = re.compile(r"(?:\[(?P<ipv6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9_.-]+))(?::[0-9]{1,5})?")
_LOCAL_NAMES = ("localhost",)
_CROSS_SITE = ("cross-site", "same-site")


def host_name(host: str) -> str | None:
    """The name in a ``Host`` value, lowercased (``[::1]:8080`` gives ``::1``); None when the
    value is not ``host[:port]``."""
    match = _HOST.fullmatch(host.strip().lower())
    if match is None:
        return None
    return match["ipv6"] or match["name"]


def trusted_host(host: str, allowed_hosts: tuple[str, ...]) -> bool:
    """``host`` (a ``Host`` value) names this node: an IP address, ``localhost``, or a name
    matching one of ``allowed_hosts`` (globs; ``*`` trusts every name)."""
    name = host_name(host)
    if name is None:
        return False
    if name in _LOCAL_NAMES or any(fnmatch.fnmatchcase(name, h) for h in allowed_hosts):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def own_origin(origin: str, host: str, allowed_hosts: tuple[str, ...]) -> bool:
    """``origin`` is a page of this node: the same ``host[:port]`` as ``host``, a trusted host."""
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        return False
    return bool(netloc) and netloc == host.strip().lower() and trusted_host(host, allowed_hosts)


def allowed_origin(origin: str, allowed_origins: tuple[str, ...]) -> bool:
    """``origin`` matches ``PULLY_ALLOWED_ORIGINS`` (globs; ``*`` is every origin)."""
    origin = origin.rstrip("/")
    return any(a == "*" or fnmatch.fnmatchcase(origin, a) for a in allowed_origins)


def _not_own(origin: str, host: str) -> str:
    """Why ``origin`` is not the node's own, in words an operator can act on."""
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        netloc = ""
    if netloc and netloc == host.strip().lower():
        return (
            f"Origin {origin} names the host {host!r}, a DNS name this node does not trust as "
            "its own (a page can point any name at this node: DNS rebinding); list it in "
            "PULLY_ALLOWED_HOSTS"
        )
    return f"Origin {origin} is not this node's own (Host: {host or 'none'})"


def websocket_refusal(headers: HTTPHeaders, settings: Settings) -> str | None:
    """Why the handshake with these request headers is refused (for a 403), or None."""
    origin = headers.get("Origin")
    if origin is None:
        return None  # not a browser: browsers send Origin on every handshake
    host = headers.get("Host", "")
    if own_origin(origin, host, settings.allowed_hosts):
        return None
    if allowed_origin(origin, settings.allowed_origins):
        return None
    return (
        f"browser page not allowed to connect: {_not_own(origin, host)}, and not in "
        "PULLY_ALLOWED_ORIGINS"
    )


def admin_refusal(headers: HTTPHeaders, settings: Settings) -> str | None:
    """Why an admin request with these headers is refused as a browser's cross-site request
    (for a 403), or None. ``PULLY_ALLOWED_ORIGINS`` does not open admin routes."""
    site = headers.get("Sec-Fetch-Site")
    if site in _CROSS_SITE:
        return (
            f"cross-site request refused (Sec-Fetch-Site: {site}): admin routes answer no "
            "browser page of another site"
        )
    origin, host = headers.get("Origin"), headers.get("Host", "")
    if origin is not None and not own_origin(origin, host, settings.allowed_hosts):
        return (
            f"cross-origin request refused: {_not_own(origin, host)}; admin routes answer only "
            "clients that send no Origin (curl, servers) and the node's own pages"
        )
    return None


def json_content_type(value: str | None) -> bool:
    """``value`` is ``application/json``, with parameters if any (a charset: UTF-8 only)."""
    if value is None:
        return False
    media, *params = (part.strip().lower() for part in value.split(";"))
    if media != "application/json":
        return False
    for param in params:
        key, _, val = param.partition("=")
        if key.strip() == "charset" and val.strip().strip('"') not in ("utf-8", "utf8"):
            return False
    return True


def describe(settings: Settings) -> str:
    """The start-up log line on browsers: whose pages may connect and call admin routes."""
    names = ", ".join(settings.allowed_hosts)
    hosts = f"an IP address, localhost or {names}" if names else "an IP address or localhost"
    others = ", ".join(settings.allowed_origins) or "none"
    return (
        f"browser pages allowed: the node's own, when it is addressed as {hosts} "
        f"(PULLY_ALLOWED_HOSTS); other origins, WebSocket only (PULLY_ALLOWED_ORIGINS): {others}"
    )


def wildcards(settings: Settings) -> list[str]:
    """Warnings for the settings that switch a guard off."""
    found = []
    if "*" in settings.allowed_origins:
        found.append("PULLY_ALLOWED_ORIGINS has '*': a page of any site may open WebSockets")
    if "*" in settings.allowed_hosts:
        found.append(
            "PULLY_ALLOWED_HOSTS has '*': any DNS name is trusted as this node's, so DNS "
            "rebinding is not refused"
        )
    return found
