"""The messenger's rules over its tables. Every function raises ``HTTPException`` with the
status a client should see (404 unknown, 403 not yours, 409 conflict, 400 nonsense)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException
from sqlalchemy import and_, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .models import Chat, Friendship, Member, Message, User

OUTBOX = text(
    "INSERT INTO pully_outbox (channel, data, idempotency_key) VALUES (:channel, :data, :key)"
)


def user(session: Session, user_id: int) -> User:
    found = session.get(User, user_id)
    if found is None:
        raise HTTPException(404, f"no user {user_id}")
    return found


def user_by_name(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def create_user(session: Session, name: str, password_hash: str) -> User:
    new = User(name=name, password_hash=password_hash)
    session.add(new)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise HTTPException(409, f"the name {name!r} is taken") from None
    return new


def are_friends(session: Session, a: int, b: int) -> bool:
    return session.scalar(select(Friendship.id).where(
        Friendship.status == "accepted",
        or_(and_(Friendship.requester_id == a, Friendship.addressee_id == b),
            and_(Friendship.requester_id == b, Friendship.addressee_id == a)),
    )) is not None  # fmt: skip


def request_friend(session: Session, me: int, name: str) -> Friendship:
    other = user_by_name(session, name)
    if other is None:
        raise HTTPException(404, f"no user named {name!r}")
    if other.id == me:
        raise HTTPException(400, "you cannot befriend yourself")
    existing = session.scalar(select(Friendship).where(
        or_(and_(Friendship.requester_id == me, Friendship.addressee_id == other.id),
            and_(Friendship.requester_id == other.id, Friendship.addressee_id == me)),
    ))  # fmt: skip
    if existing is not None:
        raise HTTPException(409, f"a request with {name!r} exists already ({existing.status})")
    friendship = Friendship(requester_id=me, addressee_id=other.id, status="pending")
    session.add(friendship)
    session.commit()
    return friendship


def answer_request(session: Session, me: int, request_id: int, accept: bool) -> str:
    friendship = session.get(Friendship, request_id)
    if friendship is None:
        raise HTTPException(404, f"no friend request {request_id}")
    if friendship.addressee_id != me:
        raise HTTPException(403, "only the person asked answers a friend request")
    if friendship.status != "pending":
        raise HTTPException(409, f"the request is {friendship.status} already")
    if accept:
        friendship.status = "accepted"
    else:
        session.delete(friendship)
    session.commit()
    return "accepted" if accept else "declined"


def friends_of(session: Session, me: int) -> dict[str, list[dict[str, Any]]]:
    rows = session.execute(select(Friendship, User).join(User, or_(
        and_(Friendship.requester_id == me, User.id == Friendship.addressee_id),
        and_(Friendship.addressee_id == me, User.id == Friendship.requester_id),
    ))).all()  # fmt: skip
    listing: dict[str, list[dict[str, Any]]] = {"friends": [], "incoming": [], "outgoing": []}
    for friendship, other in rows:
        entry = {"id": other.id, "name": other.name, "request": friendship.id}
        if friendship.status == "accepted":
            listing["friends"].append(entry)
        else:
            listing["incoming" if friendship.addressee_id == me else "outgoing"].append(entry)
    return listing


def _chat(session: Session, me: int, chat_id: int) -> Chat:
    chat = session.get(Chat, chat_id)
    if chat is None:
        raise HTTPException(404, f"no chat {chat_id}")
    if session.get(Member, (chat_id, me)) is None:
        raise HTTPException(403, f"you are not a member of chat {chat_id}")
    return chat


def create_chat(session: Session, me: int, name: str, members: list[int]) -> Chat:
    strangers = [m for m in set(members) - {me} if not are_friends(session, me, m)]
    if strangers:
        raise HTTPException(403, f"only friends can be added; not friends: {sorted(strangers)}")
    chat = Chat(name=name, owner_id=me)
    session.add(chat)
    session.flush()
    session.add_all(Member(chat_id=chat.id, user_id=u) for u in {me, *members})
    session.commit()
    return chat


def chats_of(session: Session, me: int) -> list[Chat]:
    return list(session.scalars(select(Chat).join(Member).where(Member.user_id == me)
                                .order_by(Chat.id)))  # fmt: skip


def describe_chat(session: Session, chat: Chat) -> dict[str, Any]:
    members = session.scalars(select(Member.user_id).where(Member.chat_id == chat.id))
    return {"id": chat.id, "name": chat.name, "owner": chat.owner_id,
            "members": sorted(members), "channel": f"chat:{chat.id}"}  # fmt: skip


def add_member(session: Session, me: int, chat_id: int, new: int) -> Chat:
    chat = _chat(session, me, chat_id)
    if chat.owner_id != me:
        raise HTTPException(403, "only the chat's owner adds members")
    if not are_friends(session, me, new):
        raise HTTPException(403, f"user {new} is not your friend")
    if session.get(Member, (chat_id, new)) is None:
        session.add(Member(chat_id=chat_id, user_id=new))
        session.commit()
    return chat


def remove_member(session: Session, me: int, chat_id: int, member: int) -> None:
    chat = _chat(session, me, chat_id)
    if member != me and chat.owner_id != me:
        raise HTTPException(403, "only the chat's owner removes others")
    found = session.get(Member, (chat_id, member))
    if found is None:
        raise HTTPException(404, f"user {member} is not in chat {chat_id}")
    session.delete(found)
    session.commit()


def send(session: Session, me: int, body: str, *, chat_id: int | None = None,
         recipient_id: int | None = None) -> dict[str, Any]:  # fmt: skip
    """The message row and its outbox rows, in ONE transaction: Pully delivers them once
    committed (``chat:<id>``, or both users' ``user:<id>`` for a private message)."""
    if chat_id is not None:
        _chat(session, me, chat_id)
        channels = [f"chat:{chat_id}"]
    else:
        assert recipient_id is not None
        user(session, recipient_id)
        if not are_friends(session, me, recipient_id):
            raise HTTPException(403, f"user {recipient_id} is not your friend")
        channels = [f"user:{me}", f"user:{recipient_id}"]
    message = Message(sender_id=me, chat_id=chat_id, recipient_id=recipient_id, body=body)
    session.add(message)
    session.flush()
    out = _describe(message)
    data = json.dumps({"kind": "message", **out})
    for channel in channels:
        session.execute(OUTBOX, {"channel": channel, "data": data, "key": f"m{message.id}"})
    session.commit()
    return out


def _describe(message: Message) -> dict[str, Any]:
    return {"id": message.id, "sender": message.sender_id, "chat": message.chat_id,
            "recipient": message.recipient_id, "body": message.body}  # fmt: skip


def messages(
    session: Session,
    me: int,
    before: int | None,
    limit: int,
    *,
    chat_id: int | None = None,
    friend_id: int | None = None,
) -> dict[str, Any]:
    """Newest first; ``next`` is the ``before`` cursor of the following page (None: no more)."""
    if not 1 <= limit <= 200:
        raise HTTPException(400, "limit must be between 1 and 200")
    query = select(Message).order_by(Message.id.desc()).limit(limit)
    if chat_id is not None:
        _chat(session, me, chat_id)
        query = query.where(Message.chat_id == chat_id)
    else:
        assert friend_id is not None
        if not are_friends(session, me, friend_id):
            raise HTTPException(403, f"user {friend_id} is not your friend")
        query = query.where(or_(
            and_(Message.sender_id == me, Message.recipient_id == friend_id),
            and_(Message.sender_id == friend_id, Message.recipient_id == me),
        ))  # fmt: skip
    if before is not None:
        query = query.where(Message.id < before)
    found = [_describe(m) for m in session.scalars(query)]
    return {"messages": found, "next": found[-1]["id"] if len(found) == limit else None}
