"""docs/server-api.md, run as written against a live `pully serve` with a client of user `ann`
subscribed to `chat`: every curl prints what the page says, and ann's client sees what the
page says it sees."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .support import PullyProcess, WSClient
from .test_auth import SECRET, token
from .test_doc_examples import examples, run_shell

ORDER = ["api-publish", "api-broadcast", "api-history", "api-read", "api-users", "api-batch",
         "api-errors"]  # fmt: skip


def test_the_page_has_exactly_these_examples() -> None:
    assert sorted(examples("server-api.md")) == sorted(ORDER)


@pytest.mark.gen_test(timeout=60)
async def test_every_example_prints_what_the_page_says(
    processes: Callable[..., PullyProcess],
) -> None:
    node = processes(name="docs", env={"PULLY_JWT_SECRET": SECRET})
    ann = await WSClient.connect(f"{node.ws_url}?token={token('ann', channels=['*'])}")
    await ann.subscribe("chat")
    pages = examples("server-api.md")
    for name in ORDER[:4]:
        run_shell(pages[name][1], node)
    assert [m["data"] for m in await ann.messages(2)] == [{"text": "hi"}, "maintenance at 5"]
    run_shell(pages["api-users"][1], node)
    subscribed, unsubscribed = await ann.recv(), await ann.recv()
    assert (subscribed["type"], subscribed["channel"], subscribed["server"]) == (
        "subscribed", "user:ann", True)  # fmt: skip
    assert unsubscribed == {"type": "unsubscribed", "channel": "user:ann", "server": True}
    closed = await ann.closed()
    assert (closed.code, closed.reason) == (4003, "logged out")
    for name in ORDER[5:]:
        run_shell(pages[name][1], node)
