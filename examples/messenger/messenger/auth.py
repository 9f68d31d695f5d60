"""Passwords (argon2) and the app's own session tokens (signed with APP_SECRET; not Pully's)."""

from __future__ import annotations

import time

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except VerificationError:
        return False


class Sessions:
    def __init__(self, secret: str, ttl: int = 7 * 24 * 3600) -> None:
        self._secret = secret
        self._ttl = ttl

    def issue(self, user_id: int) -> str:
        claims = {"sub": str(user_id), "aud": "messenger", "exp": int(time.time()) + self._ttl}
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def user_of(self, token: str) -> int | None:
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], audience="messenger")
            return int(claims["sub"])
        except (jwt.PyJWTError, KeyError, ValueError):
            return None
