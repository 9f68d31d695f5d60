"""The messenger's HTTP API (FastAPI): accounts, friends, group chats, private and group
messages, and the Pully token a page connects with. Configuration from the environment:
``DATABASE_URL``, ``PULLY_URL`` (the node's http URL, for the server API), ``PULLY_WS_URLS``
(comma-separated ws:// URLs the page connects to), ``PULLY_JWT_SECRET``, ``PULLY_ADMIN_TOKEN``
(optional), ``APP_SECRET`` (signs the app's own session tokens)."""

import os
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from . import store
from .auth import Sessions, hash_password, verify_password
from .db import Database
from .pully import PullyLink


class Credentials(BaseModel):
    name: str = Field(min_length=2, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$")
    password: str = Field(min_length=8, max_length=200)


class FriendRequest(BaseModel):
    name: str = Field(min_length=1, max_length=40)


class NewChat(BaseModel):
    name: str = Field(min_length=1, max_length=80)
    members: list[int] = Field(default_factory=list, max_length=100)


class NewMember(BaseModel):
    user_id: int


class NewMessage(BaseModel):
    body: str = Field(min_length=1, max_length=4000)


def create_app() -> FastAPI:
    db = Database(os.environ["DATABASE_URL"])
    sessions = Sessions(os.environ["APP_SECRET"])
    pully = PullyLink(os.environ["PULLY_URL"], os.environ["PULLY_JWT_SECRET"],
                      os.environ.get("PULLY_ADMIN_TOKEN"))  # fmt: skip
    ws_urls = [u for u in os.environ.get("PULLY_WS_URLS", "").split(",") if u]
    app = FastAPI(title="messenger")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        ]  # fmt: skip
        return JSONResponse({"error": "invalid request", "problems": problems}, status_code=400)

    def database() -> Iterator[Session]:
        yield from db.session()

    def me(authorization: Annotated[str | None, Header()] = None) -> int:
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(401, "log in first: Authorization: Bearer <token>")
        user = sessions.user_of(authorization.removeprefix("Bearer "))
        if user is None:
            raise HTTPException(401, "the session token is invalid or expired")
        return user

    Db = Annotated[Session, Depends(database)]
    Me = Annotated[int, Depends(me)]

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(os.path.join(os.path.dirname(__file__), "static", "index.html"))

    @app.get("/config")
    def config() -> dict[str, Any]:
        """Where the page finds Pully: its nodes, and pully-client served by the first."""
        first = ws_urls[0] if ws_urls else ""
        http = first.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
        return {"urls": ws_urls, "pully_js": http.removesuffix("/ws") + "/pully.js"}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/register", status_code=201)
    def register(body: Credentials, session: Db) -> dict[str, Any]:
        user = store.create_user(session, body.name, hash_password(body.password))
        return {"id": user.id, "name": user.name, "token": sessions.issue(user.id)}

    @app.post("/login")
    def login(body: Credentials, session: Db) -> dict[str, Any]:
        user = store.user_by_name(session, body.name)
        if user is None or not verify_password(user.password_hash, body.password):
            raise HTTPException(401, "wrong name or password")
        return {"id": user.id, "name": user.name, "token": sessions.issue(user.id)}

    @app.post("/logout", status_code=204)
    def logout(user: Me) -> None:
        pully.call("disconnect", {"user": str(user), "reason": "logged out"})

    @app.get("/me")
    def whoami(user: Me, session: Db) -> dict[str, Any]:
        found = store.user(session, user)
        return {"id": found.id, "name": found.name}

    @app.get("/pully-token")
    def pully_token(user: Me, session: Db) -> dict[str, Any]:
        chats = [c.id for c in store.chats_of(session, user)]
        return {"token": pully.token(user, chats), "urls": ws_urls}

    @app.post("/friends/requests", status_code=201)
    def request_friend(body: FriendRequest, user: Me, session: Db) -> dict[str, Any]:
        friendship = store.request_friend(session, user, body.name)
        return {"id": friendship.id, "status": friendship.status}

    @app.post("/friends/requests/{request_id}/{answer}")
    def answer_friend(request_id: int, answer: str, user: Me, session: Db) -> dict[str, Any]:
        if answer not in ("accept", "decline"):
            raise HTTPException(404, "answer with accept or decline")
        status = store.answer_request(session, user, request_id, answer == "accept")
        return {"id": request_id, "status": status}

    @app.get("/friends")
    def friends(user: Me, session: Db) -> dict[str, Any]:
        listing = store.friends_of(session, user)
        online = pully.online([f["id"] for f in listing["friends"]])
        for friend in listing["friends"]:
            friend["online"] = friend["id"] in online
        return listing

    @app.post("/chats", status_code=201)
    def create_chat(body: NewChat, user: Me, session: Db) -> dict[str, Any]:
        chat = store.create_chat(session, user, body.name, body.members)
        described = store.describe_chat(session, chat)
        for member in described["members"]:  # open connections join at once (server-side)
            pully.call("subscribe", {"user": str(member), "channel": described["channel"]})
        return described

    @app.get("/chats")
    def chats(user: Me, session: Db) -> dict[str, Any]:
        return {"chats": [store.describe_chat(session, c) for c in store.chats_of(session, user)]}

    @app.post("/chats/{chat_id}/members", status_code=201)
    def add_member(chat_id: int, body: NewMember, user: Me, session: Db) -> dict[str, Any]:
        chat = store.add_member(session, user, chat_id, body.user_id)
        pully.call("subscribe", {"user": str(body.user_id), "channel": f"chat:{chat_id}"})
        return store.describe_chat(session, chat)

    @app.delete("/chats/{chat_id}/members/{member_id}", status_code=204)
    def remove_member(chat_id: int, member_id: int, user: Me, session: Db) -> None:
        store.remove_member(session, user, chat_id, member_id)
        # at once: the member's open connections stop receiving the chat
        pully.call("unsubscribe", {"user": str(member_id), "channel": f"chat:{chat_id}"})

    @app.post("/chats/{chat_id}/messages", status_code=201)
    def send_to_chat(chat_id: int, body: NewMessage, user: Me, session: Db) -> dict[str, Any]:
        return store.send(session, user, body.body, chat_id=chat_id)

    @app.post("/friends/{friend_id}/messages", status_code=201)
    def send_private(friend_id: int, body: NewMessage, user: Me, session: Db) -> dict[str, Any]:
        return store.send(session, user, body.body, recipient_id=friend_id)

    @app.get("/chats/{chat_id}/messages")
    def chat_messages(
        chat_id: int, user: Me, session: Db, before: int | None = None, limit: int = 50
    ) -> dict[str, Any]:
        return store.messages(session, user, before, limit, chat_id=chat_id)

    @app.get("/friends/{friend_id}/messages")
    def private_messages(
        friend_id: int, user: Me, session: Db, before: int | None = None, limit: int = 50
    ) -> dict[str, Any]:
        return store.messages(session, user, before, limit, friend_id=friend_id)

    return app
