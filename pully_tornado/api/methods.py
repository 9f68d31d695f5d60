"""The server API's methods (docs/server-api.md): validate, run here or on every node, merge.

``publish``, ``broadcast``, ``history`` and ``history_remove`` are answered here (the broker is
shared); ``subscribe``, ``unsubscribe``, ``disconnect``, ``presence``, ``presence_stats``,
``channels`` and ``info`` ask every node (:mod:`.cluster`) and merge what they answered, with
``missing_nodes`` naming those that did not answer in time. ``batch`` runs its commands in order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from marshmallow import Schema, ValidationError

from .. import protocol
from ..errors import BadRequest, PullyError
from . import schemas
from .cluster import Answers, Survey
from .ops import NodeOps

if TYPE_CHECKING:
    from ..node import Node


class NotFound(PullyError):
    code = "not_found"
    status = 404


class Invalid(BadRequest):
    """Parameters that do not validate: ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"invalid params ({count}): " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Method:
    params: Schema
    run: Callable[[dict[str, Any]], Awaitable[Any]]


class ServerApi:
    def __init__(self, node: Node) -> None:
        self._node = node
        self.survey = Survey(
            node.id, node.broker.publish_control, NodeOps(node).ops(), node.settings.api_timeout
        )
        self.methods: dict[str, Method] = {
            "publish": Method(schemas.PublishParams(), self._publish),
            "broadcast": Method(schemas.BroadcastParams(), self._broadcast),
            "subscribe": Method(schemas.SubscribeParams(), self._on_clients("subscribe")),
            "unsubscribe": Method(schemas.UnsubscribeParams(), self._on_clients("unsubscribe")),
            "disconnect": Method(schemas.DisconnectParams(), self._on_clients("disconnect")),
            "presence": Method(schemas.ChannelParams(), self._presence),
            "presence_stats": Method(schemas.ChannelParams(), self._presence_stats),
            "history": Method(schemas.HistoryParams(), self._history),
            "history_remove": Method(schemas.ChannelParams(), self._history_remove),
            "channels": Method(schemas.ChannelsParams(), self._channels),
            "info": Method(schemas.NoParams(), self._info),
            "batch": Method(schemas.BatchParams(), self._batch),
        }

    async def call(self, name: str, params: Any) -> Any:
        """The result of method ``name``; raises ``NotFound``, ``Invalid`` or the method's
        ``PullyError``."""
        method = self.methods.get(name)
        if method is None:
            raise NotFound(
                f"no server API method {name[:40]!r}; methods: {', '.join(self.methods)}"
            )
        if not isinstance(params, dict):
            raise Invalid(["params: must be a JSON object"])
        try:
            valid = method.params.load(params)
        except ValidationError as exc:
            raise Invalid(schemas.problems(exc)) from None
        return await method.run(valid)

    # -- answered here -------------------------------------------------------------------------

    async def _publish(self, params: dict[str, Any]) -> dict[str, Any]:
        data = _encode(params["data"])
        published = await self._node.publisher.publish(
            params["channel"], data, idempotency_key=params.get("idempotency_key")
        )
        if published.position is None:
            return {"dropped": True}
        return {"offset": published.position.offset, "epoch": published.position.epoch}

    async def _broadcast(self, params: dict[str, Any]) -> dict[str, Any]:
        """Each channel in turn (in order); one channel's failure does not stop the others."""
        data, key = _encode(params["data"]), params.get("idempotency_key")
        responses: list[dict[str, Any]] = []
        for channel in params["channels"]:
            try:
                published = await self._node.publisher.publish(channel, data, idempotency_key=key)
            except PullyError as exc:
                responses.append({"channel": channel, "error": error_of(exc)})
                continue
            position = published.position
            responses.append(
                {"channel": channel, "dropped": True} if position is None else
                {"channel": channel, "offset": position.offset, "epoch": position.epoch}
            )  # fmt: skip
        return {"responses": responses}

    async def _history(self, params: dict[str, Any]) -> orjson.Fragment:
        since = params.get("since")
        history = await self._node.broker.history(
            params["channel"],
            since=None if since is None else protocol.Position(since["offset"], since["epoch"]),
            limit=params.get("limit"),
        )
        head = orjson.dumps({"epoch": history.position.epoch, "offset": history.position.offset})
        # the stored message frames, spliced as they are
        return orjson.Fragment(head[:-1] + b',"messages":[' + b",".join(history.messages) + b"]}")

    async def _history_remove(self, params: dict[str, Any]) -> dict[str, Any]:
        await self._node.broker.history_remove(params["channel"])
        return {}

    # -- asked of every node -------------------------------------------------------------------

    def _on_clients(self, op: str) -> Callable[[dict[str, Any]], Awaitable[Any]]:
        async def run(params: dict[str, Any]) -> dict[str, Any]:
            answers = await self.survey.ask(op, params)
            result: dict[str, Any] = {"clients": sum(_count(r) for r in answers.results.values())}
            if op == "subscribe":
                result["failed"] = {c: e for r in answers.results.values()
                                    for c, e in dict(r.get("failed", {})).items()}  # fmt: skip
            return _with_nodes(result, answers)

        return run

    async def _presence(self, params: dict[str, Any]) -> dict[str, Any]:
        answers = await self.survey.ask("presence", params)
        clients = [entry for r in answers.results.values() for entry in r.get("clients", [])]
        clients.sort(key=lambda e: (str(e.get("node")), str(e.get("client"))))
        truncated = any(r.get("truncated") for r in answers.results.values())
        return _with_nodes({"clients": clients, "truncated": truncated}, answers)

    async def _presence_stats(self, params: dict[str, Any]) -> dict[str, Any]:
        answers = await self.survey.ask("presence", params)
        clients = [entry for r in answers.results.values() for entry in r.get("clients", [])]
        users = {e.get("user") for e in clients if e.get("user") is not None}
        stats = {"clients": len(clients), "users": len(users)}
        return _with_nodes(stats, answers)

    async def _channels(self, params: dict[str, Any]) -> dict[str, Any]:
        answers = await self.survey.ask("channels", params)
        total: dict[str, dict[str, int]] = {}
        for result in answers.results.values():
            for name, count in dict(result.get("channels", {})).items():
                total.setdefault(name, {"subscribers": 0})["subscribers"] += int(count)
        truncated = any(r.get("truncated") for r in answers.results.values())
        return _with_nodes({"channels": dict(sorted(total.items())), "truncated": truncated},
                           answers)  # fmt: skip

    async def _info(self, params: dict[str, Any]) -> dict[str, Any]:
        answers = await self.survey.ask("info", params)
        nodes = sorted(answers.results.values(), key=lambda n: str(n.get("node")))
        return _with_nodes({"nodes": nodes}, answers)

    # -- batch -------------------------------------------------------------------------------

    async def _batch(self, params: dict[str, Any]) -> dict[str, Any]:
        """Each command in order; each reply ``{"result"}`` or ``{"error"}``, like a call."""
        replies: list[Any] = []
        for command in params["commands"]:
            if command["method"] == "batch":
                replies.append({"error": error_of(BadRequest("a batch cannot contain a batch"))})
                continue
            try:
                replies.append({"result": await self.call(command["method"], command["params"])})
            except PullyError as exc:
                replies.append({"error": error_of(exc)})
        return {"replies": replies}


def _encode(data: Any) -> bytes:
    return protocol.encode_data(data)


def _count(result: Any) -> int:
    return int(result.get("clients", 0)) if isinstance(result, dict) else 0


def error_of(exc: PullyError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    problems = getattr(exc, "problems", None)
    if problems:
        error["problems"] = problems
    return error


def _with_nodes(result: dict[str, Any], answers: Answers) -> dict[str, Any]:
    """``missing_nodes``: nodes that did not answer in time; ``failed_nodes``: those that
    answered with an error (``{node: {code, message}}``)."""
    result["missing_nodes"] = answers.missing
    if answers.errors:
        result["failed_nodes"] = answers.errors
    return result
