"""Relationships in one S3 object (cluster mode).

The object holds ``{"version": N, "saved_at": ..., "relationships": {...}}`` (its version also in
the ``pully-version`` metadata for cheap ``HEAD`` checks); a plain document uploaded by hand is
read as version 1. A save is a conditional write (``If-Match`` on the ETag just read,
``If-None-Match: *`` for the first), retried on conflict, so concurrent saves from several nodes
each get their own, higher version and none is lost silently. The version is inside the body
because an ETag is a hash of the body: two saves of the same document must still differ. Every
boto3 call runs in a worker thread, never on the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import botocore.exceptions
import orjson
from botocore.config import Config

from ..errors import Unavailable
from ..settings import Settings
from .schema import InvalidRelationships, Relationships, load
from .store import Store, Stored

T = TypeVar("T")
SAVE_ATTEMPTS = 8
VERSION_KEY = "pully-version"


class S3Store(Store):
    def __init__(self, bucket: str, key: str, settings: Settings) -> None:
        self.bucket = bucket
        self.key = key
        self._client = boto3.session.Session().client(
            "s3",
            region_name=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
            config=Config(
                connect_timeout=2, read_timeout=5, retries={"max_attempts": 2},
                s3={"addressing_style": "path"},
            ),
        )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        return {"kind": "s3", "bucket": self.bucket, "key": self.key}

    async def _call(self, fn: Callable[..., T], **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(fn, **kwargs)
        except botocore.exceptions.ClientError:
            raise  # the caller decides (missing object, precondition failed)
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise Unavailable(f"s3://{self.bucket}/{self.key} is unreachable: {exc}") from None

    @staticmethod
    def _code(exc: botocore.exceptions.ClientError) -> str:
        return str(exc.response.get("Error", {}).get("Code", ""))

    def _unavailable(self, exc: botocore.exceptions.ClientError) -> Unavailable:
        return Unavailable(f"s3://{self.bucket}/{self.key}: {self._code(exc)}: {exc}")

    async def _head(self) -> tuple[str, int] | None:
        """(ETag, version) of the object, or None when it does not exist."""
        try:
            head = await self._call(
                lambda: self._client.head_object(Bucket=self.bucket, Key=self.key)
            )
        except botocore.exceptions.ClientError as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._unavailable(exc) from None
        return head["ETag"], int(head.get("Metadata", {}).get(VERSION_KEY, "0") or 0)

    async def version(self) -> int:
        head = await self._head()
        return 0 if head is None else head[1]

    async def load(self) -> Stored | None:
        try:
            obj = await self._call(
                lambda: self._client.get_object(Bucket=self.bucket, Key=self.key)
            )
        except botocore.exceptions.ClientError as exc:
            if self._code(exc) in ("NoSuchKey", "404"):
                return None
            raise self._unavailable(exc) from None
        body = await asyncio.to_thread(obj["Body"].read)
        try:
            doc = orjson.loads(body)
            if isinstance(doc, dict) and "relationships" in doc and "version" in doc:
                return Stored(load(doc["relationships"]), int(doc["version"]))
            return Stored(load(doc), 1)  # a plain document put there by hand
        except (orjson.JSONDecodeError, TypeError, ValueError):
            raise Unavailable(f"s3://{self.bucket}/{self.key} is not JSON") from None
        except InvalidRelationships as exc:
            problems = "; ".join(exc.problems[:5])
            raise Unavailable(f"s3://{self.bucket}/{self.key} is not valid: {problems}") from None

    async def save(self, relationships: Relationships, above: int = 0) -> int:
        for _ in range(SAVE_ATTEMPTS):
            head = await self._head()
            version = max(0 if head is None else head[1], above) + 1
            body = orjson.dumps(
                {
                    "version": version,
                    "saved_at": time.time(),
                    "relationships": relationships.to_json(),
                },
                option=orjson.OPT_INDENT_2,
            )
            condition = {"IfNoneMatch": "*"} if head is None else {"IfMatch": head[0]}
            try:
                await self._call(
                    self._client.put_object, Bucket=self.bucket, Key=self.key, Body=body,
                    ContentType="application/json", Metadata={VERSION_KEY: str(version)},
                    **condition,
                )  # fmt: skip
                return version
            except botocore.exceptions.ClientError as exc:
                if self._code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                    continue  # another node saved meanwhile: read again and go one higher
                raise self._unavailable(exc) from None
        raise Unavailable(f"s3://{self.bucket}/{self.key}: too many concurrent saves, try again")
