"""What each node does for a cluster-wide server API call, on its own connections and channels.

Every op takes the call's validated parameters (plain JSON: they may have crossed Redis) and
returns JSON that :mod:`.methods` merges across the nodes. Lists are capped at ``MAX_LISTED``
per node (``"truncated": true`` says so), so no answer grows without bound.
"""

from __future__ import annotations

import fnmatch
import time
from typing import TYPE_CHECKING, Any

from .. import __version__, protocol
from ..errors import PullyError
from ..hub import Conn

if TYPE_CHECKING:
    from ..node import Node

MAX_LISTED = 10_000


class NodeOps:
    def __init__(self, node: Node) -> None:
        self._node = node

    def ops(self) -> dict[str, Any]:
        return {
            "subscribe": self.subscribe, "unsubscribe": self.unsubscribe,
            "disconnect": self.disconnect, "presence": self.presence, "channels": self.channels,
            "info": self.info,
        }  # fmt: skip

    def _targets(self, params: dict[str, Any]) -> list[Conn]:
        """This node's connections of ``params["user"]`` or with id ``params["client"]``."""
        if "client" in params:
            wanted = params["client"]
            return [c for c in self._node.connections if c.client_id == wanted]
        user = params.get("user")
        return [c for c, identity in self._node.connections.items() if identity.user == user]

    async def subscribe(self, params: dict[str, Any]) -> dict[str, Any]:
        """Every targeted connection joins the channel (server-side); per-connection failures
        (its subscription limit, the broker down) are counted, not fatal to the others."""
        since = params.get("since")
        position = None if since is None else protocol.Position(since["offset"], since["epoch"])
        done, failed = 0, {}
        for conn in self._targets(params):
            try:
                await self._node.subscriptions.server_subscribe(conn, params["channel"], position)
                done += 1
            except PullyError as exc:
                failed[conn.client_id] = {"code": exc.code, "message": exc.message}
        return {"clients": done, "failed": failed}

    async def unsubscribe(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params["channel"]
        unsubscribe = self._node.subscriptions.server_unsubscribe
        return {"clients": sum(unsubscribe(conn, channel) for conn in self._targets(params))}

    async def disconnect(self, params: dict[str, Any]) -> dict[str, Any]:
        targets = self._targets(params)
        for conn in targets:
            conn.close(params.get("code", 4003), params.get("reason", "disconnected"))
            self._node.count_disconnect("api")
        return {"clients": len(targets)}

    async def presence(self, params: dict[str, Any]) -> dict[str, Any]:
        """The channel's live subscribers here: ``{client, user, node}`` each."""
        node = self._node
        conns = node.hub.live(params["channel"])
        listed = [
            {"client": c.client_id, "user": node.identity(c).user, "node": node.id}
            for c in conns[:MAX_LISTED]
        ]
        return {"clients": listed, "truncated": len(conns) > MAX_LISTED}

    async def channels(self, params: dict[str, Any]) -> dict[str, Any]:
        """Channels with live subscribers here (matching ``pattern``) and how many."""
        pattern = params.get("pattern")
        counts: dict[str, int] = {}
        truncated = False
        for name in self._node.hub.names():
            if pattern is not None and not fnmatch.fnmatchcase(name, pattern):
                continue
            subscribers = len(self._node.hub.live(name))
            if not subscribers:
                continue
            if len(counts) == MAX_LISTED:
                truncated = True
                break
            counts[name] = subscribers
        return {"channels": counts, "truncated": truncated}

    async def info(self, params: dict[str, Any]) -> dict[str, Any]:
        node = self._node
        return {
            "node": node.id, "version": __version__,
            "uptime": round(time.time() - node.started_at, 3),
            "connections": len(node.connections), "subscriptions": node.hub.subscriptions,
            "channels": len(node.hub), "draining": node.draining,
            "broker": node.broker.describe()["state"],
        }  # fmt: skip
