"""The server API in ``/openapi.json``: one path per method, its body the very schema that
validates it (:mod:`.schemas`), its errors in the API's own shape."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from marshmallow import Schema, fields

from . import schemas

# method -> (params schema, summary, whether every node is asked)
METHODS: dict[str, tuple[type[Schema], str, bool]] = {
    "publish": (
        schemas.PublishParams,
        "Publish (the channel's functions run): {offset, epoch} or {dropped: true}",
        False,
    ),
    "broadcast": (
        schemas.BroadcastParams,
        "Publish one message to each channel in order: "
        "{responses: [{channel, offset, epoch} | {channel, error}]}",
        False,
    ),
    "subscribe": (
        schemas.SubscribeParams,
        "Subscribe every connection of a user or one "
        "client, on every node (server-side): {clients, failed}",
        True,
    ),
    "unsubscribe": (
        schemas.UnsubscribeParams,
        "End a user's or client's subscription on every node: {clients}",
        True,
    ),
    "disconnect": (
        schemas.DisconnectParams,
        "Close every connection of a user or one client, on every node: {clients}",
        True,
    ),
    "presence": (
        schemas.ChannelParams,
        "The channel's subscribers on every node: {clients: [{client, user, node}], truncated}",
        True,
    ),
    "presence_stats": (
        schemas.ChannelParams,
        "{clients, users} subscribed to the channel on every node",
        True,
    ),
    "history": (schemas.HistoryParams, "Retained messages: {epoch, offset, messages}", False),
    "history_remove": (
        schemas.ChannelParams,
        "Drop the channel's history: its next publication starts a new epoch",
        False,
    ),
    "channels": (
        schemas.ChannelsParams,
        "Channels with subscribers, summed over the nodes: "
        "{channels: {C: {subscribers}}, truncated}",
        True,
    ),
    "info": (
        schemas.NoParams,
        "Every node: {nodes: [{node, version, uptime, connections, "
        "subscriptions, channels, draining, broker}]}",
        True,
    ),
    "batch": (schemas.BatchParams, "Commands in order: {replies: [{result} | {error}]}", False),
}

_REASONS = {
    400: "invalid params (every problem listed) or body", 401: "admin token missing",
    403: "a browser page of another origin or site; the admin token rejected; or, without "
         "PULLY_ADMIN_TOKEN, not a loopback caller or an untrusted Host",
    413: "body too large", 415: "the body is not sent as application/json",
    502: "a channel function failed", 503: "the broker is unreachable: nothing was done",
}  # fmt: skip


class ApiProblemSchema(Schema):
    code = fields.String(required=True, metadata={"description": "wire error code"})
    message = fields.String(required=True)
    problems = fields.List(fields.String(), metadata={"description": "each invalid param"})


class ApiErrorSchema(Schema):
    error = fields.Nested(ApiProblemSchema, required=True)


class ApiResultSchema(Schema):
    result = fields.Raw(required=True, metadata={"description": "the method's result"})


def add_paths(spec: APISpec, security: list[dict[str, list[str]]]) -> None:
    spec.components.schema("ApiError", schema=ApiErrorSchema)
    spec.components.schema("ApiResult", schema=ApiResultSchema)
    for params in {params for params, _, _ in METHODS.values()}:
        spec.components.schema(f"Api{params.__name__}", schema=params)
    for method, (params, summary, cluster) in METHODS.items():
        name = f"Api{params.__name__}"
        statuses = [400, 401, 403, 413, 415, 503] + (
            [502] if method in ("publish", "batch") else []
        )
        wait = " Asks every node, waiting PULLY_API_TIMEOUT at most." if cluster else ""
        spec.path(f"/api/{method}", operations={"post": {
            "summary": summary + "." + wait, "security": security,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{name}"}}}},
            "responses": {
                200: {"description": "done", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ApiResult"}}}},
                **{s: {"description": _REASONS[s], "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ApiError"}}}} for s in statuses},
            },
        }})  # fmt: skip


def one_target(document: dict[str, Any]) -> None:
    """What the schemas check in code, said in the document: exactly one of user and client."""
    for method in ("Subscribe", "Unsubscribe", "Disconnect"):
        component = document["components"]["schemas"][f"Api{method}Params"]
        component["oneOf"] = [{"required": ["user"]}, {"required": ["client"]}]
