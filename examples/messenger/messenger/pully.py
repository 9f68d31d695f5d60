"""What the messenger asks of Pully: JWTs for its users, and the server API when a member is
removed or a user logs out. Messages never go through here: they go through the outbox."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import jwt

logger = logging.getLogger("messenger.pully")


class PullyLink:
    def __init__(self, api_url: str, jwt_secret: str, admin_token: str | None) -> None:
        self._api = api_url.rstrip("/")
        self._secret = jwt_secret
        headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self._client = httpx.Client(timeout=5.0, headers=headers)

    def token(self, user_id: int, chat_ids: list[int], ttl: int = 600) -> str:
        """A Pully JWT: read the user's own channel and their chats; publish only typing."""
        chats = [f"chat:{c}" for c in chat_ids]
        typing = [f"typing:chat:{c}" for c in chat_ids]
        claims = {
            "sub": str(user_id),
            "channels": [f"user:{user_id}", *chats, *typing],
            "publish": typing,
            "exp": int(time.time()) + ttl,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def call(self, method: str, params: dict[str, Any]) -> Any:
        """A server API call; None when Pully cannot be reached (logged: the user's next token
        is right anyway, and rights in the current one expire with it)."""
        try:
            reply = self._client.post(f"{self._api}/api/{method}", json=params).json()
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("pully %s failed: %s", method, exc)
            return None
        if "error" in reply:
            logger.warning("pully %s refused: %s", method, reply["error"])
            return None
        return reply["result"]

    def online(self, user_ids: list[int]) -> set[int]:
        """Which of ``user_ids`` have a connection subscribed to their own channel now."""
        if not user_ids:
            return set()
        commands = [{"method": "presence_stats", "params": {"channel": f"user:{u}"}}
                    for u in user_ids]  # fmt: skip
        result = self.call("batch", {"commands": commands})
        if result is None:
            return set()
        return {
            u for u, reply in zip(user_ids, result["replies"], strict=True)
            if reply.get("result", {}).get("clients", 0) > 0
        }  # fmt: skip
