"""The ``lambda`` runtime: AWS Lambda ``Invoke`` (RequestResponse) through boto3.

The function's name is the document's ``name`` or ``PULLY_LAMBDA_PREFIX`` + the function name.
boto3 is blocking, so every call runs on a dedicated thread pool, bounded by the function's
timeout (botocore's read timeout and an asyncio timeout around it) and never retried: a
function runs at most once per publish.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import boto3
import botocore.exceptions
import orjson
from botocore.config import Config

from ..relationships import FunctionSpec
from ..settings import Settings
from .base import FunctionError, Runtime

THREADS = 32


class LambdaRuntime(Runtime):
    kind = "lambda"

    def __init__(self, settings: Settings) -> None:
        self.prefix = settings.lambda_prefix
        self._session = boto3.session.Session()
        self._region = settings.aws_region
        self._endpoint = settings.aws_endpoint_url
        self._clients: dict[float, Any] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(THREADS, "pully-lambda")

    def _client(self, timeout: float) -> Any:
        client = self._clients.get(timeout)
        if client is None:
            config = Config(
                connect_timeout=min(2.0, timeout), read_timeout=timeout,
                retries={"total_max_attempts": 1}, max_pool_connections=THREADS,
            )  # fmt: skip
            client = self._clients[timeout] = self._session.client(
                "lambda", region_name=self._region, endpoint_url=self._endpoint, config=config
            )
        return client

    def _invoke(self, function: str, payload: bytes, timeout: float) -> Any:
        response = self._client(timeout).invoke(
            FunctionName=function, InvocationType="RequestResponse", Payload=payload
        )
        body = response["Payload"].read()
        if response.get("FunctionError"):
            try:
                error = orjson.loads(body)
                detail = f"{error.get('errorType', 'Error')}: {error.get('errorMessage', '')}"
            except (orjson.JSONDecodeError, AttributeError):
                detail = body[:200].decode(errors="replace")
            raise FunctionError(f"raised {detail} (lambda {function})")
        try:
            return orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            raise FunctionError(f"lambda {function} returned a body that is not JSON") from None

    async def call(self, name: str, spec: FunctionSpec, event: dict[str, Any]) -> Any:
        function = spec.name or self.prefix + name
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(spec.timeout):
                return await loop.run_in_executor(
                    self._pool, self._invoke, function, orjson.dumps(event), spec.timeout
                )
        except (TimeoutError, botocore.exceptions.ReadTimeoutError):
            raise FunctionError(f"timed out after {spec.timeout:g}s (lambda {function})") from None
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            raise FunctionError(
                f"lambda {function}: {error.get('Code', 'error')}: {error.get('Message', exc)}"
            ) from None
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise FunctionError(f"lambda {function} unreachable: {exc}") from None

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
